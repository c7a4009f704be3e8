"""Late bounces (DSNs) that name a spam trap or a blocklist are recorded per IP and account
by the inbound processor, with the IP's other accounts as neighbours."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, update

from mailcarrier.domain.warmup import load_schedules
from mailcarrier.services.inbound import IncomingEmail, process_pending, store_incoming
from mailcarrier.services.pools import eligibility, membership, reputation
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.tables import attempts
from tests.inbound.factory import CTX, T0, dsn, make_world
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

LISTED = "smtp; 554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using zen.spamhaus.org"
TRAP = "smtp; 550 5.7.1 <{r}>: message hit a spam trap, see https://postmaster.receiver.test"


def test_dsn_naming_a_listing_or_trap_is_recorded_with_neighbours(empty_engine: Engine) -> None:  # noqa: F811
    world = make_world(empty_engine, ["ann@receiver.test", "bob@receiver.test", "cid@receiver.test"])
    sent = world.sent
    with empty_engine.begin() as conn:
        neighbour = account_repo.create_account(conn, "neighbour", "Neighbour", T0 - timedelta(days=2)).id
        membership.create_pool(conn, "apartment", "shared", T0 - timedelta(days=2))
        membership.add_ip(conn, "apartment", "127.0.0.2", T0, schedule=load_schedules()["standard"], warm=True)
        for account in (world.account_id, neighbour):
            membership.assign_account(conn, account, "apartment", T0 - timedelta(days=1))
        conn.execute(update(attempts).where(attempts.c.delivery_id.in_(
            [sent["ann@receiver.test"].delivery_id, sent["bob@receiver.test"].delivery_id]))
            .values(local_ip="127.0.0.2"))
        conn.execute(update(attempts).where(attempts.c.delivery_id == sent["cid@receiver.test"].delivery_id)
                     .values(local_ip="192.0.2.7"))  # sent from outside every pool
    emails = [
        dsn(to=sent["ann@receiver.test"].return_path, recipient="ann@receiver.test", status="5.7.1",
            diagnostic=LISTED, message_id=sent["ann@receiver.test"].message_id, dsn_id="d1@mx.receiver.test"),
        dsn(to=sent["bob@receiver.test"].return_path, recipient="bob@receiver.test", status="5.7.1",
            diagnostic=TRAP, message_id=sent["bob@receiver.test"].message_id, dsn_id="d2@mx.receiver.test"),
        dsn(to=sent["cid@receiver.test"].return_path, recipient="cid@receiver.test", status="5.7.1",
            diagnostic=TRAP, message_id=sent["cid@receiver.test"].message_id, dsn_id="d3@mx.receiver.test"),
    ]
    later = T0 + timedelta(hours=2)
    store_incoming(empty_engine, [IncomingEmail(raw, "smtp") for raw in emails], later)
    summary = process_pending(empty_engine, CTX, later)
    assert summary.bounced_deliveries == 3
    with empty_engine.connect() as conn:
        on_ip = reputation.reputation_history(conn, ip_address="127.0.0.2")
        mine = reputation.reputation_history(conn, account_id=world.account_id)
        verdict = eligibility.account_record(conn, world.account_id, later)
    assert sorted((e.kind.value, e.blocklist, e.source) for e in on_ip) == [
        ("listing", "Spamhaus", "bounce"), ("trap", "", "bounce")]
    assert all(e.neighbours == ("neighbour", "shop") and e.account == "shop" for e in on_ip)
    assert any("zen.spamhaus.org" in e.evidence for e in on_ip)
    outside = [e for e in mine if e.ip_address is None]
    assert [(e.kind.value, e.neighbours) for e in outside] == [("trap", ("shop",))]
    assert len(verdict.trap_hits) == 2  # both traps keep the account out of trusted
