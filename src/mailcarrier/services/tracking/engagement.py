"""The engagement report of a mailing: opens and clicks, people and machines apart, per link."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, case, func, select

from mailcarrier.domain.machine_activity import (
    VerdictKind,
)
from mailcarrier.storage.tracking_tables import tracking_hits, tracking_links

__all__ = ["Counts", "LinkEngagement", "MailingEngagement", "mailing_engagement"]

# --- reports --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Counts:
    """Human and machine (scanners, Apple MPP, proxies) hits: unique messages and total hits."""

    human_unique: int = 0
    human_total: int = 0
    machine_unique: int = 0
    machine_total: int = 0


@dataclass(frozen=True, slots=True)
class LinkEngagement:
    link_id: int
    number: int
    url: str
    clicks: Counts


@dataclass(frozen=True, slots=True)
class MailingEngagement:
    mailing_id: int
    opens: Counts
    clicks: Counts
    by_verdict: Mapping[str, int]
    links: tuple[LinkEngagement, ...]


def _counts(rows: Sequence[Any]) -> Counts:
    values = {"human": (0, 0), "machine": (0, 0)}
    for row in rows:
        values["human" if row.human else "machine"] = (int(row.unique), int(row.total))
    return Counts(values["human"][0], values["human"][1], values["machine"][0], values["machine"][1])


def mailing_engagement(engine: Engine, account_id: int, mailing_id: int) -> MailingEngagement:
    """Opens and clicks of a mailing, human and machine apart, overall and per link."""
    is_human = case((tracking_hits.c.verdict == VerdictKind.HUMAN.value, 1), else_=0).label("human")
    scope = (tracking_hits.c.account_id == account_id, tracking_hits.c.mailing_id == mailing_id,
             tracking_hits.c.verdict.is_not(None))
    with engine.connect() as conn:
        overall = conn.execute(
            select(tracking_hits.c.kind, is_human,
                   func.count(func.distinct(tracking_hits.c.delivery_id)).label("unique"),
                   func.count().label("total"))
            .where(*scope).group_by(tracking_hits.c.kind, is_human)).all()
        per_link = conn.execute(
            select(tracking_hits.c.link_id, is_human,
                   func.count(func.distinct(tracking_hits.c.delivery_id)).label("unique"),
                   func.count().label("total"))
            .where(*scope, tracking_hits.c.kind == "click")
            .group_by(tracking_hits.c.link_id, is_human)).all()
        verdicts = conn.execute(select(tracking_hits.c.verdict, func.count())
                                .where(*scope).group_by(tracking_hits.c.verdict)).all()
        links = conn.execute(select(tracking_links.c.id, tracking_links.c.number, tracking_links.c.url)
                             .where(tracking_links.c.account_id == account_id,
                                    tracking_links.c.mailing_id == mailing_id)
                             .order_by(tracking_links.c.number)).all()
    return MailingEngagement(
        mailing_id=mailing_id,
        opens=_counts([r for r in overall if r.kind == "open"]),
        clicks=_counts([r for r in overall if r.kind == "click"]),
        by_verdict={str(v): int(n) for v, n in verdicts},
        links=tuple(LinkEngagement(int(link.id), int(link.number), link.url,
                                   _counts([r for r in per_link if r.link_id == link.id]))
                    for link in links),
    )
