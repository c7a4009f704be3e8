"""Pre-send content and consent checks for a mailing (``mailcarrier mailings check``).

Renders a sample message of the mailing, scores it with a real SpamAssassin (``spamd``,
spoken to over its SPAMC protocol so no client binary is needed), looks the link domains
up in domain blocklists, and checks the advice of seed 002: an unsubscribe link, the
sender's postal address, enough text per image, and an audience that opted in. Every
finding is a :class:`~mailcarrier.domain.dns_checks.Check` with the fix to make.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import formataddr
from typing import Any

import dns.exception
import dns.resolver
from jinja2 import TemplateError
from sqlalchemy import Connection, func, select

from mailcarrier.domain.consent import ConsentKind, classify_source
from mailcarrier.domain.content_lint import (
    SpamReport,
    find_physical_address,
    link_domains,
    parse_spamd_report,
    summarise_html,
    too_many_images,
)
from mailcarrier.domain.dns_checks import Check, CheckStatus, interpret_dnsbl
from mailcarrier.domain.errors import InvalidInputError, MailcarrierError, NotFoundError, ParseError
from mailcarrier.domain.message import MessageParts, compose_message
from mailcarrier.domain.public_url import public_url_problem
from mailcarrier.services.template_sandbox import BoundedSandbox, TemplateLimitError
from mailcarrier.storage.tables import audience_members, contacts, mailings

__all__ = [
    "DEFAULT_URI_ZONES",
    "ContentReport",
    "SampleMessage",
    "SpamdClient",
    "SpamdError",
    "check_mailing",
    "check_sample",
    "public_url_check",
    "render_sample",
]

DEFAULT_URI_ZONES = ("dbl.spamhaus.org", "multi.uribl.com", "multi.surbl.org")
_SAMPLE_CONTACT = {"email": "sample.contact@example.com", "first_name": "Sample", "last_name": "Contact",
                   "fields": {}}


class SpamdError(MailcarrierError, ConnectionError):
    """spamd could not be reached or answered with an error."""


@dataclass(frozen=True, slots=True)
class SpamdClient:
    """Talks SPAMC/1.5 to a spamd on ``host:port`` (``REPORT``: score, threshold, rules hit)."""

    host: str = "127.0.0.1"
    port: int = 783
    timeout: float = 30.0

    def report(self, message: bytes) -> SpamReport:
        request = (f"REPORT SPAMC/1.5\r\nContent-length: {len(message)}\r\nUser: mailcarrier\r\n\r\n"
                   .encode("ascii") + message)
        try:
            with socket.create_connection((self.host, self.port), timeout=self.timeout) as sock:
                sock.sendall(request)
                sock.shutdown(socket.SHUT_WR)
                chunks = []
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
        except OSError as exc:
            raise SpamdError(f"spamd at {self.host}:{self.port} unreachable: {exc}") from exc
        response = b"".join(chunks).decode("utf-8", "replace")
        status, _, rest = response.partition("\r\n")
        parts = status.split(maxsplit=2)
        if len(parts) < 2 or not parts[0].startswith("SPAMD/") or parts[1] != "0":
            raise SpamdError(f"spamd refused the check: {status.strip()[:200] or 'empty response'}")
        try:
            return parse_spamd_report(rest)
        except ParseError as exc:
            raise SpamdError(str(exc)) from exc


@dataclass(frozen=True, slots=True)
class SampleMessage:
    """One rendered message of the mailing, as the recipient would get it."""

    data: bytes
    subject: str
    html: str
    text: str
    unsubscribe_url: str


@dataclass(frozen=True, slots=True)
class ContentReport:
    mailing_id: int
    spam: SpamReport | None
    checks: tuple[Check, ...]
    consent_sources: tuple[tuple[str, str, int], ...]  #: (source, consent kind, active contacts)

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


def _mailing(conn: Connection, account_id: int, mailing_id: int) -> Any:
    row = conn.execute(select(mailings).where(mailings.c.id == mailing_id,
                                              mailings.c.account_id == account_id)).one_or_none()
    if row is None:
        raise NotFoundError(f"no mailing #{mailing_id} in this account")
    return row


def render_sample(conn: Connection, account_id: int, mailing_id: int, now: datetime, *,
                  public_url: str, bounce_domain: str, contact_id: int | None = None) -> SampleMessage:
    """Render the mailing for a contact without sending it: ``contact_id`` (one of the
    account's contacts, for a preview), else the audience's first member, else a sample contact.

    Raises ValueError when the templates do not render, NotFoundError for another account's contact.
    """
    row = _mailing(conn, account_id, mailing_id)
    member = None
    if contact_id is not None:
        member = conn.execute(select(contacts).where(contacts.c.account_id == account_id,
                                                     contacts.c.id == contact_id)).first()
        if member is None:
            raise NotFoundError(f"no contact {contact_id} in this account")
    elif row.audience_id is not None:
        member = conn.execute(select(contacts).join(audience_members,
                                                    audience_members.c.contact_id == contacts.c.id)
                              .where(audience_members.c.audience_id == row.audience_id)
                              .order_by(contacts.c.id).limit(1)).first()
    person = _SAMPLE_CONTACT if member is None else {
        "email": member.email, "first_name": member.first_name, "last_name": member.last_name,
        "fields": dict(member.fields or {})}
    unsubscribe_url = f"{public_url.rstrip('/')}/u/content-check-{secrets.token_hex(6)}"
    env = BoundedSandbox()
    context = {**person, "unsubscribe_url": unsubscribe_url}
    try:
        subject = " ".join(env.from_string(row.subject).render(context).split())
        html = env.from_string(row.html_body).render(context)
        text = env.from_string(row.text_body).render(context)
    except (TemplateError, TemplateLimitError) as exc:
        raise InvalidInputError(f"mailing #{mailing_id} does not render: {exc}") from exc
    sender = formataddr((row.from_name, row.from_address)) if row.from_name else row.from_address
    token = secrets.token_hex(8)
    parts = MessageParts(
        from_header=sender, to=str(person["email"]), subject=subject, text=text, html=html,
        message_id=f"content-check.{token}@{row.sending_domain}", date=now,
        return_path=f"check-{token}@{bounce_domain}", unsubscribe_url=unsubscribe_url,
        unsubscribe_mailto=f"unsubscribe@{bounce_domain}",
        feedback_id=f"{row.id}:{account_id}:check:mailcarrier",
        delivery_token="content-check", boundary=f"=_mccheck_{token}",
    )
    return SampleMessage(compose_message(parts).data, subject, html, text, unsubscribe_url)


def _spam_check(spamd: SpamdClient | None, data: bytes) -> tuple[Check, SpamReport | None]:
    if spamd is None:
        return Check("SpamAssassin", CheckStatus.ERROR, "not run (no spamd configured)",
                     "pass --spamd HOST:PORT of a running spamd"), None
    try:
        report = spamd.report(data)
    except SpamdError as exc:
        return Check("SpamAssassin", CheckStatus.ERROR, str(exc), "start spamd or fix --spamd"), None
    hits = ", ".join(f"{r.name} ({r.points:+.1f})" for r in sorted(report.rules, key=lambda r: -r.points)
                     if r.points > 0) or "no scoring rules"
    detail = f"score {report.score:.1f} / {report.threshold:.1f}: {hits}"
    if report.is_spam:
        return Check("SpamAssassin", CheckStatus.FAIL, detail,
                     "rewrite the content that triggers the highest-scoring rules"), report
    return Check("SpamAssassin", CheckStatus.PASS, detail), report


def _uri_checks(domains: Sequence[str], resolver: dns.resolver.Resolver | None,
                zones: Sequence[str]) -> list[Check]:
    if resolver is None or not zones:
        return []
    checks = []
    for domain in domains:
        for zone in zones:
            name = f"{domain}.{zone.rstrip('.')}"
            try:
                answer = resolver.resolve(name, "A", search=False)
                addresses = [r.to_text() for r in answer]
            except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
                addresses = []
            except (dns.exception.Timeout, dns.resolver.NoNameservers) as exc:
                checks.append(Check(f"link domain {domain} in {zone}", CheckStatus.ERROR,
                                    f"DNS query failed: {exc}", "check the resolver and retry"))
                continue
            verdict = interpret_dnsbl(domain, zone, addresses) if _all_ips(addresses) else Check(
                "", CheckStatus.ERROR, "answer is not an address list")
            fix = f"remove links to {domain} (listed at {zone})" if verdict.status is CheckStatus.FAIL \
                else verdict.fix
            checks.append(Check(f"link domain {domain} in {zone}", verdict.status, verdict.detail, fix))
    return checks


def _all_ips(values: Sequence[str]) -> bool:
    try:
        for value in values:
            ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def check_sample(sample: SampleMessage, *, spamd: SpamdClient | None,
                 resolver: dns.resolver.Resolver | None = None,
                 uri_zones: Sequence[str] = DEFAULT_URI_ZONES) -> tuple[list[Check], SpamReport | None]:
    """Every content check of one rendered message."""
    spam_check, report = _spam_check(spamd, sample.data)
    checks = [spam_check]
    summary = summarise_html(sample.html)
    visible = f"{sample.text}\n{summary.text}"
    if sample.unsubscribe_url in sample.html or sample.unsubscribe_url in sample.text:
        checks.append(Check("unsubscribe link", CheckStatus.PASS, "the body links to the unsubscribe page"))
    else:
        checks.append(Check("unsubscribe link", CheckStatus.FAIL, "no unsubscribe link in the body",
                            "add {{ unsubscribe_url }} as a visible link in the HTML and text parts"))
    address = find_physical_address(visible)
    if address is None:
        checks.append(Check("postal address", CheckStatus.FAIL, "no physical postal address found",
                            "add the sender's postal address (street or P.O. box) to the footer"))
    else:
        checks.append(Check("postal address", CheckStatus.PASS, f"found {address!r}"))
    ratio = f"{summary.images} image(s), {len(summary.text)} characters of visible HTML text"
    if too_many_images(summary):
        checks.append(Check("image-to-text ratio", CheckStatus.FAIL, ratio,
                            "add real text; do not put the message in pictures"))
    else:
        checks.append(Check("image-to-text ratio", CheckStatus.PASS, ratio))
    checks += _uri_checks(link_domains(summary.links, sample.text), resolver, uri_zones)
    return checks, report


def _consent(conn: Connection, row: Any) -> tuple[Check, tuple[tuple[str, str, int], ...]]:
    if row.audience_id is None:
        return Check("audience consent", CheckStatus.ERROR, "the mailing has no audience",
                     "attach an audience"), ()
    counts = conn.execute(select(contacts.c.consent_source, func.count()).join(
        audience_members, audience_members.c.contact_id == contacts.c.id,
    ).where(audience_members.c.audience_id == row.audience_id, contacts.c.status == "active")
        .group_by(contacts.c.consent_source).order_by(contacts.c.consent_source)).all()
    sources = tuple((str(source), classify_source(str(source)).value, int(n)) for source, n in counts)
    without = [(s, n) for s, kind, n in sources if kind != ConsentKind.OPTED_IN.value]
    if not without:
        total = sum(n for *_, n in sources)
        return Check("audience consent", CheckStatus.PASS, f"all {total} active contacts opted in"), sources
    listed = ", ".join(f"{source}: {n}" for source, n in without)
    fix = "re-confirm these contacts with an opt-in request, or leave them out of the audience"
    return Check("audience consent", CheckStatus.FAIL, f"contacts without recorded opt-in ({listed})",
                 fix), sources


def check_mailing(conn: Connection, account_id: int, mailing_id: int, now: datetime, *,
                  spamd: SpamdClient | None, public_url: str, bounce_domain: str,
                  resolver: dns.resolver.Resolver | None = None,
                  uri_zones: Sequence[str] = DEFAULT_URI_ZONES) -> ContentReport:
    """Render a sample, run the content checks on it and the consent check on the audience."""
    row = _mailing(conn, account_id, mailing_id)
    sample = render_sample(conn, account_id, mailing_id, now, public_url=public_url,
                           bounce_domain=bounce_domain)
    checks, report = check_sample(sample, spamd=spamd, resolver=resolver, uri_zones=uri_zones)
    consent, sources = _consent(conn, row)
    return ContentReport(mailing_id, report, (*checks, public_url_check(public_url), consent), sources)


def public_url_check(public_url: str) -> Check:
    """Whether the unsubscribe and tracking links (all under ``public_url``) reach recipients."""
    problem = public_url_problem(public_url)
    if problem is None:
        return Check("public URL of links", CheckStatus.PASS,
                     f"unsubscribe and tracking links point to {public_url}")
    return Check("public URL of links", CheckStatus.FAIL,
                 f"unsubscribe and tracking links point to {public_url}: {problem}",
                 "set MAILCARRIER_PUBLIC_URL to the https address where `mailcarrier serve` is "
                 "reachable from the internet (a reverse proxy in front of it)")
