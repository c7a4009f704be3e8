"""``mailcarrier bounces import / list / reprocess / show`` against a real SQLite file."""

from __future__ import annotations

import json
import mailbox
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailcarrier.cli import bounces_cmd
from mailcarrier.storage.engine import make_engine
from tests.inbound.factory import BOUNCE_DOMAIN, KEY, arf, contact, delivery, dsn, make_world

CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus" / "bounces"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"MAILCARRIER_DATABASE_URL": f"sqlite:///{tmp_path / 'mc.db'}",
            "MAILCARRIER_SECRET_KEY": KEY.decode(), "MAILCARRIER_BOUNCE_DOMAIN": BOUNCE_DOMAIN,
            "MAILCARRIER_DATA_DIR": str(tmp_path), "COLUMNS": "200"}


def invoke(env: dict[str, str], *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(bounces_cmd.app, list(args), env=env)
    return result.exit_code, result.output


def test_import_eml_mbox_and_maildir_then_list_and_reprocess(tmp_path: Path, env: dict[str, str]) -> None:
    engine = make_engine(env["MAILCARRIER_DATABASE_URL"])
    world = make_world(engine, ["ann@aol.test", "bob@aol.test", "cy@aol.test"])
    ann, bob, cy = (world.sent[a] for a in ("ann@aol.test", "bob@aol.test", "cy@aol.test"))
    (tmp_path / "one.eml").write_bytes(dsn(to=ann.return_path, recipient=ann.email))
    box = mailbox.mbox(tmp_path / "box.mbox")
    box.add(arf(to="fbl@sender.test", recipient=bob.email, message_id=bob.message_id))
    box.add(b"From: someone@else.test\r\nSubject: hello\r\n\r\nnot a bounce\r\n")
    box.flush()
    box.close()
    maildir = mailbox.Maildir(tmp_path / "md", create=True)
    maildir.add(dsn(to=cy.return_path, recipient=cy.email, status="4.2.2", diagnostic="smtp; 452 4.2.2 full"))
    code, out = invoke(env, "import", str(tmp_path / "one.eml"), str(tmp_path / "box.mbox"), str(tmp_path / "md"))
    assert code == 0, out
    assert "stored 4 emails" in out
    assert delivery(engine, ann.delivery_id)["state"] == "bounced_hard"
    assert contact(engine, bob.contact_id)["status"] == "opted_out"
    assert delivery(engine, cy.delivery_id)["state"] == "bounced_soft"
    code, out = invoke(env, "list", "--unmatched", "--format", "jsonl")
    [unmatched] = [json.loads(line) for line in out.splitlines()]
    assert unmatched["kind"] == "other" and unmatched["origin"].endswith("box.mbox#2")
    code, out = invoke(env, "list")
    assert code == 0 and "verp" in out and "message_id" in out
    code, out = invoke(env, "reprocess", "--all")
    assert code == 0 and "4 emails queued again" in out
    assert contact(engine, cy.contact_id)["consecutive_soft_bounces"] == 1  # not counted twice
    code, out = invoke(env, "show", str(unmatched["id"]))
    assert code == 0 and "not a bounce" in out
    engine.dispose()


def test_missing_path_exits_4_partial_but_imports_the_rest(tmp_path: Path, env: dict[str, str]) -> None:
    engine = make_engine(env["MAILCARRIER_DATABASE_URL"])
    make_world(engine, ["ann@aol.test"])
    (tmp_path / "x.eml").write_bytes(b"garbage without headers")
    code, out = invoke(env, "import", str(tmp_path / "nope"), str(tmp_path / "x.eml"))
    assert code == 4  # partly done
    code, out = invoke(env, "list", "--failed", "--format", "jsonl")
    assert [json.loads(line)["state"] for line in out.splitlines()] == ["failed"]
    engine.dispose()


@pytest.mark.skipif(not CORPUS.exists(), reason="shared corpus not present")
def test_whole_corpus_imports_without_crash_or_pending_left(env: dict[str, str]) -> None:
    engine = make_engine(env["MAILCARRIER_DATABASE_URL"])
    make_world(engine, ["ann@aol.test"])
    code, out = invoke(env, "import", str(CORPUS / "maildir"), str(CORPUS / "mailbox"))
    assert code == 0, out
    code, out = invoke(env, "list", "--state", "pending", "--format", "jsonl")
    assert out.strip() == ""
    code, out = invoke(env, "list", "--limit", "5000", "--format", "jsonl")
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) > 400
    assert {r["kind"] for r in rows} >= {"bounce", "complaint", "autoreply", "other"}
    assert delivery(engine, 1)["state"] == "delivered"  # nothing in the corpus is ours
    engine.dispose()
