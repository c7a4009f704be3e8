"""The account's contact policy preset applies alike to synchronous refusals (the worker's
final outcomes) and to late bounce emails (inbound); thresholds are the account's own."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine, update

from mailcarrier.config import Settings
from mailcarrier.delivery.contact_outcomes import apply_pending
from mailcarrier.domain.contact_status import StatusPolicy
from mailcarrier.services.inbound import IncomingEmail, process_all, store_incoming
from mailcarrier.services.policies import account_settings, pool_policy, validate_thresholds
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.tables import deliveries
from tests.inbound.factory import CTX, T0, contact, dsn, make_world
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

BLOCKED = "smtp; 550 5.7.1 Message rejected as spam by Content Filtering"


@pytest.mark.parametrize(("preset", "status"), [("marketo", "active"), ("emma", "error")])
def test_preset_decides_a_block_alike_synchronous_and_late(empty_engine: Engine,  # noqa: F811
                                                           preset: str, status: str) -> None:
    world = make_world(empty_engine, ["sync@corp.test", "late@corp.test"])
    with empty_engine.begin() as conn:
        account_repo.set_account_policy(conn, world.account_id, contact_policy=preset)
    sync, late = world.sent["sync@corp.test"], world.sent["late@corp.test"]
    # synchronous: the worker recorded a 550 5.7.1 refusal as the final outcome
    with empty_engine.begin() as conn:
        conn.execute(update(deliveries).where(deliveries.c.id == sync.delivery_id).values(
            state="bounced_hard", last_reason="spamdetected", last_category=1, last_reply_code=550,
            final_at=T0, contact_event_pending=True))
    assert apply_pending(empty_engine, StatusPolicy(), T0) == 1
    # late: a DSN for a message that had been accepted with 250
    store_incoming(empty_engine, [IncomingEmail(
        dsn(to=late.return_path, recipient=late.email, status="5.7.1", diagnostic=BLOCKED),
        "smtp", "test", "", (late.return_path,))], T0 + timedelta(hours=1))
    process_all(empty_engine, CTX, T0 + timedelta(hours=1))
    for sent in (sync, late):
        person = contact(empty_engine, sent.contact_id)
        assert (person["status"], person["email_invalid"], person["consecutive_blocks"]) == (status, False, 1)


def test_account_thresholds_override_the_operators(empty_engine: Engine) -> None:  # noqa: F811
    world = make_world(empty_engine, ["a@corp.test"])
    own = validate_thresholds({"max_bounce_rate": 0.11, "status_block_limit": 5})
    with empty_engine.begin() as conn:
        stored = account_repo.set_account_policy(conn, world.account_id, thresholds=own)
    assert stored.contact_policy == "marketo"  # the default preset
    settings = Settings.of(max_bounce_rate=0.05)
    assert pool_policy(account_settings(settings, stored.thresholds)).max_bounce_rate == 0.11
    assert pool_policy(settings).max_bounce_rate == 0.05
    with pytest.raises(ValueError, match="max_bounce_rate"):
        validate_thresholds({"max_bounce_rate": 1.5})
    with pytest.raises(ValueError, match="allowed:"):
        validate_thresholds({"bounce_rate": 0.1})
