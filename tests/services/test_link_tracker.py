"""Rendering never writes: a batch's links are registered before sending, in one write unit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select

from mailcarrier.domain.tracking import TokenPurpose, decode_token
from mailcarrier.services.composition import MailingRenderer, RecipientData
from mailcarrier.services.mailings import MailingDraft, create_mailing
from mailcarrier.services.tracking.links import LinkDirectory, make_link_hook
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.tables import contacts, mailings
from mailcarrier.storage.tracking_tables import tracking_links
from tests.delivery.world import T0, make_world, settings_for

HTML = ('<p>Hi {{ first_name }}</p><a href="https://shop.example/sale">sale</a>'
        '<a href="https://shop.example/city/{{ fields.city }}">your city</a>'
        '<a href="{{ unsubscribe_url }}">unsubscribe</a>')


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'links.db'}")
    yield engine
    engine.dispose()


def _setup(db: Engine, tmp_path: Path) -> tuple[Any, MailingRenderer, list[RecipientData]]:
    world = make_world(db, [f"c{i}@d.example" for i in range(6)])
    mailing_id = create_mailing(db, MailingDraft(account_id=world.account_id, from_address="news@shop.example",
                                                 subject="Hi", html=HTML, text="",
                                                 audience_id=world.audience_id), T0)
    settings = settings_for(tmp_path, 2525)
    tracker = make_link_hook(db, settings, clock=lambda: T0)
    with db.connect() as conn:
        row = conn.execute(select(mailings).where(mailings.c.id == mailing_id)).one()
        people = conn.execute(select(contacts).order_by(contacts.c.id)).all()
    renderer = MailingRenderer(row, secret=settings.resolved_secret(), bounce_domain=settings.inbound.bounce_domain,
                               public_url=settings.api.public_url, link_hook=tracker)
    recipients = [RecipientData(1000 + p.id, p.id, p.email, p.first_name, p.last_name, p.fields)
                  for p in people]
    return tracker, renderer, recipients


def _statements(db: Engine) -> list[str]:
    seen: list[str] = []
    event.listen(db, "before_cursor_execute", lambda *args: seen.append(str(args[2])))
    return seen


def test_rendering_after_prepare_runs_no_statement_and_tracks_every_link(db: Engine, tmp_path: Path) -> None:
    tracker, renderer, recipients = _setup(db, tmp_path)
    tracker.prepare(renderer, recipients)
    with db.connect() as conn:
        stored = sorted(conn.execute(select(tracking_links.c.url)).scalars())
    assert stored == ["https://shop.example/city/Lyon", "https://shop.example/city/Paris",
                      "https://shop.example/sale"]
    seen = _statements(db)
    for recipient in recipients:
        message = renderer.render(recipient, T0).data.decode()
        assert "https://shop.example/sale" not in message and "/c/" in message and "/u/" in message
    assert seen == []
    tracker.prepare(renderer, recipients)  # known links: not even a look-up
    assert seen == []


def test_rendering_goes_on_while_another_process_holds_the_write_lock(db: Engine, tmp_path: Path) -> None:
    """Before, the first message of a new mailing registered its links while rendering, in a
    deferred transaction: with a concurrent writer that was "database is locked" (the worker
    died) or a wait of the whole busy timeout."""
    tracker, renderer, recipients = _setup(db, tmp_path)
    tracker.prepare(renderer, recipients)
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.connect() as conn:
            conn.exec_driver_sql("COMMIT")
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            locked.set()
            release.wait(30)
            conn.exec_driver_sql("COMMIT")

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(5)
        started = time.perf_counter()
        bodies = [renderer.render(r, T0) for r in recipients]
        assert time.perf_counter() - started < 2
    finally:
        release.set()
        holder.join()
    assert len(bodies) == len(recipients)


def test_click_tokens_name_the_links_registered_for_their_recipient(db: Engine, tmp_path: Path) -> None:
    tracker, renderer, recipients = _setup(db, tmp_path)
    tracker.prepare(renderer, recipients)
    directory = LinkDirectory(db)
    settings = settings_for(tmp_path, 2525)
    for recipient in recipients:
        html = renderer.personalise(recipient).html
        tokens = [part.split('"')[0] for part in html.split("/c/")[1:]]
        targets = [directory.lookup(decode_token(t, secrets={settings.tracking.key_id: settings.resolved_secret()},
                                                 purpose=TokenPurpose.CLICK, now=int(T0.timestamp())))
                   for t in tokens]
        city = recipient.fields["city"]
        assert targets == ["https://shop.example/sale", f"https://shop.example/city/{city}"]


def test_a_link_the_batch_did_not_prepare_is_sent_untracked_not_registered(db: Engine, tmp_path: Path) -> None:
    tracker, renderer, recipients = _setup(db, tmp_path)
    tracker.prepare(renderer, recipients[:1])  # a Paris recipient only... or Lyon: one city known
    seen = _statements(db)
    known_city = recipients[0].fields["city"]
    other = next(r for r in recipients if r.fields["city"] != known_city)
    html = renderer.personalise(other).html
    assert f'href="https://shop.example/city/{other.fields["city"]}"' in html
    assert "https://shop.example/sale" not in html
    assert seen == []
