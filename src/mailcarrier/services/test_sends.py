"""Test sends: a mailing's content sent as a separate *test* mailing to named addresses.

Shared by the REST API and the dashboard. The addresses become contacts of the account's
"Test recipients" audience, so the test mailing has a response page and delivery evidence
like any other, and never touches the real audience's figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, Engine

from mailcarrier.domain.errors import InvalidInputError, NotFoundError
from mailcarrier.services import account_views as views
from mailcarrier.services import mailings as mailing_service
from mailcarrier.services.contact_import import normalise_address
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage import contacts as contact_repo
from mailcarrier.storage.engine import run_write

__all__ = ["MAX_TEST_ADDRESSES", "TEST_AUDIENCE", "send_test"]

TEST_AUDIENCE = mailing_service.TEST_AUDIENCE
MAX_TEST_ADDRESSES = mailing_service.MAX_TEST_RECIPIENTS


def send_test(engine: Engine, account_id: int, mailing_id: int, addresses: Sequence[str],
              now: datetime) -> mailing_service.MailingSummary:
    """Create and queue the test mailing; ValueError for a bad or missing address.

    NotFoundError if the mailing is not the account's; the worker delivers it as usual.
    """
    source = mailing_service.get_mailing(engine, account_id, mailing_id)
    wanted = [a for a in (x.strip() for x in addresses) if a]
    if not wanted:
        raise InvalidInputError("name at least one address to send the test to")
    if len(wanted) > MAX_TEST_ADDRESSES:
        raise InvalidInputError(f"a test goes to at most {MAX_TEST_ADDRESSES} addresses, not {len(wanted)}")
    normalised = set()
    for address in wanted:
        try:
            normalised.add(normalise_address(address))
        except ValueError as exc:
            raise InvalidInputError(f"invalid test address {address!r}: {exc}") from exc
    def members(conn: Connection) -> int:
        try:
            audience = account_repo.audience_by_name(conn, account_id, TEST_AUDIENCE)
        except NotFoundError:
            audience = account_repo.create_audience(conn, account_id, TEST_AUDIENCE, now,
                                                    "Addresses that received test sends")
        # Existing contacts are used as they are (their names and fields stay); the audience
        # is set to exactly these addresses, so an earlier test's addresses get nothing.
        ids = []
        for address in sorted(normalised):
            found = contact_repo.contact_id_by_email(conn, account_id, address)
            ids.append(found if found is not None else contact_repo.add_contact(
                conn, account_id, address, now, consent_source="test_send"))
        contact_repo.replace_audience_members(conn, audience.id, ids, now)
        return audience.id

    audience_id = run_write(engine, members, what="test-send recipients")
    html, text = views.mailing_content(engine, account_id, mailing_id)
    draft = mailing_service.MailingDraft(
        account_id=account_id, from_address=source.from_address,
        subject=f"[TEST] {source.subject}", html=html, text=text, name=f"Test of {source.name}",
        kind="test", audience_id=audience_id,
        segment=mailing_service.Segment(fields={}, statuses=()))
    test_id = mailing_service.create_mailing(engine, draft, now)
    return mailing_service.send_mailing(engine, account_id, test_id, now)
