"""Test data: a mailing with delivered messages to a few contacts, and their tracking links."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine

from mailcarrier.config import Settings
from mailcarrier.services.tracking.links import PreparedMessage, prepare_message_links
from mailcarrier.storage import contacts as contact_repo
from mailcarrier.storage.tables import deliveries, mailings

HTML = """<html><body><h1>Spring sale</h1>
<p><a href="https://shop.example/sale?utm=1&amp;x=2">Sale</a>
<a href='https://shop.example/new'>New</a>
<a href="https://blog.example/post">Blog</a>
<a href="mailto:help@shop.example">Help</a>
<a href="{{unsubscribe_url}}">Unsubscribe</a></p></body></html>"""
TEXT = "Sale: https://shop.example/sale?utm=1&x=2\nUnsubscribe: [unsubscribe]\n"


@dataclass(frozen=True)
class Message:
    contact_id: int
    delivery_id: int
    email: str
    prepared: PreparedMessage

    def click_url(self, number: int) -> str:
        """The tracked URL of link ``number`` as it appears in the HTML part."""
        urls = re.findall(r"""href=["'](http://mc\.test/c/[^"']+)""", self.prepared.html or "")
        return urls[number - 1].replace("&amp;", "&")

    @property
    def open_url(self) -> str:
        found = re.search(r'src="(http://mc\.test/o/[^"]+)"', self.prepared.html or "")
        assert found
        return found.group(1)


def make_mailing(engine: Engine, settings: Settings, account_id: int, emails: list[str],
                 delivered_at: datetime, *, html: str = HTML, text: str = TEXT) -> tuple[int, list[Message]]:
    """A mailing delivered (the 250) at ``delivered_at`` to each address, bodies prepared for tracking."""
    out = []
    with engine.begin() as conn:
        mailing_id = int(conn.execute(mailings.insert().values(
            account_id=account_id, name="spring", kind="regular", state="done",
            from_address="news@shop.example", subject="Sale", html_body=html, text_body=text,
            sending_domain="shop.example", created_at=delivered_at)).inserted_primary_key[0])
        for email in emails:
            contact_id = contact_repo.add_contact(conn, account_id, email, delivered_at)
            delivery_id = int(conn.execute(deliveries.insert().values(
                account_id=account_id, mailing_id=mailing_id, contact_id=contact_id, email=email,
                domain=email.rpartition("@")[2], state="delivered",
                delivered_at=delivered_at, final_at=delivered_at)).inserted_primary_key[0])
            prepared = prepare_message_links(conn, settings, account_id=account_id,
                                              mailing_id=mailing_id, delivery_id=delivery_id,
                                              html=html, text=text, now=delivered_at)
            out.append(Message(contact_id, delivery_id, email, prepared))
    return mailing_id, out
