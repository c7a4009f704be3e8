"""Mailings through the service: templates, enqueue, suppression, segments, state changes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from mailcarrier.domain.errors import ConflictError, NotFoundError
from mailcarrier.domain.tracking import TokenPurpose, decode_token
from mailcarrier.domain.verp import decode_return_path
from mailcarrier.services.composition import MailingRenderer, RecipientData, TemplateRenderError
from mailcarrier.services.figures import mailing_figures
from mailcarrier.services.mailings import (
    MailingDraft,
    Segment,
    cancel_mailing,
    create_mailing,
    get_mailing,
    pause_mailing,
    resume_mailing,
    send_mailing,
)
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.tables import deliveries, mailings
from tests.delivery.world import T0, World, make_world
from tests.storage.conftest import empty_engine  # noqa: F401 - fixture

SECRET = b"s" * 32


@pytest.fixture
def world(empty_engine: Engine) -> World:  # noqa: F811
    addresses = [f"a{i}@example.com" for i in range(10)] + ["err@example.com", "out@example.com",
                                                             "wait@example.com"]
    return make_world(empty_engine, addresses, statuses={
        "err@example.com": "error", "out@example.com": "opted_out", "wait@example.com": "pending"})


def _draft(world: World, **overrides: object) -> MailingDraft:
    values: dict[str, object] = {"account_id": world.account_id, "from_address": "news@shop.example",
                                 "subject": "Hi {{ first_name }}", "html": "<p>{{ fields.city }}</p>",
                                 "text": "Hello {{ first_name }}", "audience_id": world.audience_id}
    values.update(overrides)
    return MailingDraft(**values)  # type: ignore[arg-type]


def test_send_enqueues_active_contacts_and_counts_the_rest_suppressed(world: World) -> None:
    mailing_id = create_mailing(world.engine, _draft(world), T0)
    summary = send_mailing(world.engine, world.account_id, mailing_id, T0, id_range=3)
    assert summary.state == "sending"
    assert summary.recipients_total == 13 and summary.suppressed_total == 3
    figures = mailing_figures(world.engine, world.account_id, mailing_id)
    assert figures.queued == 10 and figures.suppressed == 3
    with pytest.raises(ConflictError):
        send_mailing(world.engine, world.account_id, mailing_id, T0)


def test_segment_by_field_and_status(world: World) -> None:
    by_city = create_mailing(world.engine, _draft(world, segment=Segment(fields={"city": "Lyon"})), T0)
    assert send_mailing(world.engine, world.account_id, by_city, T0).recipients_total == 6
    errors_only = create_mailing(world.engine, _draft(world, segment=Segment(statuses=("error",))), T0)
    summary = send_mailing(world.engine, world.account_id, errors_only, T0)
    assert summary.state == "done" and summary.suppressed_total == 1 and summary.recipients_total == 1


@pytest.mark.parametrize(("field", "source"), [
    ("subject", "Hi {{ first_name"),  # syntax
    ("html", "{{ nobody_knows_me }}"),  # unknown variable
    ("text", "{{ ''.__class__.__mro__ }}"),  # sandbox: private attribute
    ("html", "{% include '/etc/passwd' %}"),  # sandbox: no file access
])
def test_bad_templates_fail_at_create_time(world: World, field: str, source: str) -> None:
    with pytest.raises(TemplateRenderError):
        create_mailing(world.engine, _draft(world, **{field: source}), T0)
    with world.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(mailings)).scalar_one() == 0


def test_invalid_drafts_are_refused(world: World) -> None:
    with pytest.raises(ValueError, match="kind"):
        create_mailing(world.engine, _draft(world, kind="blast"), T0)
    with pytest.raises(ValueError, match="sender"):
        create_mailing(world.engine, _draft(world, from_address="nobody"), T0)
    with pytest.raises(ValueError, match="line break"):
        create_mailing(world.engine, _draft(world, subject="a\r\nBcc: x@y"), T0)
    with pytest.raises(NotFoundError):
        create_mailing(world.engine, _draft(world, audience_id=999), T0)


def test_pause_resume_cancel(world: World) -> None:
    mailing_id = create_mailing(world.engine, _draft(world), T0)
    with pytest.raises(ConflictError):
        pause_mailing(world.engine, world.account_id, mailing_id, T0)
    send_mailing(world.engine, world.account_id, mailing_id, T0)
    assert pause_mailing(world.engine, world.account_id, mailing_id, T0).state == "paused"
    assert resume_mailing(world.engine, world.account_id, mailing_id, T0).state == "sending"
    assert cancel_mailing(world.engine, world.account_id, mailing_id, T0).state == "cancelled"
    figures = mailing_figures(world.engine, world.account_id, mailing_id)
    assert figures.failed == 10 and figures.queued == 0
    with pytest.raises(ConflictError):
        resume_mailing(world.engine, world.account_id, mailing_id, T0)
    with pytest.raises(NotFoundError):
        get_mailing(world.engine, world.account_id + 1, mailing_id)


def test_renderer_headers_decode_back_to_the_delivery(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    world = make_world(engine, ["ann@example.com"])
    mailing_id = create_mailing(engine, _draft(world), T0)
    send_mailing(engine, world.account_id, mailing_id, T0)
    with engine.connect() as conn:
        row = conn.execute(select(mailings).where(mailings.c.id == mailing_id)).one()
        delivery_id = conn.execute(select(deliveries.c.id)).scalar_one()
    renderer = MailingRenderer(row, secret=SECRET, bounce_domain="b.shop.example",
                               public_url="https://t.example/")
    message = renderer.render(RecipientData(delivery_id, 1, "ann@example.com", "Ann", "", {"city": "Oslo"}), T0)
    verp = decode_return_path(message.envelope_from, key=SECRET)
    assert verp is not None and (verp.mailing_id, verp.delivery_id) == (mailing_id, delivery_id)
    token = message.data.split(b"https://t.example/u/")[1].split(b">")[0].decode()
    decoded = decode_token(token, secrets={1: SECRET}, purpose=TokenPurpose.UNSUBSCRIBE, now=0)
    assert decoded is not None and decoded.delivery_id == delivery_id
    assert b"Subject: Hi Ann" in message.data and b"Oslo" in message.data
    engine.dispose()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.text(max_size=40), city=st.text(max_size=40))
def test_any_contact_data_renders_or_fails_cleanly(tmp_path: Path, first: str, city: str) -> None:
    """Contact data never breaks the message: no header injection, valid bytes or a clear error."""
    class Row:
        id, account_id, kind, sending_domain = 1, 1, "regular", "shop.example"
        subject, html_body, text_body = "Hi {{ first_name }}", "<p>{{ fields.city }}</p>", "{{ first_name }}"
        from_name, from_address = "Shop", "news@shop.example"

    renderer = MailingRenderer(Row(), secret=SECRET, bounce_domain="b.example", public_url="https://t.example")
    try:
        message = renderer.render(RecipientData(7, 1, "x@example.com", first, "", {"city": city}), T0)
    except (TemplateRenderError, ValueError):
        return
    head = message.data.split(b"\r\n\r\n", 1)[0]
    names = [line.split(b":")[0] for line in head.split(b"\r\n") if line and line[:1] not in b" \t"]
    assert names.count(b"Subject") == 1 and b"Bcc" not in names
    assert all(len(line) <= 998 for line in message.data.split(b"\r\n"))
