"""Third-party mail software on loopback, each instance the tests' own.

* :class:`Postfix`: ``postfix -c <own config dir>`` listening on 127.0.0.1:<free port>, with its
  own queue, data and mail directories under the test's temporary directory (never the
  system's default instance or its queue). Receiving MX for ``pf.test`` (virtual mailboxes,
  STARTTLS with a self-signed certificate, SMTPUTF8); recipients are not checked at RCPT, so
  an unknown mailbox is accepted with 250 and bounced with a genuine Postfix DSN, mailed to
  the return path through a transport map (e.g. to ``mailcarrier inbound``).
* :class:`Dovecot`: ``dovecot -c <own config>`` serving IMAP (STARTTLS) and IMAPS on free
  loopback ports, one passwd-file user, Maildir under the temporary directory.
* :func:`nsd_run`: a command run in its own network namespace where NSD answers on
  127.0.0.1:53 from the given zone, and /etc/resolv.conf (bind-mounted in a private mount
  namespace) points at it: how a program with only the libc resolver (opendkim) is given a
  DNS of the tests' own.

Every helper skips the test, saying which program is missing, when the software is absent;
``.ci/run`` installs it from Debian so CI runs them all.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["Dovecot", "Nsd", "Postfix", "TlsFiles", "free_port", "need", "nsd_run", "self_signed", "wait_port"]

_SBIN = ("/usr/sbin", "/usr/bin", "/sbin", "/bin")


def need(*programs: str) -> dict[str, str]:
    """Full paths of ``programs``; skips the test naming the first missing one."""
    found: dict[str, str] = {}
    for program in programs:
        path = shutil.which(program) or next(
            (f"{d}/{program}" for d in _SBIN if os.access(f"{d}/{program}", os.X_OK)), None)
        if path is None:
            pytest.skip(f"{program} is not installed (.ci/run installs it from Debian)")
        found[program] = path
    if os.geteuid() != 0:
        pytest.skip("interop servers (Postfix, Dovecot, NSD) need root to start their own instance")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def wait_port(port: int, host: str = "127.0.0.1", timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s")


def _server_root(kind: str) -> Path:
    """A directory the servers' unprivileged users can reach (pytest's tmp_path is root-only)."""
    root = Path(tempfile.mkdtemp(prefix=f"mailcarrier-interop-{kind}-"))
    root.chmod(0o755)
    return root


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path

    @property
    def ca(self) -> Path:
        """Self-signed: the certificate is its own CA."""
        return self.cert


def self_signed(folder: Path, hostname: str) -> TlsFiles:
    """A self-signed ECDSA certificate for ``hostname`` (and 127.0.0.1), valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    import ipaddress  # noqa: PLC0415 - only here

    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(folder / f"{hostname}.crt", folder / f"{hostname}.key")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    os.chmod(files.key, 0o644)  # read by unprivileged server processes of this test only
    return files


# --- Postfix -----------------------------------------------------------------------------------

_MASTER_CF = """\
{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


class Postfix:
    """An own Postfix instance: receiving MX for ``pf.test`` on 127.0.0.1:``port``."""

    def __init__(self, *, mailboxes: Sequence[str], routes: dict[str, str] | None = None,
                 extra: dict[str, str] | None = None) -> None:
        """``mailboxes``: local parts of pf.test that exist; ``routes``: domain -> next hop
        ("[127.0.0.1]:2525") for mail Postfix sends on (its DSNs); every other domain is refused."""
        self.paths = need("postfix", "postconf")
        self.root = root = _server_root("postfix")
        self.port = free_port()
        self.config = root / "etc"
        self.mail = root / "mail"
        self.log = root / "maillog"
        self.tls = self_signed(root / "tls", "mx.pf.test")
        for folder in (self.config, root / "queue", root / "data", self.mail):
            folder.mkdir(parents=True, exist_ok=True)
        nobody = pwd.getpwnam("nobody")
        postfix_user = pwd.getpwnam("postfix")
        os.chown(self.mail, nobody.pw_uid, nobody.pw_gid)
        os.chown(root / "data", postfix_user.pw_uid, postfix_user.pw_gid)
        (self.config / "mailboxes").write_text("".join(f"{box}@pf.test {box}/\n" for box in mailboxes))
        transport = ["pf.test virtual:"]
        transport += [f"{domain} smtp:{hop}" for domain, hop in (routes or {}).items()]
        transport.append("* error:5.7.1 test instance: outside delivery disabled")
        (self.config / "transport").write_text("\n".join(transport) + "\n")
        (self.config / "master.cf").write_text(_MASTER_CF.format(port=f"127.0.0.1:{self.port}"))
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(root / "queue"), "data_directory": str(root / "data"),
            "myhostname": "mx.pf.test", "mydomain": "pf.test", "myorigin": "$myhostname",
            "inet_interfaces": "127.0.0.1", "inet_protocols": "ipv4",
            "mydestination": "", "local_recipient_maps": "", "alias_maps": "", "alias_database": "",
            "relayhost": "", "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject",
            "virtual_mailbox_domains": "pf.test",
            "virtual_mailbox_maps": f"texthash:{self.config}/mailboxes",
            "virtual_mailbox_base": str(self.mail),
            "virtual_uid_maps": f"static:{nobody.pw_uid}", "virtual_gid_maps": f"static:{nobody.pw_gid}",
            "virtual_minimum_uid": "1",
            # accept unknown mailboxes at RCPT and bounce them afterwards, with a DSN, at once
            "smtpd_reject_unlisted_recipient": "no",
            "transport_maps": f"texthash:{self.config}/transport",
            "smtp_dns_support_level": "disabled", "smtp_host_lookup": "native",
            "smtpd_tls_cert_file": str(self.tls.cert), "smtpd_tls_key_file": str(self.tls.key),
            "smtpd_tls_security_level": "may", "smtpd_tls_loglevel": "1",
            "smtputf8_enable": "yes", "strict_smtputf8": "yes",
            "maillog_file": str(self.log), "maillog_file_prefixes": str(root),
            "biff": "no", "append_dot_mydomain": "no",
            "queue_run_delay": "1s", "minimal_backoff_time": "1s", "maximal_backoff_time": "2s",
            "smtp_connect_timeout": "5s", "delay_warning_time": "0",
        }
        settings.update(extra or {})
        (self.config / "main.cf").write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        self.log.touch()

    def _postfix(self, *args: str) -> subprocess.CompletedProcess[str]:
        # output to a file: the master daemon keeps inherited descriptors, a pipe would not close
        with open(self.root / "command.log", "w+") as log:
            done = subprocess.run([self.paths["postfix"], "-c", str(self.config), *args], stdout=log,
                                  stderr=log, stdin=subprocess.DEVNULL, text=True, timeout=60, check=False)
            log.seek(0)
            return subprocess.CompletedProcess(done.args, done.returncode, log.read(), "")

    def __enter__(self) -> Postfix:
        done = self._postfix("start")
        if done.returncode != 0:
            raise RuntimeError(f"postfix -c {self.config} start failed: {done.stderr}{done.stdout}")
        wait_port(self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        self._postfix("stop")  # stops this instance's master (by its pid file) only
        shutil.rmtree(self.root, ignore_errors=True)

    def maillog(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, needle: str, timeout: float = 20.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.maillog()
            if needle in text:
                return text
            time.sleep(0.1)
        raise TimeoutError(f"{needle!r} not in Postfix's log after {timeout} s:\n{self.maillog()[-3000:]}")

    def delivered(self, mailbox: str) -> list[bytes]:
        """Messages delivered to ``mailbox``@pf.test (its Maildir's new/)."""
        folder = self.mail / mailbox / "new"
        return [p.read_bytes() for p in sorted(folder.iterdir())] if folder.exists() else []


# --- Dovecot -----------------------------------------------------------------------------------


class Dovecot:
    """An own Dovecot: IMAP with STARTTLS on ``imap_port``, IMAPS on ``imaps_port``."""

    def __init__(self, *, user: str = "bounces", password: str = "secret-pass") -> None:
        self.paths = need("dovecot")
        root = _server_root("dovecot")
        self.root, self.user, self.password = root, user, password
        self.imap_port, self.imaps_port = free_port(), free_port()
        self.tls = self_signed(root / "tls", "imap.pf.test")
        mail = root / "mail"
        for folder in (root / "run", mail):
            folder.mkdir(parents=True, exist_ok=True)
        nobody = pwd.getpwnam("nobody")
        os.chown(mail, nobody.pw_uid, nobody.pw_gid)
        (root / "passwd").write_text(
            f"{user}:{{PLAIN}}{password}:{nobody.pw_uid}:{nobody.pw_gid}::{mail}/{user}\n")
        self.config = root / "dovecot.conf"
        self.config.write_text(f"""\
protocols = imap
listen = 127.0.0.1
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
ssl = yes
ssl_cert = <{self.tls.cert}
ssl_key = <{self.tls.key}
disable_plaintext_auth = yes
auth_mechanisms = plain login
mail_location = maildir:~/Maildir
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/passwd
}}
userdb {{
  driver = passwd-file
  args = {root}/passwd
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.imaps_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service imap-login {{
  chroot =
}}
""")
        (root / "state").mkdir(exist_ok=True)

    def __enter__(self) -> Dovecot:
        # output to a file: the daemon keeps its inherited descriptors, a pipe would never close
        with open(self.root / "start.log", "wb") as log:
            done = subprocess.run([self.paths["dovecot"], "-c", str(self.config)], stdout=log, stderr=log,
                                  stdin=subprocess.DEVNULL, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"dovecot -c {self.config} failed: {(self.root / 'start.log').read_text()}")
        wait_port(self.imap_port)
        wait_port(self.imaps_port)
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run([self.paths["dovecot"], "-c", str(self.config), "stop"], capture_output=True,
                       timeout=60, check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def deliver(self, raw: bytes, name: str) -> None:
        """Put a message into the user's INBOX (Maildir new/), as the MDA would."""
        folder = self.root / "mail" / self.user / "Maildir" / "new"
        for sub in ("new", "cur", "tmp"):
            (folder.parent / sub).mkdir(parents=True, exist_ok=True)
        target = folder / f"{int(time.time())}.{name}.test"
        target.write_bytes(raw)
        nobody = pwd.getpwnam("nobody")
        for path in (self.root / "mail" / self.user, *(self.root / "mail" / self.user).rglob("*")):
            os.chown(path, nobody.pw_uid, nobody.pw_gid)


# --- NSD ---------------------------------------------------------------------------------------


def nsd_run(root: Path, zones: dict[str, str], command: Sequence[str], *, stdin: bytes = b"",
            timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
    """Run ``command`` where the only DNS is an own NSD serving ``zones`` (origin -> zone text).

    A new network namespace (only ``lo``) and a private mount namespace, so 127.0.0.1:53 and
    /etc/resolv.conf are this run's alone; NSD ends with the namespace's shell.
    """
    paths = need("nsd", "unshare", "ip")
    root.mkdir(parents=True, exist_ok=True)
    lines = [
        "server:", "  ip-address: 127.0.0.1", "  port: 53", f"  zonesdir: \"{root}\"",
        f"  pidfile: \"{root}/nsd.pid\"", "  username: \"\"", "  database: \"\"",
        f"  logfile: \"{root}/nsd.log\"", f"  xfrdfile: \"{root}/xfrd.state\"", "  chroot: \"\"",
        f"  xfrdir: \"{root}\"", f"  zonelistfile: \"{root}/zone.list\"",
        "remote-control:", "  control-enable: no",
    ]
    for origin, text in zones.items():
        (root / f"{origin}.zone").write_text(text)
        lines += ["zone:", f"  name: \"{origin}\"", f"  zonefile: \"{origin}.zone\""]
    (root / "nsd.conf").write_text("\n".join(line for line in lines if line) + "\n")
    (root / "resolv.conf").write_text("nameserver 127.0.0.1\n")
    (root / "stdin").write_bytes(stdin)
    # NSD's output goes to /dev/null (it would hold our pipes open), and it is stopped by its
    # pid file when the command ends, inside the namespace's shell.
    script = (
        f"{paths['ip']} link set lo up && "
        f"{paths['nsd']} -c {root}/nsd.conf </dev/null >/dev/null 2>&1 && "
        "for i in $(seq 1 100); do [ -s " + str(root) + "/nsd.pid ] && break; sleep 0.05; done; "
        f"mount --bind {root}/resolv.conf /etc/resolv.conf && "
        f"\"$@\" < {root}/stdin; status=$?; kill $(cat {root}/nsd.pid) 2>/dev/null; exit $status"
    )
    done = subprocess.run([paths["unshare"], "--net", "--mount", "--", "sh", "-c", script, "sh", *command],
                          capture_output=True, timeout=timeout, check=False)
    pid_file = root / "nsd.pid"
    if pid_file.exists():  # should the shell have died first: end NSD by its own pid
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
    return done


class Nsd:
    """An own NSD on 127.0.0.1:<free port> (UDP and TCP) serving ``zones`` (origin -> zone text),
    for clients that take a name server and port (dnspython, ``domains check --nameserver``)."""

    def __init__(self, zones: dict[str, str]) -> None:
        self.paths = need("nsd")
        self.root = root = _server_root("nsd")
        self.port = free_port()
        lines = ["server:", "  ip-address: 127.0.0.1", f"  port: {self.port}", f'  zonesdir: "{root}"',
                 f'  pidfile: "{root}/nsd.pid"', '  username: ""', '  database: ""',
                 f'  logfile: "{root}/nsd.log"', f'  xfrdfile: "{root}/xfrd.state"', '  chroot: ""',
                 f'  xfrdir: "{root}"', f'  zonelistfile: "{root}/zone.list"',
                 "remote-control:", "  control-enable: no"]
        for origin, text in zones.items():
            (root / f"{origin}.zone").write_text(text)
            lines += ["zone:", f'  name: "{origin}"', f'  zonefile: "{origin}.zone"']
        (root / "nsd.conf").write_text("\n".join(lines) + "\n")

    def __enter__(self) -> Nsd:
        done = subprocess.run([self.paths["nsd"], "-c", str(self.root / "nsd.conf")], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"nsd failed to start: {(self.root / 'nsd.log').read_text(errors='replace')}")
        wait_port(self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        pid_file = self.root / "nsd.pid"
        if pid_file.exists():
            with contextlib.suppress(ValueError, ProcessLookupError):
                os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and _alive(pid_file):
                time.sleep(0.05)
        shutil.rmtree(self.root, ignore_errors=True)

    @property
    def log(self) -> str:
        return (self.root / "nsd.log").read_text(errors="replace")


def _alive(pid_file: Path) -> bool:
    try:
        os.kill(int(pid_file.read_text().strip()), 0)
    except (ValueError, ProcessLookupError, FileNotFoundError):
        return False
    return True
