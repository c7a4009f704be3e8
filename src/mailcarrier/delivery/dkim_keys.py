"""DKIM private keys per sending domain, kept as PEM files under the data directory.

``data_dir/dkim/<domain>/<selector>.pem`` (mode 0600) holds the private key and
``<selector>.txt`` the DNS TXT record to publish at ``<selector>._domainkey.<domain>``.
A key is generated on first use (RSA-2048 by default, Ed25519 on request) so a fresh
installation signs from its first message; the operator publishes the TXT record.

Ed25519 (RFC 8463) is signed *beside* RSA by default: many verifiers (Mail::DKIM, hence
SpamAssassin, and most mailbox providers) do not know ed25519 yet and would see a message
signed only that way as unsigned. ``ed25519`` therefore means an Ed25519 key under the
selector plus an RSA key under ``<selector>-rsa``; ``ed25519-only`` signs with Ed25519 alone.
"""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailcarrier.domain.errors import ConfigurationError
from mailcarrier.services.composition import DkimKey

__all__ = ["ALGORITHMS", "dns_record", "generate_key", "load_or_create_key", "signing_keys", "zone_record"]

#: Values of the ``dkim_algorithm`` setting.
ALGORITHMS = ("rsa", "ed25519", "ed25519-only")
#: Longest character-string of a TXT record (RFC 1035 3.3: one length octet).
_TXT_STRING = 255

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")
_SELECTOR = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def _paths(data_dir: Path, domain: str, selector: str) -> tuple[Path, Path]:
    domain, selector = domain.lower().strip("."), selector.lower()
    if not _DOMAIN.match(domain):
        raise ConfigurationError(f"not a valid sending domain for DKIM: {domain!r}")
    if not _SELECTOR.match(selector):
        raise ConfigurationError(f"not a valid DKIM selector: {selector!r}")
    folder = data_dir / "dkim" / domain
    return folder / f"{selector}.pem", folder / f"{selector}.txt"


def dns_record(key: DkimKey) -> str:
    """The TXT record value announcing the public key (RFC 6376 3.6.1, RFC 8463)."""
    public = key.private_key.public_key()
    if isinstance(public, ed25519.Ed25519PublicKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return f"v=DKIM1; k=ed25519; p={base64.b64encode(raw).decode('ascii')}"
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return f"v=DKIM1; k=rsa; p={base64.b64encode(der).decode('ascii')}"


def zone_record(key: DkimKey) -> str:
    """The TXT record in zone-file syntax (NSD, BIND, Knot): the owner as an absolute name and
    the value split into strings of at most 255 octets, which verifiers join back together."""
    value = dns_record(key)
    chunks = [value[i:i + _TXT_STRING] for i in range(0, len(value), _TXT_STRING)]
    owner = f"{key.selector}._domainkey.{key.domain}."
    if len(chunks) == 1:
        return f'{owner} IN TXT "{chunks[0]}"'
    body = "\n".join(f'    "{chunk}"' for chunk in chunks)
    return f"{owner} IN TXT (\n{body} )"


def generate_key(data_dir: Path, domain: str, selector: str, algorithm: str = "rsa",
                 *, overwrite: bool = False) -> DkimKey:
    """Create and store a new key; refuses to replace an existing one unless ``overwrite``."""
    pem_path, txt_path = _paths(data_dir, domain, selector)
    if pem_path.exists() and not overwrite:
        raise ConfigurationError(f"a DKIM key already exists at {pem_path}")
    private: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
    if algorithm == "rsa":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    elif algorithm in ("ed25519", "ed25519-only"):
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ConfigurationError(f"DKIM algorithm must be one of {', '.join(ALGORITHMS)}, not {algorithm!r}")
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    pem_path.parent.mkdir(parents=True, exist_ok=True)
    # Written to a temporary name then renamed, so a concurrent reader never sees half a key.
    tmp = pem_path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    os.replace(tmp, pem_path)
    key = DkimKey(domain.lower().strip("."), selector.lower(), private)
    txt_path.write_text(zone_record(key) + "\n", encoding="ascii")
    return key


def load_or_create_key(data_dir: Path, domain: str, selector: str, algorithm: str = "rsa") -> DkimKey:
    """The domain's key, generated on first use."""
    pem_path, _ = _paths(data_dir, domain, selector)
    if not pem_path.exists():
        try:
            return generate_key(data_dir, domain, selector, algorithm)
        except ConfigurationError:
            if not pem_path.exists():
                raise
    return DkimKey.from_pem(domain.lower().strip("."), selector.lower(), pem_path.read_bytes())


def signing_keys(data_dir: Path, domain: str, selector: str, algorithm: str = "rsa") -> tuple[DkimKey, ...]:
    """Every key a message of ``domain`` is signed with, each generated on first use.

    An Ed25519 key under ``selector`` (``algorithm`` ed25519, or a key generated so earlier,
    e.g. by ``dkim generate --algorithm ed25519``) signs beside an RSA key under
    ``<selector>-rsa``, the RFC 8463 way, unless ``algorithm`` is ``ed25519-only``. A selector
    whose key is RSA signs with that key alone.
    """
    if algorithm not in ALGORITHMS:
        raise ConfigurationError(f"DKIM algorithm must be one of {', '.join(ALGORITHMS)}, not {algorithm!r}")
    primary = load_or_create_key(data_dir, domain, selector, algorithm)
    if algorithm == "ed25519-only" or primary.algorithm != "ed25519-sha256":
        return (primary,)
    return (primary, load_or_create_key(data_dir, domain, f"{selector}-rsa", "rsa"))
