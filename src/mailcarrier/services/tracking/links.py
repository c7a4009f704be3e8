"""Send time: a message's links registered, rewritten to signed click URLs, and looked up again.

:func:`register_links` keeps one row per distinct URL per mailing. The delivery worker's
link hook (:class:`LinkTracker`, built by :func:`make_link_hook`) registers a claimed
batch's links before sending (:meth:`LinkTracker.prepare`, one write) and rewrites each
message from the ids in memory, so rendering never writes; :func:`prepare_message_links`
does both for one message inside a caller's transaction and adds the RFC 8058
``List-Unsubscribe`` headers. Which links a body holds is the domain's reading
(:mod:`mailcarrier.domain.links`). At request time :class:`LinkDirectory` maps a click
token back to its destination, cached.
"""

from __future__ import annotations

import hashlib
import html as html_lib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

from sqlalchemy import Connection, Engine, func, select
from sqlalchemy.exc import IntegrityError

from mailcarrier.config import Settings
from mailcarrier.domain.errors import ConflictError
from mailcarrier.domain.links import LinkRow, add_open_pixel, scan_links
from mailcarrier.domain.tracking import TokenPurpose, TrackingToken, encode_token
from mailcarrier.services.composition import MailingRenderer, RecipientData, RenderedBodies
from mailcarrier.services.tracking.keys import TrackingKeys, tracking_keys
from mailcarrier.storage.engine import run_write
from mailcarrier.storage.tracking_tables import tracking_links

__all__ = [
    "UNSUBSCRIBE_PLACEHOLDERS",
    "LinkDirectory",
    "LinkTracker",
    "PreparedMessage",
    "make_link_hook",
    "prepare_message_links",
    "register_links",
]

_log = logging.getLogger("mailcarrier.tracking")
#: Where a template asks for the unsubscribe URL (filled in after link rewriting).
UNSUBSCRIBE_PLACEHOLDERS = ("{{unsubscribe_url}}", "{{ unsubscribe_url }}", "[unsubscribe]",
                            "%unsubscribe%", "%UNSUBSCRIBE%")
#: Stands in for the unsubscribe URL while links are rewritten (links.py leaves "{{" alone).
_PROTECTED = "{{mailcarrier_unsubscribe_url}}"


# --- send time ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    """Bodies with tracked links, plus the headers every marketing message carries."""

    html: str | None
    text: str | None
    headers: tuple[tuple[str, str], ...]
    unsubscribe_url: str
    links: tuple[LinkRow, ...]


def _url_hash(url: str) -> str:
    return hashlib.sha256(url.encode("utf-8")).hexdigest()


def register_links(conn: Connection, account_id: int, mailing_id: int, urls: Sequence[str],
                   now: datetime) -> dict[str, int]:
    """Link ids for ``urls`` in the mailing, adding the new ones (numbered in first-seen order).

    Safe under concurrent workers: a number or URL taken meanwhile makes the insert fail
    inside a savepoint, and the look-up runs again.
    """
    wanted = {_url_hash(u): u for u in urls}
    if not wanted:
        return {}
    for _ in range(10):
        rows = conn.execute(select(tracking_links.c.id, tracking_links.c.url_sha256).where(
            tracking_links.c.mailing_id == mailing_id,
            tracking_links.c.url_sha256.in_(list(wanted))))
        have = {r.url_sha256: int(r.id) for r in rows}
        missing = [h for h in wanted if h not in have]
        if not missing:
            return {wanted[h]: link_id for h, link_id in have.items()}
        top = conn.execute(select(func.coalesce(func.max(tracking_links.c.number), 0)).where(
            tracking_links.c.mailing_id == mailing_id)).scalar_one()
        try:
            with conn.begin_nested():
                conn.execute(tracking_links.insert(), [
                    {"account_id": account_id, "mailing_id": mailing_id, "number": int(top) + i,
                     "url": wanted[h], "url_sha256": h, "created_at": now}
                    for i, h in enumerate(missing, start=1)])
        except IntegrityError:
            continue
    raise ConflictError(f"could not register the links of mailing {mailing_id}: too much contention")


def prepare_message_links(
    conn: Connection,
    settings: Settings,
    *,
    account_id: int,
    mailing_id: int,
    delivery_id: int,
    html: str | None,
    text: str | None,
    now: datetime,
    keys: TrackingKeys | None = None,
    track_opens: bool = True,
    track_clicks: bool = True,
) -> PreparedMessage:
    """Rewrite one recipient's bodies for tracking and build its unsubscribe headers.

    Called by the renderer once per delivery, inside its transaction (``conn``). Tokens
    carry ids only; destinations stay in the link table.
    """
    keys = keys or tracking_keys(settings)
    expires = 0
    if settings.tracking.link_days:
        expires = int((now + timedelta(days=settings.tracking.link_days)).timestamp())
    base = settings.api.public_url.rstrip("/")

    def mint(purpose: TokenPurpose, link_id: int = 0) -> str:
        token = TrackingToken(purpose, account_id, mailing_id, delivery_id, link_id, expires)
        return encode_token(token, master_secret=keys.current, key_id=keys.key_id)

    links: tuple[LinkRow, ...] = ()
    if track_clicks:
        found = scan_links(html, text)
        ids = register_links(conn, account_id, mailing_id, [row.url for row in found.links], now)
        by_number = {row.number: ids[row.url] for row in found.links}
        links = found.links
        rewritten = found.rewrite(
            click_url=lambda n: f"{base}/c/{mint(TokenPurpose.CLICK, by_number[n])}",
            open_pixel_url=f"{base}/o/{mint(TokenPurpose.OPEN)}" if track_opens else None)
        html, text = rewritten.html, rewritten.text
    elif track_opens and html is not None:  # the links stay as they are, only the pixel is added
        html = add_open_pixel(html, f"{base}/o/{mint(TokenPurpose.OPEN)}")
    unsubscribe_token = mint(TokenPurpose.UNSUBSCRIBE)
    unsubscribe_url = f"{base}/u/{unsubscribe_token}"
    for placeholder in UNSUBSCRIBE_PLACEHOLDERS:
        if html is not None:
            html = html.replace(placeholder, html_lib.escape(unsubscribe_url, quote=True))
        if text is not None:
            text = text.replace(placeholder, unsubscribe_url)
    mailto = (f"mailto:unsubscribe@{settings.inbound.bounce_domain}"
              f"?subject={quote('unsubscribe ' + unsubscribe_token)}")
    headers = (("List-Unsubscribe", f"<{unsubscribe_url}>, <{mailto}>"),
               ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
    return PreparedMessage(html, text, headers, unsubscribe_url, links)


class LinkTracker:
    """The delivery engine's ``link_hook``: tracked links and the open pixel for each message.

    Pass it as ``run_worker(..., link_hook=make_link_hook(engine, settings))``. Two steps,
    so that rendering never writes: :meth:`prepare` (called by the worker once per claimed
    batch, in a thread, before sending) renders the batch's bodies, finds the links not yet
    known and registers them in one write transaction (:func:`run_write`: ``BEGIN
    IMMEDIATE`` on SQLite, retried on a lock); calling the tracker then rewrites one
    message's bodies from the ids in memory, without touching the database. Link ids are
    kept per mailing, so once a mailing's links are known a batch costs no write at all.
    The rendered unsubscribe URL is left untouched (it must not become a click: scanners
    would follow it, and the page is safe to GET anyway). A link the batch's preparation
    did not see (a template whose output changes from one render to the next) is sent
    untracked rather than registered while rendering.
    """

    def __init__(self, engine: Engine, settings: Settings, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 keys: TrackingKeys | None = None, track_opens: bool = True) -> None:
        self.engine, self.clock, self.track_opens = engine, clock, track_opens
        self.keys = keys or tracking_keys(settings)
        self.base = settings.api.public_url.rstrip("/")
        self.link_days = settings.tracking.link_days
        self.known: dict[tuple[int, str], int] = {}
        self._lock = threading.Lock()

    def _protected(self, bodies: RenderedBodies, renderer: MailingRenderer,
                   delivery_id: int) -> tuple[str, str, str]:
        protected = f"{self.base}/u/{renderer.unsubscribe_token(delivery_id)}"
        html = bodies.html.replace(protected, _PROTECTED) if bodies.html else bodies.html
        text = bodies.text.replace(protected, _PROTECTED) if bodies.text else bodies.text
        return protected, html, text

    def prepare(self, renderer: MailingRenderer, recipients: Sequence[RecipientData]) -> None:
        """Register the links these recipients' messages carry and the tracker does not know yet."""
        account_id, mailing_id = renderer.account_id, renderer.mailing_id
        missing: dict[str, None] = {}
        for recipient in recipients:
            try:
                bodies = renderer.bodies(recipient)
            except ValueError:  # this contact's data breaks the template: it fails at send time
                continue
            _protected, html, text = self._protected(bodies, renderer, recipient.delivery_id)
            found = scan_links(html, text)
            with self._lock:
                missing.update((row.url, None) for row in found.links
                               if (mailing_id, row.url) not in self.known)
        if not missing:
            return
        now = self.clock()
        ids = run_write(self.engine, lambda conn: register_links(conn, account_id, mailing_id,
                                                                 list(missing), now),
                        what=f"registering the links of mailing {mailing_id}")
        with self._lock:
            for url, link_id in ids.items():
                self.known[(mailing_id, url)] = link_id

    def __call__(self, bodies: RenderedBodies, renderer: MailingRenderer,
                 recipient: RecipientData) -> RenderedBodies:
        account_id, mailing_id = renderer.account_id, renderer.mailing_id
        delivery_id = recipient.delivery_id
        expires = 0
        if self.link_days:
            expires = int((self.clock() + timedelta(days=self.link_days)).timestamp())
        protected, html, text = self._protected(bodies, renderer, delivery_id)
        found = scan_links(html, text)
        by_number: dict[int, int] = {}
        untracked: dict[int, str] = {}
        for row in found.links:
            link_id = self.known.get((mailing_id, row.url))
            if link_id is None:
                untracked[row.number] = row.url
            else:
                by_number[row.number] = link_id
        if untracked:
            _log.warning("mailing %d, delivery %d: %d link(s) not prepared for this batch, sent untracked",
                         mailing_id, delivery_id, len(untracked), extra={"event": "tracking.untracked_link"})

        def mint(purpose: TokenPurpose, link_id: int = 0) -> str:
            token = TrackingToken(purpose, account_id, mailing_id, delivery_id, link_id, expires)
            return encode_token(token, master_secret=self.keys.current, key_id=self.keys.key_id)

        def click(number: int) -> str:
            if number in untracked:
                return untracked[number]
            return f"{self.base}/c/{mint(TokenPurpose.CLICK, by_number[number])}"

        rewritten = found.rewrite(
            click_url=click,
            open_pixel_url=f"{self.base}/o/{mint(TokenPurpose.OPEN)}" if self.track_opens and html else None)
        # rewrite_links gives back None only for a part it was given as None; bodies has both
        new_html = (rewritten.html or "").replace(_PROTECTED, protected)
        new_text = (rewritten.text or "").replace(_PROTECTED, protected)
        return replace(bodies, html=new_html, text=new_text)


def make_link_hook(engine: Engine, settings: Settings, *,
                   clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                   keys: TrackingKeys | None = None, track_opens: bool = True) -> LinkTracker:
    """The delivery engine's ``link_hook`` (a :class:`LinkTracker`) for these settings."""
    return LinkTracker(engine, settings, clock=clock, keys=keys, track_opens=track_opens)



class LinkDirectory:
    """Destination of a click token, cached in memory: links never change once registered."""

    def __init__(self, engine: Engine, *, max_entries: int = 200_000) -> None:
        self._engine = engine
        self._max = max_entries
        self._cache: dict[int, tuple[int, int, str]] = {}

    def cached(self, token: TrackingToken) -> str | None:
        """The destination if it is in memory and belongs to the token's message."""
        found = self._cache.get(token.link_id)
        return self._check(found, token)

    def lookup(self, token: TrackingToken) -> str | None:
        """The destination (database on a cache miss), or None if the link is not the token's."""
        found = self._cache.get(token.link_id)
        if found is None:
            with self._engine.connect() as conn:
                row = conn.execute(select(tracking_links.c.account_id, tracking_links.c.mailing_id,
                                          tracking_links.c.url)
                                   .where(tracking_links.c.id == token.link_id)).one_or_none()
            if row is None:
                return None
            if len(self._cache) >= self._max:
                self._cache.clear()
            found = (int(row.account_id), int(row.mailing_id), str(row.url))
            self._cache[token.link_id] = found
        return self._check(found, token)

    @staticmethod
    def _check(found: tuple[int, int, str] | None, token: TrackingToken) -> str | None:
        if found is None or found[0] != token.account_id or found[1] != token.mailing_id:
            return None
        return found[2]
