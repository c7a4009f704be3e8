"""`mailcarrier demo`: offline, on SQLite, one command, every recipient ends final."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import create_engine, select

from mailcarrier.cli.demo_cmd import run_demo
from mailcarrier.storage.tables import deliveries


@pytest.mark.slow
def test_demo_reaches_a_final_state_for_everyone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("MAILCARRIER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    console = Console(record=True, width=120)
    figures = run_demo(tmp_path / "demo", console)
    assert figures.recipients == 74 and figures.suppressed == 1  # 64 sample + 10 gateway staff
    assert figures.queued == 0 and figures.in_progress == 0
    assert figures.final + figures.suppressed == figures.recipients
    assert figures.delivered >= 45 and figures.outcome_unknown == 1
    assert figures.bounced_by_category.get(2, 0) >= 4  # the unknown users
    text = console.export_text()
    assert "mailing 2 'Spring newsletter' (regular, done)" in text
    assert "queued as SBX" in text
    # the gateway faking "user unknown": six staff held as suspected filtering, not invalidated
    assert "6 refusal(s) judged suspected B2B filtering" in text
    assert text.count("@gateway.acme.example") >= 6 and "active" in text
    # the automated welcome went to the two contacts who joined after the send
    assert "automated mailing 1 'Welcome new subscribers': 2 recipient(s), 2 delivered" in text
    engine = create_engine(f"sqlite:///{tmp_path / 'demo' / 'mailcarrier.db'}")
    with engine.connect() as conn:
        aol = conn.execute(select(deliveries.c.state).where(deliveries.c.email.like("aol.%"))).scalars().all()
    engine.dispose()
    assert aol and all(state.startswith("bounced") for state in aol)  # the late DSNs were applied


@pytest.mark.slow
def test_demo_command_runs_from_a_fresh_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILCARRIER_")}
    done = subprocess.run([sys.executable, "-m", "mailcarrier.cli.main", "demo", "--data-dir",
                           str(tmp_path / "d")], cwd=tmp_path, env=env, capture_output=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert b"Spring newsletter" in done.stdout and b"delivered" in done.stdout
