"""Tracking a realistic newsletter end to end: the worker's link hook registers and rewrites
the links an HTML parser finds (Outlook VML buttons, image maps, unquoted hrefs), and the
click tokens lead back to the right destination."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from mailcarrier.domain.tracking import TokenPurpose, decode_token
from mailcarrier.services.composition import MailingRenderer, RecipientData
from mailcarrier.services.mailings import MailingDraft, create_mailing
from mailcarrier.services.tracking.links import LinkDirectory, make_link_hook, prepare_message_links
from mailcarrier.storage.engine import make_engine
from mailcarrier.storage.tables import contacts, mailings
from tests.delivery.world import T0, make_world, settings_for

NEWSLETTER = (Path(__file__).parents[1] / "domain" / "data" / "newsletter.html").read_text(encoding="utf-8")
DESTINATIONS = [
    "https://shop.example/view/8f3a",
    "https://shop.example/?utm_source=news&utm_medium=email",
    "https://shop.example/sale?cat=shoes&size=42",
    "https://shop.example/sale?cat=all",
    "https://shop.example/sale?cat=all",
    "https://shop.example/stores/paris",
    "https://shop.example/stores/lyon",
    "https://shop.example/sale?cat=shoes&size=42",
]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'news.db'}")
    yield engine
    engine.dispose()


def test_every_kind_of_link_is_tracked_and_leads_to_its_destination(db: Engine, tmp_path: Path) -> None:
    world = make_world(db, ["ada@d.example"])
    mailing_id = create_mailing(db, MailingDraft(account_id=world.account_id, from_address="news@shop.example",
                                                 subject="Sale", html=NEWSLETTER, text="",
                                                 audience_id=world.audience_id), T0)
    settings = settings_for(tmp_path, 2525)
    tracker = make_link_hook(db, settings, clock=lambda: T0)
    with db.connect() as conn:
        row = conn.execute(select(mailings).where(mailings.c.id == mailing_id)).one()
        person = conn.execute(select(contacts)).one()
    renderer = MailingRenderer(row, secret=settings.resolved_secret(), bounce_domain=settings.inbound.bounce_domain,
                               public_url=settings.api.public_url, link_hook=tracker)
    recipient = RecipientData(77, person.id, person.email, person.first_name, person.last_name, person.fields)
    tracker.prepare(renderer, [recipient])
    html = renderer.personalise(recipient).html

    tokens = re.findall(r'href\s*=\s*"https://mail\.shop\.example/c/([^"]+)"', html, re.IGNORECASE)
    secrets = {settings.tracking.key_id: settings.resolved_secret()}
    directory = LinkDirectory(db)
    targets = [directory.lookup(decode_token(t, secrets=secrets, purpose=TokenPurpose.CLICK,
                                             now=int(T0.timestamp()))) for t in tokens]
    assert targets == DESTINATIONS
    vml = html[html.index("<v:roundrect"):]
    assert vml[:vml.index(">")].count('href="https://mail.shop.example/c/') == 1
    assert 'data-href="https://shop.example/hero-analytics"' in html
    assert '<a href="https://shop.example/old-sale">old</a>' in html  # an ordinary comment
    assert re.search(r'href="https://mail\.shop\.example/u/[^"]+">Unsubscribe', html)  # not a click
    assert html.count('src="https://mail.shop.example/o/') == 1


def test_opens_without_clicks_leave_every_link_as_it_was(db: Engine, tmp_path: Path) -> None:
    """Before, tracking opens only replaced every trackable href with an empty string."""
    world = make_world(db, ["ada@d.example"])
    settings = settings_for(tmp_path, 2525)
    with db.begin() as conn:
        prepared = prepare_message_links(conn, settings, account_id=world.account_id, mailing_id=1,
                                         delivery_id=5, html=NEWSLETTER, text="https://shop.example/x",
                                         now=T0, track_clicks=False, track_opens=True)
    assert prepared.links == ()
    assert prepared.html is not None
    without_pixel = re.sub(r'<img src="https://mail\.shop\.example/o/[^"]+" width="1" height="1" alt="">', "",
                           prepared.html)
    assert without_pixel == NEWSLETTER.replace("{{ unsubscribe_url }}", prepared.unsubscribe_url)
    assert prepared.text == "https://shop.example/x"
