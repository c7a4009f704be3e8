"""Marketing mail from a domain failing sender hygiene is refused with what to fix
(``send_mailing`` with ``sender_hygiene_gate``, and ``POST /api/v1/mailings/{id}/send``),
against a loopback DNS server."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, func, select

from mailcarrier.api.app import create_app
from mailcarrier.config import Settings
from mailcarrier.domain.dns_checks import Check, CheckStatus
from mailcarrier.domain.warmup import load_schedules
from mailcarrier.services.hygiene import DomainNotSendableError
from mailcarrier.services.mailings import (
    TEST_AUDIENCE,
    MailingDraft,
    create_mailing,
    get_mailing,
    send_mailing,
)
from mailcarrier.services.pools import membership, reputation, sender_checks
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage import contacts as contact_repo
from mailcarrier.storage.api_keys import create_api_key
from mailcarrier.storage.migrate import upgrade
from mailcarrier.storage.tables import deliveries
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

from .local_dns import local_dns
from .test_hygiene import ZONE

T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def nameserver() -> Iterator[str]:
    with local_dns(ZONE) as resolver:
        yield f"127.0.0.1:{resolver.port}"


def _settings(tmp_path: Path, nameserver: str, **extra: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path / "data", "secret_key": "test-master-secret-0123456789",
        "dkim_selector": "s1", "bounce_domain": "bounces.good.test", "hostname": "mx.mailcarrier.test",
        "hygiene_nameserver": nameserver}
    values.update(extra)
    return Settings.of(**values)


@pytest.fixture
def acme(empty_engine: Engine) -> int:  # noqa: F811
    """Account acme on a dedicated pool of 127.0.0.2, with one contact."""
    upgrade(empty_engine)
    with empty_engine.begin() as conn:
        account = account_repo.create_account(conn, "acme", "Acme", T0)
        contact_repo.add_contact(conn, account.id, "ann@example.com", T0)
        membership.create_pool(conn, "house", "dedicated", T0)
        membership.add_ip(conn, "house", "127.0.0.2", T0, schedule=load_schedules()["standard"], warm=True)
        membership.assign_account(conn, account.id, "house", T0)
    return account.id


def _mailing(engine: Engine, account_id: int, sender: str, kind: str = "regular") -> int:
    return create_mailing(engine, MailingDraft(account_id=account_id, from_address=sender, subject="Hi",
                                               text="Hello\n", kind=kind), T0)


def _queued(engine: Engine, mailing_id: int) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(deliveries.c.mailing_id == mailing_id)).scalar_one())


def test_failing_domain_is_refused_with_fixes_and_stays_a_draft(
    empty_engine: Engine, acme: int, tmp_path: Path, nameserver: str,  # noqa: F811
) -> None:
    gate = sender_checks.sender_hygiene_gate(_settings(tmp_path, nameserver))
    assert gate is not None
    bad = _mailing(empty_engine, acme, "news@bad.test")
    with pytest.raises(DomainNotSendableError) as caught:
        send_mailing(empty_engine, acme, bad, T0, sender_check=gate)
    message = str(caught.value)
    assert message.startswith("marketing mail from bad.test is refused until these are fixed:")
    assert "SPF bad.test for 127.0.0.2" in message and "DMARC _dmarc.bad.test: no DMARC record" in message
    assert "DKIM s1._domainkey.bad.test" in message
    assert all(check.fix for check in caught.value.problems)  # each problem says what to do
    assert get_mailing(empty_engine, acme, bad).state == "draft" and _queued(empty_engine, bad) == 0

    good = _mailing(empty_engine, acme, "news@good.test")
    assert send_mailing(empty_engine, acme, good, T0, sender_check=gate).state == "sending"
    assert _queued(empty_engine, good) == 1


def test_open_dnsbl_listing_of_a_pool_ip_blocks_until_a_clean_lookup(
    empty_engine: Engine, acme: int, tmp_path: Path, nameserver: str,  # noqa: F811
) -> None:
    gate = sender_checks.sender_hygiene_gate(_settings(tmp_path, nameserver))
    assert gate is not None
    listed = Check("DNSBL bl.test for 127.0.0.2", CheckStatus.FAIL, "listed: 127.0.0.2", "request delisting")
    clean = Check("DNSBL bl.test for 127.0.0.2", CheckStatus.PASS, "not listed", "")
    with empty_engine.begin() as conn:
        reputation.record_dnsbl_results(conn, [("127.0.0.2", "bl.test", listed)], T0)
    first = _mailing(empty_engine, acme, "news@good.test")
    with pytest.raises(DomainNotSendableError, match=r"DNSBL bl\.test for 127\.0\.0\.2: listed since .*"
                                                     r"request delisting from bl\.test"):
        send_mailing(empty_engine, acme, first, T0, sender_check=gate)
    with empty_engine.begin() as conn:
        reputation.record_dnsbl_results(conn, [("127.0.0.2", "bl.test", clean)], T0 + timedelta(hours=1))
    assert send_mailing(empty_engine, acme, first, T0, sender_check=gate).state == "sending"


def test_gate_exemptions_tests_unpooled_accounts_and_the_setting(
    empty_engine: Engine, acme: int, tmp_path: Path, nameserver: str,  # noqa: F811
) -> None:
    gate = sender_checks.sender_hygiene_gate(_settings(tmp_path, nameserver))
    assert gate is not None
    with empty_engine.begin() as conn:  # a test goes to the test audience of named addresses only
        tests = account_repo.create_audience(conn, acme, TEST_AUDIENCE, T0)
        qa = contact_repo.add_contact(conn, acme, "qa@example.com", T0)
        contact_repo.replace_audience_members(conn, tests.id, [qa], T0)
    test_send = create_mailing(empty_engine, MailingDraft(
        account_id=acme, from_address="news@bad.test", subject="Hi", text="Hello\n", kind="test",
        audience_id=tests.id), T0)
    assert send_mailing(empty_engine, acme, test_send, T0, sender_check=gate).state == "sending"
    with empty_engine.begin() as conn:  # an account on no pool sends from the default source
        loner = account_repo.create_account(conn, "loner", "Loner", T0).id
        contact_repo.add_contact(conn, loner, "bob@example.com", T0)
    unpooled = _mailing(empty_engine, loner, "news@bad.test")
    assert send_mailing(empty_engine, loner, unpooled, T0, sender_check=gate).state == "sending"
    assert sender_checks.sender_hygiene_gate(_settings(tmp_path, nameserver, enforce_sender_hygiene=False)) is None


async def test_api_send_answers_403_refused_by_policy_with_what_to_fix(
    empty_engine: Engine, acme: int, tmp_path: Path, nameserver: str,  # noqa: F811
) -> None:
    with empty_engine.begin() as conn:
        _, key = create_api_key(conn, acme, "k", ["mailings:write"], T0)
    bad = _mailing(empty_engine, acme, "news@bad.test")
    good = _mailing(empty_engine, acme, "news@good.test")
    app = create_app(_settings(tmp_path, nameserver), empty_engine, clock=lambda: T0)
    headers = {"Authorization": f"Bearer {key}"}
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mc.test") as http:
            refused = await http.post(f"/api/v1/mailings/{bad}/send", headers=headers)
            sent = await http.post(f"/api/v1/mailings/{good}/send", headers=headers)
    # refused by policy, as the CLI's exit 5 says: not a conflict with the mailing's state
    assert refused.status_code == 403, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.json()["type"] == "urn:mailcarrier:problem:refused-by-policy"
    detail = refused.json()["detail"]
    assert "SPF bad.test for 127.0.0.2" in detail and "->" in detail
    assert sent.status_code == 200 and sent.json()["state"] == "sending"
