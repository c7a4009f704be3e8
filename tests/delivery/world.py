"""A small sending world for delivery tests: a migrated database, an account, an audience."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import Engine, select, update

from mailcarrier.config import Settings
from mailcarrier.services.mailings import MailingDraft, create_mailing, send_mailing
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage import contacts as contact_repo
from mailcarrier.storage.migrate import upgrade
from mailcarrier.storage.tables import audience_members, contacts

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
HTML = "<html><body><p>Hello {{ first_name }},</p><p>{{ fields.city | default('') }}</p>" \
       "<a href=\"{{ unsubscribe_url }}\">unsubscribe</a></body></html>"
TEXT = "Hello {{ first_name }}\nUnsubscribe: {{ unsubscribe_url }}\n"


@dataclass
class World:
    engine: Engine
    account_id: int
    audience_id: int


def make_world(engine: Engine, addresses: list[str], *, statuses: dict[str, str] | None = None) -> World:
    upgrade(engine)
    with engine.begin() as conn:
        account = account_repo.create_account(conn, "shop", "Shop", T0)
        audience = account_repo.create_audience(conn, account.id, "news", T0)
        for index, address in enumerate(addresses):
            cid = contact_repo.add_contact(conn, account.id, address, T0, first_name=f"N{index}",
                                           fields={"city": "Lyon" if index % 2 else "Paris"})
            conn.execute(audience_members.insert().values(audience_id=audience.id, contact_id=cid,
                                                          added_at=T0))
        for address, status in (statuses or {}).items():
            conn.execute(update(contacts).where(contacts.c.email == address).values(status=status))
    return World(engine, account.id, audience.id)


def start_mailing(world: World, *, now: datetime = T0, kind: str = "regular") -> int:
    mailing_id = create_mailing(world.engine, MailingDraft(
        account_id=world.account_id, from_address="news@shop.example", from_name="Shop",
        subject="Hi {{ first_name }}", html=HTML, text=TEXT, kind=kind, audience_id=world.audience_id),
        now)
    send_mailing(world.engine, world.account_id, mailing_id, now)
    return mailing_id


def settings_for(tmp_path: Path, port: int, **extra: object) -> Settings:
    """Settings routing every domain to 127.0.0.1:``port`` (0: no route, for settings used
    before the MX exists)."""
    values: dict[str, object] = {
        "data_dir": tmp_path / "data", "secret_key": "test-secret-" + "x" * 20,
        "static_routes": f"*=127.0.0.1:{port}" if port else "", "smtp_timeout": 1.0, "delivery_lease_seconds": 30.0,
        "dkim_algorithm": "ed25519", "bounce_domain": "bounces.shop.example",
        "public_url": "https://mail.shop.example",
    }
    values.update(extra)
    return Settings.of(**values)


def contact_ids(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {e: i for e, i in conn.execute(select(contacts.c.email, contacts.c.id))}
