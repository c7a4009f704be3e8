"""Sender hygiene and blocklist monitoring as inputs to sending: domain checks (SPF, DKIM,
DMARC, rDNS), DNSBL look-ups of the pool IPs, and the gate that refuses a marketing send
from an unsendable domain.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime

from sqlalchemy import Connection, Engine, select

from mailcarrier.config import Settings
from mailcarrier.domain.dns_checks import Check, CheckStatus
from mailcarrier.domain.reputation_signals import SignalKind
from mailcarrier.services.hygiene import (
    DnsHygiene,
    DnsQueryError,
    DomainCheckRequest,
    assert_sendable,
    resolver_for,
)
from mailcarrier.services.pools.membership import current_pool, pool_ips
from mailcarrier.services.pools.reputation import record_dnsbl_results
from mailcarrier.services.pools.values import DnsblResult
from mailcarrier.storage.engine import run_write
from mailcarrier.storage.pool_tables import (
    reputation_events,
    sending_ips,
)

__all__ = [
    "SenderCheck",
    "assert_domain_sendable",
    "dnsbl_check",
    "domain_check_request",
    "open_dnsbl_listings",
    "sender_hygiene_gate",
]

def domain_check_request(conn: Connection, account_id: int, domain: str, *, dkim_selector: str,
                         bounce_domain: str, inbound_host: str,
                         dnsbl_zones: Sequence[str] = ()) -> DomainCheckRequest:
    """The hygiene checks for a sending domain of the account: SPF and rDNS for every IP of its pool."""
    pool = current_pool(conn, account_id)
    addresses = tuple(ip.address for ip in pool_ips(conn, pool.id) if ip.enabled) if pool else ()
    return DomainCheckRequest(domain=domain.strip().rstrip(".").lower(), sending_ips=addresses,
                              dkim_selector=dkim_selector, bounce_domain=bounce_domain,
                              inbound_host=inbound_host, dnsbl_zones=tuple(dnsbl_zones))


def dnsbl_check(engine: Engine, hygiene: DnsHygiene, zones: Sequence[str],
                now: datetime) -> list[DnsblResult]:
    """Look every enabled sending IP up in every zone and record the answers (the scheduled job).

    127.255.255.x answers and DNS failures are stored as query errors, never as listings.
    The look-ups run with no transaction open (a slow resolver must not hold SQLite's write
    lock): the IPs are read first, the answers recorded afterwards in one write unit.
    """
    with engine.connect() as conn:
        addresses = conn.execute(select(sending_ips.c.address).where(sending_ips.c.enabled.is_(True))
                                 .order_by(sending_ips.c.address)).scalars().all()
    results = []
    for address in addresses:
        for zone in zones:
            try:
                check = hygiene.dnsbl(address, zone)
            except DnsQueryError as exc:
                check = Check(f"DNSBL {zone} for {address}", CheckStatus.ERROR, f"DNS query failed: {exc}",
                              "check the resolver and retry")
            results.append((address, zone, check))
    return run_write(engine, lambda conn: record_dnsbl_results(conn, results, now),
                     what="recording DNSBL look-ups")


def assert_domain_sendable(engine: Engine, hygiene: DnsHygiene, account_id: int, domain: str, *,
                           dkim_selector: str, bounce_domain: str, inbound_host: str,
                           dnsbl_zones: Sequence[str] = ()) -> None:
    """Refuse marketing mail from ``domain`` unless every hygiene check passes for the account's IPs.

    Raises :class:`~mailcarrier.services.hygiene.DomainNotSendableError` whose message
    lists each failed check and what to fix. Call it before enqueuing a regular mailing.
    The DNS checks run after the read transaction closed.
    """
    with engine.connect() as conn:
        request = domain_check_request(conn, account_id, domain, dkim_selector=dkim_selector,
                                       bounce_domain=bounce_domain, inbound_host=inbound_host,
                                       dnsbl_zones=dnsbl_zones)
    assert_sendable(request.domain, hygiene.check_domain(request))


def open_dnsbl_listings(conn: Connection, addresses: Sequence[str]) -> list[Check]:
    """Listings the scheduled DNSBL look-ups found on these IPs and have not seen cleared, as failed checks.

    Only look-up results count: they close themselves at the next clean answer. Manual
    and API reports are history for the operator, not a switch that could stay on forever.
    """
    if not addresses:
        return []
    e = reputation_events.c
    rows = conn.execute(select(e.ip_address, e.blocklist, e.occurred_at, e.evidence).where(
        e.kind == SignalKind.LISTING.value, e.source == "dnsbl", e.resolved_at.is_(None),
        e.ip_address.in_(list(addresses))).order_by(e.ip_address, e.blocklist)).all()
    return [Check(f"DNSBL {r.blocklist} for {r.ip_address}", CheckStatus.FAIL,
                  f"listed since {r.occurred_at.isoformat(timespec='minutes')}: {r.evidence}"[:500],
                  f"request delisting from {r.blocklist} (see its lookup page for {r.ip_address}), then run "
                  "`mailcarrier pools dnsbl-check` to record the clean answer") for r in rows]


SenderCheck = Callable[[Engine, int, str], None]


def sender_hygiene_gate(settings: Settings, hygiene: DnsHygiene | None = None) -> SenderCheck | None:
    """The check ``send_mailing`` runs before enqueuing marketing mail, or None when switched off.

    Applies to accounts assigned to a pool (the IPs it checks SPF and FCrDNS for are the
    pool's); an account on no pool sends from the default source, outside pool
    management, and is not gated. DKIM uses the ``dkim_selector`` setting, the bounce
    domain's MX must point at ``hostname``; open DNSBL listings of the pool's IPs block too.
    Raises :class:`~mailcarrier.services.hygiene.DomainNotSendableError` saying what to fix.
    """
    if not settings.pools.enforce_sender_hygiene:
        return None
    checker = hygiene or DnsHygiene(resolver_for(settings.dns.nameserver))

    def gate(engine: Engine, account_id: int, domain: str) -> None:
        with engine.connect() as conn:
            if current_pool(conn, account_id) is None:
                return
            request = domain_check_request(conn, account_id, domain,
                                           dkim_selector=settings.delivery.dkim_selector,
                                           bounce_domain=settings.inbound.bounce_domain,
                                           inbound_host=settings.delivery.hostname)
            listings = open_dnsbl_listings(conn, request.sending_ips)
        assert_sendable(request.domain, (*checker.check_domain(request), *listings))

    return gate
