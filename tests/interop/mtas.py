"""Other MTAs than Postfix, run from their extracted Debian packages in a mount namespace.

Exim 4 and OpenSMTPD conflict with the installed Postfix as Debian packages, so
they are not installed: ``apt-get download`` + ``dpkg -x`` puts each in its own directory of
a cache (:func:`fetch`), and :class:`Mta` runs the daemon from there inside a private mount
namespace (``unshare -m``): read-only overlays lay the extracted package over ``/usr`` (the
helpers it re-executes by their compiled-in path, its libraries) and a layer of ours plus the
package over ``/etc`` (its configuration file at the compiled-in path, its users in
``passwd``/``group``, a ``hosts`` naming the machine); a writable overlay over ``/var`` keeps
its spool in the run's folder; ``/run`` is a tmpfs. Nothing outside the namespace changes, so
Postfix and the system stay as they are.

Each MTA listens on 127.0.0.1:<port>, accepts any recipient from loopback, and relays every
domain of ``routes`` to 127.0.0.1:<that port> without DNS or TLS. Retry and queue-lifetime
settings make a 4xx bounce after one try. Needs root; the callers skip when it is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.interop.servers import free_port, wait_port

__all__ = ["MTAS", "PACKAGES", "Exim", "Mta", "MtaError", "OpenSMTPD", "extracted", "fetch"]

#: Debian packages (and the libraries the installed system lacks) per MTA.
PACKAGES: dict[str, tuple[str, ...]] = {
    "exim": ("exim4-daemon-light", "exim4-base", "libidn12"),
    "opensmtpd": ("opensmtpd",),
}
#: The file that shows an MTA is extracted.
_BINARY = {"exim": "usr/sbin/exim4", "opensmtpd": "usr/sbin/smtpd"}


class MtaError(RuntimeError):
    """An MTA could not be fetched or started."""


def fetch(name: str, cache: Path) -> Path:
    """Download and extract ``name``'s packages into ``cache/name`` (once)."""
    root = cache / name
    if (root / _BINARY[name]).exists():
        return root
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    os.chmod(debs, 0o777)  # apt's _apt user writes there
    done = subprocess.run(["apt-get", "download", *PACKAGES[name]], cwd=debs, capture_output=True, text=True,
                          check=False)
    if done.returncode:
        raise MtaError(f"apt-get download {' '.join(PACKAGES[name])}: {done.stderr.strip()[-300:]}")
    root.mkdir(parents=True, exist_ok=True)
    for package in PACKAGES[name]:
        (deb,) = sorted(debs.glob(f"{package}_*.deb"))[-1:]
        subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True)
    return root


def extracted(name: str, cache: Path) -> Path | None:
    root = cache / name
    return root if (root / _BINARY[name]).exists() else None


_MOUNTS = """set -e
mount -t overlay overlay -o "lowerdir=$PKG/usr:/usr" /usr
mount -t overlay overlay -o "lowerdir=$ETC:$PKG/etc:/etc" /etc
mount -t overlay overlay -o "lowerdir=$VARLOW:/var,upperdir=$VARUP,workdir=$VARWORK" /var
mount -t tmpfs tmpfs /run
exec "$@"
"""


class Mta:
    """One MTA from its extracted package: :meth:`running` starts it for a set of routes."""

    name = ""
    #: (user, group) names the daemon drops to, added to the namespace's passwd/group.
    users: tuple[tuple[str, str], ...] = ()

    def __init__(self, package_root: Path) -> None:
        self.pkg = package_root

    # -- what each MTA says -----------------------------------------------------------------

    def configure(self, etc: Path, folder: Path, port: int, routes: dict[str, int]) -> None:
        """Write the configuration files under ``etc`` (laid over /etc) and ``folder``."""
        raise NotImplementedError

    def command(self, folder: Path, port: int) -> list[str]:
        """The daemon in the foreground, as the namespace sees paths."""
        raise NotImplementedError

    # -- the namespace ----------------------------------------------------------------------

    def _etc(self, etc: Path) -> None:
        passwd = Path("/etc/passwd").read_text()
        group = Path("/etc/group").read_text()
        for n, (user, grp) in enumerate(self.users):
            uid = 64900 + n
            passwd += f"{user}:x:{uid}:{uid}::/nonexistent:/usr/sbin/nologin\n"
            if f"\n{grp}:" not in "\n" + group:
                group += f"{grp}:x:{uid}:\n"
        (etc / "passwd").write_text(passwd)
        (etc / "group").write_text(group)
        host = os.uname().nodename.split(".")[0]
        (etc / "hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {host}.{self.name}.test {host}\n")

    def uid(self, user: str) -> int:
        return 64900 + [u for u, _ in self.users].index(user)

    def in_namespace(self, folder: Path, argv: list[str]) -> list[str]:
        return ["unshare", "-m", "sh", "-c", _MOUNTS, "sh", *argv]

    def environment(self, folder: Path) -> dict[str, str]:
        low = self.pkg / "var"
        if not low.is_dir():
            low = folder / "var-empty"
            low.mkdir(exist_ok=True)
        for sub in ("var-up", "var-work"):
            (folder / sub).mkdir(exist_ok=True)
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PKG": str(self.pkg), "ETC": str(folder / "etc"),
                "VARLOW": str(low), "VARUP": str(folder / "var-up"), "VARWORK": str(folder / "var-work")}

    @contextlib.contextmanager
    def running(self, routes: dict[str, int], folder: Path) -> Iterator[int]:
        """Start the MTA relaying each domain of ``routes`` to 127.0.0.1:<port>; yields its port."""
        if os.geteuid() != 0 or shutil.which("unshare") is None:
            raise MtaError("an MTA from an extracted package needs root and unshare")
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        etc = folder / "etc"
        etc.mkdir(exist_ok=True)
        self._etc(etc)
        port = free_port()
        self.configure(etc, folder, port, routes)
        log = (folder / "daemon.log").open("wb")
        process = subprocess.Popen(self.in_namespace(folder, self.command(folder, port)), stdout=log,
                                   stderr=subprocess.STDOUT, env=self.environment(folder),
                                   start_new_session=True)
        try:
            try:
                wait_port(port, timeout=20)
            except TimeoutError as exc:
                raise MtaError(f"{self.name} did not start: {(folder / 'daemon.log').read_text()[-500:]}") from exc
            yield port
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
            log.close()


class Exim(Mta):
    """Exim 4 (Debian's exim4-daemon-light): ``exim4 -bdf`` with /etc/exim4/exim4.conf of ours;
    a retry rule without times makes every temporary error permanent at once."""

    name = "exim"
    users = (("Debian-exim", "Debian-exim"),)

    def configure(self, etc: Path, folder: Path, port: int, routes: dict[str, int]) -> None:
        spool = folder / "spool"
        for sub in (spool, folder / "log"):
            sub.mkdir(exist_ok=True)
            os.chown(sub, self.uid("Debian-exim"), self.uid("Debian-exim"))
        route_list = " ; ".join(f"{domain} 127.0.0.1::{p}" for domain, p in routes.items())
        (etc / "exim4").mkdir(exist_ok=True)
        (etc / "exim4" / "exim4.conf").write_text(f"""\
primary_hostname = mta.exim.test
qualify_domain = exim.test
spool_directory = {spool}
log_file_path = {folder}/log/%slog
local_interfaces = 127.0.0.1
daemon_smtp_ports = {port}
acl_smtp_rcpt = accept
host_lookup =
rfc1413_hosts =
trusted_users = root
timeout_frozen_after = 0s
ignore_bounce_errors_after = 0s
delay_warning =
begin routers
relay:
  driver = manualroute
  route_list = {route_list}
  self = send
  transport = remote
begin transports
remote:
  driver = smtp
  allow_localhost
  hosts_avoid_tls = *
  hosts_avoid_esmtp =
begin retry
* *
""")

    def command(self, folder: Path, port: int) -> list[str]:
        return ["/usr/sbin/exim4", "-bdf", "-q5s"]


class OpenSMTPD(Mta):
    """OpenSMTPD 6.8 (Debian's opensmtpd): ``smtpd -d`` with /etc/smtpd.conf of ours; a queue
    lifetime of seconds returns a 4xx after the first try."""

    name = "opensmtpd"
    users = (("opensmtpd", "opensmtpd"), ("opensmtpq", "opensmtpq"))

    def configure(self, etc: Path, folder: Path, port: int, routes: dict[str, int]) -> None:
        lines = ["queue ttl 4s", f"listen on 127.0.0.1 port {port}"]
        for n, (domain, p) in enumerate(routes.items()):
            lines.append(f'action "r{n}" relay host smtp://127.0.0.1:{p}')
            lines.append(f'match from any for domain "{domain}" action "r{n}"')
        (etc / "smtpd.conf").write_text("\n".join(lines) + "\n")
        (etc / "smtpd.conf").chmod(0o644)

    def command(self, folder: Path, port: int) -> list[str]:
        return ["/usr/sbin/smtpd", "-d"]


MTAS: dict[str, type[Mta]] = {"exim": Exim, "opensmtpd": OpenSMTPD}

