"""Automated mailings (seed 003): stored mailings sent one contact at a time by a trigger.

An automated mailing is created as a draft like any other, then *activated* with a trigger:

* ``audience_join``: a welcome, sent to each contact that joins the mailing's audience after
  activation, whichever way they join (CSV import, API, confirmed double opt-in). The worker
  sweeps new members before each claim (:func:`enqueue_joined`), so no joining path needs
  to know about automations;
* ``api``: sent only when asked for one contact (:func:`trigger_for_contact`, the API's
  ``POST /api/v1/mailings/{id}/trigger``).

An active automation stays in state ``sending`` (``paused`` stops it; ``cancelled`` ends it)
and is never settled as done. Each contact gets it at most once (one delivery per mailing and
contact), only while ``active``; its figures are those of its own deliveries, listed under
the response page's automated mailings.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import Connection, Engine, and_, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite

from mailcarrier.domain.errors import ConflictError, InvalidInputError, NotFoundError
from mailcarrier.domain.vocabulary import ContactStatus, DeliveryState
from mailcarrier.services.mailings import MARKETING_KINDS, MailingSummary, get_mailing
from mailcarrier.storage.engine import run_write
from mailcarrier.storage.tables import audience_members, contacts, deliveries, mailings

__all__ = ["TRIGGERS", "activate", "enqueue_joined", "trigger_for_contact"]

TRIGGERS = ("audience_join", "api")


def activate(engine: Engine, account_id: int, mailing_id: int, trigger: str, now: datetime, *,
             sender_check: Callable[[Engine, int, str], None] | None = None) -> MailingSummary:
    """Start an automated draft with its trigger; ConflictError/ValueError say what is wrong."""
    if trigger not in TRIGGERS:
        raise InvalidInputError(f"unknown trigger {trigger!r}; choose one of {', '.join(TRIGGERS)}")
    summary = get_mailing(engine, account_id, mailing_id)
    if summary.kind != "automated":
        raise ConflictError(f"mailing {mailing_id} is a {summary.kind} mailing; only an automated "
                            "mailing takes a trigger (create it with kind 'automated')")
    if summary.state != "draft":
        raise ConflictError(f"mailing {mailing_id} is {summary.state}; only a draft can be activated")
    if trigger == "audience_join" and summary.audience_id is None:
        raise InvalidInputError("a welcome (audience_join) needs the mailing's audience: create it with one")
    if sender_check is not None and summary.kind in MARKETING_KINDS:
        sender_check(engine, account_id, summary.sending_domain)

    def start(conn: Connection) -> None:
        conn.execute(update(mailings).where(mailings.c.id == mailing_id, mailings.c.state == "draft")
                     .values(state="sending", trigger=trigger, started_at=now, finished_at=None))

    run_write(engine, start, what="automation activation")
    return get_mailing(engine, account_id, mailing_id)


def enqueue_joined(engine: Engine, now: datetime) -> int:
    """Queue each active welcome for the active contacts that joined its audience since it was
    activated and have not had it; returns how many deliveries were queued."""
    m = mailings.c
    with engine.connect() as conn:
        welcomes = conn.execute(select(m.id, m.account_id, m.audience_id, m.started_at).where(
            m.state == "sending", m.trigger == "audience_join", m.audience_id.is_not(None))).all()
    queued = 0
    for welcome in welcomes:
        def sweep(conn: Connection, w: object = welcome) -> int:
            return _enqueue_members(conn, w, now)
        queued += run_write(engine, sweep, what="welcome mailing queue")
    return queued


def _enqueue_members(conn: Connection, welcome: object, now: datetime) -> int:
    c, am, d = contacts.c, audience_members.c, deliveries.c
    mailing_id, account_id = welcome.id, welcome.account_id  # type: ignore[attr-defined]
    source = (select(literal(account_id), literal(mailing_id), c.id, c.email, c.domain,
                     literal(DeliveryState.QUEUED.value), literal(now, d.next_attempt_at.type))
              .join(audience_members, am.contact_id == c.id)
              .where(am.audience_id == welcome.audience_id,  # type: ignore[attr-defined]
                     am.added_at > welcome.started_at,  # type: ignore[attr-defined]
                     c.account_id == account_id, c.status == ContactStatus.ACTIVE.value,
                     ~select(d.id).where(d.mailing_id == mailing_id, d.contact_id == c.id).exists()))
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    columns = ["account_id", "mailing_id", "contact_id", "email", "domain", "state", "next_attempt_at"]
    added = len(conn.execute(insert(deliveries).from_select(columns, source).on_conflict_do_nothing(
        index_elements=["mailing_id", "contact_id"]).returning(deliveries.c.id)).all())
    if added:
        _count_recipients(conn, mailing_id)
    return added


def _count_recipients(conn: Connection, mailing_id: int) -> None:
    total = select(func.count()).where(deliveries.c.mailing_id == mailing_id).scalar_subquery()
    conn.execute(update(mailings).where(mailings.c.id == mailing_id).values(recipients_total=total))


def trigger_for_contact(engine: Engine, account_id: int, mailing_id: int, contact_id: int,
                        now: datetime) -> int:
    """Queue the automated mailing for one of the account's contacts; returns the delivery id.

    NotFoundError for another account's mailing or contact; ConflictError when the mailing is
    not an active automation, the contact may not be mailed, or already had it.
    """
    summary = get_mailing(engine, account_id, mailing_id)
    if summary.kind != "automated" or summary.state not in ("sending", "paused"):
        raise ConflictError(f"mailing {mailing_id} is not an active automated mailing "
                            f"({summary.kind}, {summary.state}); activate it with a trigger first")
    if summary.state == "paused":
        raise ConflictError(f"automated mailing {mailing_id} is paused; resume it to trigger it")

    def queue(conn: Connection) -> int:
        c = contacts.c
        row = conn.execute(select(c.id, c.email, c.domain, c.status).where(
            c.account_id == account_id, c.id == contact_id)).one_or_none()
        if row is None:
            raise NotFoundError(f"no contact {contact_id} in this account")
        if row.status != ContactStatus.ACTIVE.value:
            raise ConflictError(f"contact {contact_id} is {row.status}: only active contacts are mailed")
        found = conn.execute(select(deliveries.c.id).where(and_(
            deliveries.c.mailing_id == mailing_id, deliveries.c.contact_id == contact_id))).first()
        if found is not None:
            raise ConflictError(f"contact {contact_id} already had automated mailing {mailing_id} "
                                f"(delivery {found.id})")
        key = conn.execute(deliveries.insert().values(
            account_id=account_id, mailing_id=mailing_id, contact_id=contact_id, email=row.email,
            domain=row.domain, state=DeliveryState.QUEUED.value, next_attempt_at=now)).inserted_primary_key
        _count_recipients(conn, mailing_id)
        assert key is not None
        return int(key[0])

    return run_write(engine, queue, what="automated mailing trigger")
