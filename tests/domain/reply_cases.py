"""The reply test cases of tests/domain/data/replies.toml, as evidence the classifier reads."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from mailcarrier.domain import SMTPStage, parse_reply
from mailcarrier.domain.evidence import Evidence
from mailcarrier.domain.vocabulary import BounceType, Category, Reason

DATA = Path(__file__).parent / "data" / "replies.toml"


@dataclass(frozen=True)
class ReplyCase:
    stage: SMTPStage
    reply: str
    reason: Reason
    action: str
    source: str
    remote_host: str = ""
    #: Seed 001's category and bounce type the reply must get, where the case states them.
    category: Category | None = None
    bounce_type: BounceType | None = None

    def evidence(self) -> Evidence:
        text = self.reply
        dtype = "smtp"
        if text[:7].lower() == "x-unix;":
            dtype, text = "x-unix", text[7:].strip()
        if text[:3].isdigit():
            return Evidence.of_reply(parse_reply(text, self.stage), action=self.action, diagnostic_type=dtype,
                                     remote_host=self.remote_host)
        return Evidence(text, None, self.stage, dtype, self.action, remote_host=self.remote_host)


def reply_cases() -> list[ReplyCase]:
    doc = tomllib.loads(DATA.read_text(encoding="utf-8"))
    return [ReplyCase(SMTPStage(r["stage"]), r["reply"], Reason(r["reason"]), r.get("action", ""), r["source"],
                      r.get("remote_host", ""),
                      Category(r["category"]) if "category" in r else None,
                      BounceType(r["type"]) if "type" in r else None) for r in doc["reply"]]
