"""Sender-hygiene verdicts from DNS answers already fetched by an adapter.

Whether a domain may send marketing mail depends on SPF, DKIM, DMARC, reverse DNS, the
bounce domain's MX and blocklists. Fetching is I/O and lives in the delivery layer;
this module turns answers into :class:`Check` values whose ``fix`` says what the
operator must change. DNSBL answers in 127.255.255.0/24 are the lists' way to say
"your query was refused" (open resolver, over quota), so they are query errors, never
listings.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from mailcarrier.domain.errors import ParseError

__all__ = [
    "Check",
    "CheckStatus",
    "DmarcRecord",
    "check_dkim",
    "check_dmarc",
    "check_fcrdns",
    "check_mx",
    "check_spf",
    "dnsbl_query_name",
    "interpret_dnsbl",
    "parse_dkim_key_bits",
    "parse_dmarc",
]


class CheckStatus(StrEnum):
    PASS = "pass"
    WARN = "warn"  # passes, but weaker than it should be (e.g. DMARC p=none): read the fix
    FAIL = "fail"
    ERROR = "error"  # the check could not be completed (DNS failure, refused query)


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: CheckStatus
    detail: str
    fix: str = ""

    @property
    def ok(self) -> bool:
        """Nothing blocks sending: passed, possibly with a warning."""
        return self.status in (CheckStatus.PASS, CheckStatus.WARN)


_SPF_FIX = {
    "fail": "add the IP (or an include: covering it) to the domain's SPF record",
    "softfail": "add the IP to the SPF record; ~all only tolerates it",
    "neutral": "add the IP to the SPF record explicitly",
    "none": "publish an SPF TXT record (v=spf1 ... -all) authorising the sending IPs",
    "permerror": "fix the SPF record's syntax or reduce it below 10 DNS look-ups",
}


def check_spf(domain: str, ip: str, result: str, explanation: str = "") -> Check:
    """Interpret an SPF evaluation result (RFC 7208 names) for one sending IP."""
    result = result.strip().lower()
    name = f"SPF {domain} for {ip}"
    if result == "pass":
        return Check(name, CheckStatus.PASS, "the SPF record authorises this IP")
    if result == "temperror":
        return Check(name, CheckStatus.ERROR, f"temporary DNS error: {explanation}".strip(), "retry later")
    fix = _SPF_FIX.get(result)
    if fix is None:
        return Check(name, CheckStatus.ERROR, f"unknown SPF result {result!r}")
    return Check(name, CheckStatus.FAIL, f"SPF result {result} {explanation}".strip(), fix)


def _tags(record: str) -> dict[str, str]:
    tags: dict[str, str] = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip().lower()] = "".join(value.split())
    return tags


def _der_element(data: bytes, offset: int) -> tuple[int, bytes, int]:
    """One DER TLV at ``offset``: (tag, content, next offset)."""
    if offset + 2 > len(data):
        raise ParseError("truncated DER element")
    tag, length = data[offset], data[offset + 1]
    offset += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4 or offset + count > len(data):
            raise ParseError("bad DER length")
        length = int.from_bytes(data[offset : offset + count], "big")
        offset += count
    end = offset + length
    if end > len(data):
        raise ParseError("truncated DER element")
    return tag, data[offset:end], end


def _rsa_modulus_bits(der: bytes) -> int:
    tag, body, _ = _der_element(der, 0)
    if tag != 0x30:
        raise ParseError("public key is not a DER SEQUENCE")
    first_tag, first, after = _der_element(body, 0)
    if first_tag == 0x30:  # SubjectPublicKeyInfo: algorithm, then BIT STRING
        bit_tag, bits, _ = _der_element(body, after)
        if bit_tag != 0x03 or not bits:
            raise ParseError("public key info lacks its BIT STRING")
        return _rsa_modulus_bits(bits[1:])
    if first_tag != 0x02:  # bare RSAPublicKey: INTEGER modulus first
        raise ParseError("RSA public key lacks its modulus")
    return int.from_bytes(first, "big").bit_length()


def parse_dkim_key_bits(record: str) -> tuple[str, int] | None:
    """(key type, size in bits) of a DKIM key record; None for a revoked key (empty p=).

    Raises ParseError when the record is not a DKIM key record or the key is malformed.
    """
    tags = _tags(record)
    if "v" in tags and tags["v"] != "DKIM1":
        raise ParseError(f"not a DKIM1 key record (v={tags['v']})")
    if "p" not in tags:
        raise ParseError("DKIM record has no p= tag")
    if not tags["p"]:
        return None
    key_type = tags.get("k", "rsa").lower()
    try:
        raw = base64.b64decode(tags["p"], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ParseError(f"DKIM p= is not valid base64: {exc}") from exc
    if key_type == "ed25519":
        if len(raw) != 32:
            raise ParseError("an ed25519 DKIM key is 32 bytes")
        return key_type, 256
    if key_type != "rsa":
        raise ParseError(f"unknown DKIM key type k={key_type}")
    return key_type, _rsa_modulus_bits(raw)


def check_dkim(selector: str, domain: str, records: Iterable[str], min_bits: int = 2048) -> Check:
    """The selector is published with a usable key of at least ``min_bits`` (RSA)."""
    name = f"DKIM {selector}._domainkey.{domain}"
    texts = list(records)
    if not texts:
        return Check(name, CheckStatus.FAIL, "no DKIM key published", "publish the selector's TXT record")
    try:
        parsed = parse_dkim_key_bits("".join(texts))
    except ParseError as exc:
        return Check(name, CheckStatus.FAIL, f"unusable DKIM record: {exc}", "republish the key record")
    if parsed is None:
        return Check(name, CheckStatus.FAIL, "the key is revoked (empty p=)", "publish an active key")
    key_type, bits = parsed
    if key_type == "rsa" and bits < min_bits:
        return Check(
            name, CheckStatus.FAIL, f"RSA key is {bits} bits", f"rotate to an RSA key of {min_bits}+ bits"
        )
    return Check(name, CheckStatus.PASS, f"{key_type} key, {bits} bits")


@dataclass(frozen=True, slots=True)
class DmarcRecord:
    policy: str
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    rua: str = ""


def parse_dmarc(record: str) -> DmarcRecord | None:
    """Parse a DMARC TXT record; None when it is not one (no v=DMARC1 first)."""
    if not record.replace(" ", "").upper().startswith("V=DMARC1"):
        return None
    tags = _tags(record)
    policy = tags.get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        raise ParseError(f"DMARC p= must be none, quarantine or reject, got {policy!r}")
    modes = {key: tags.get(key, "r").lower() for key in ("adkim", "aspf")}
    if any(mode not in ("r", "s") for mode in modes.values()):
        raise ParseError("DMARC adkim/aspf must be r or s")
    try:
        pct = int(tags.get("pct", "100"))
    except ValueError as exc:
        raise ParseError("DMARC pct= must be an integer") from exc
    if not 0 <= pct <= 100:
        raise ParseError("DMARC pct= must be between 0 and 100")
    return DmarcRecord(policy, modes["adkim"], modes["aspf"], pct, tags.get("rua", ""))


def _aligned(from_domain: str, other: str, mode: str) -> bool:
    """Strict: identical. Relaxed: one is the other or a subdomain of it.

    Relaxed alignment properly compares organisational domains (public suffix list);
    the subdomain relation covers the common case of a sending subdomain of the brand.
    """
    a, b = from_domain.lower().rstrip("."), other.lower().rstrip(".")
    if mode == "s":
        return a == b
    return a == b or a.endswith("." + b) or b.endswith("." + a)


def check_dmarc(from_domain: str, records: Iterable[str], dkim_domain: str, bounce_domain: str) -> Check:
    """DMARC is published and our DKIM d= or envelope domain aligns with the From domain."""
    name = f"DMARC _dmarc.{from_domain}"
    try:
        found = [r for r in (parse_dmarc(text) for text in records) if r is not None]
    except ParseError as exc:
        return Check(name, CheckStatus.FAIL, f"invalid DMARC record: {exc}", "fix the _dmarc TXT record")
    if not found:
        return Check(name, CheckStatus.FAIL, "no DMARC record", "publish v=DMARC1; p=none; rua=... at _dmarc")
    if len(found) > 1:
        return Check(name, CheckStatus.FAIL, "several DMARC records", "keep exactly one _dmarc TXT record")
    record = found[0]
    if _aligned(from_domain, dkim_domain, record.adkim) or _aligned(from_domain, bounce_domain, record.aspf):
        if record.policy == "none":
            return Check(name, CheckStatus.WARN,
                         "p=none, aligned: monitoring only, receivers act on nothing that fails DMARC "
                         "(Gmail and Yahoo accept it from bulk senders, but it protects nobody)",
                         "once the rua= reports show only your own mail, move to p=quarantine, then p=reject")
        return Check(name, CheckStatus.PASS, f"p={record.policy}, aligned")
    return Check(
        name,
        CheckStatus.FAIL,
        f"neither DKIM d={dkim_domain} nor bounce domain {bounce_domain} aligns with {from_domain}",
        "sign with d= the From domain (or its parent) or use a bounce subdomain of it",
    )


def check_fcrdns(ip: str, ptr_names: Iterable[str], forward: Mapping[str, Iterable[str]]) -> Check:
    """Forward-confirmed reverse DNS: some PTR name resolves back to the IP."""
    name = f"FCrDNS {ip}"
    names = [n.rstrip(".").lower() for n in ptr_names]
    if not names:
        return Check(name, CheckStatus.FAIL, "no PTR record", f"ask the IP's owner for a PTR record for {ip}")
    target = ipaddress.ip_address(ip)
    for host in names:
        if any(ipaddress.ip_address(a) == target for a in forward.get(host, ())):
            return Check(name, CheckStatus.PASS, f"{ip} ↔ {host}")
    return Check(
        name,
        CheckStatus.FAIL,
        f"PTR {', '.join(names)} does not resolve back to {ip}",
        f"add an A/AAAA record {names[0]} → {ip}",
    )


def check_mx(bounce_domain: str, mx_hosts: Iterable[str], inbound_host: str) -> Check:
    """The bounce domain's MX names our inbound server, so bounces come back to us."""
    name = f"MX {bounce_domain}"
    hosts = [h.rstrip(".").lower() for h in mx_hosts]
    wanted = inbound_host.rstrip(".").lower()
    if wanted in hosts:
        return Check(name, CheckStatus.PASS, f"MX points at {wanted}")
    fix = f"set {bounce_domain} MX to {wanted}"
    if not hosts:
        return Check(name, CheckStatus.FAIL, "no MX record: bounces cannot come back", fix)
    if hosts == [""]:
        return Check(name, CheckStatus.FAIL,
                     "null MX (MX 0 .): the domain refuses all mail, bounces included", fix)
    return Check(name, CheckStatus.FAIL, f"MX points at {', '.join(h for h in hosts if h)}, not at {wanted}",
                 fix)


def dnsbl_query_name(ip: str, zone: str) -> str:
    """The DNS name to look up ``ip`` in blocklist ``zone`` (reversed nibbles for IPv6)."""
    address = ipaddress.ip_address(ip)
    reverse = address.reverse_pointer.rsplit(".", 2)[0]
    return f"{reverse}.{zone.rstrip('.')}"


def interpret_dnsbl(ip: str, zone: str, answers: Iterable[str]) -> Check:
    """Listed (127.0.0.0/8 except 127.255.255.x), clean (no answer) or query error."""
    name = f"DNSBL {zone} for {ip}"
    addresses = [ipaddress.ip_address(a) for a in answers]
    if not addresses:
        return Check(name, CheckStatus.PASS, "not listed")
    if any(a in ipaddress.ip_network("127.255.255.0/24") for a in addresses):
        return Check(
            name,
            CheckStatus.ERROR,
            "the list refused the query (127.255.255.x)",
            "query through your own resolver",
        )
    if not all(a in ipaddress.ip_network("127.0.0.0/8") for a in addresses):
        return Check(name, CheckStatus.ERROR, "answer outside 127.0.0.0/8: the zone is not a blocklist")
    codes = ", ".join(sorted(str(a) for a in addresses))
    return Check(name, CheckStatus.FAIL, f"listed ({codes})", f"request delisting of {ip} at {zone}")
