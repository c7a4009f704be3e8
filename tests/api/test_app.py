"""The application skeleton: problem+json errors and API-key authentication over HTTP."""

from __future__ import annotations

import threading
import time

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from sqlalchemy import Engine, event, select

from mailcarrier.api.auth import KEY_CACHE_SECONDS, Principal, has_scope, require_scopes
from mailcarrier.domain.errors import ConflictError
from mailcarrier.storage import api_keys as key_repo
from mailcarrier.storage.engine import write_transaction
from mailcarrier.storage.tables import api_keys
from tests.api.conftest import T0, Clock


def _issue(db: Engine, account_id: int, *scopes: str) -> str:
    with db.begin() as conn:
        _key, plain = key_repo.create_api_key(conn, account_id, "ci", scopes, T0)
    return plain


async def test_health_and_unknown_path_is_problem_json(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"status": "ok"}
    missing = await client.get("/nope")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    body = missing.json()
    assert body["status"] == 404 and body["title"] == "Not Found" and body["type"] == "about:blank"


async def test_api_key_required_and_checked(client: httpx.AsyncClient, db: Engine,
        account_id: int) -> None:
    none = await client.get("/api/v1/whoami")
    assert none.status_code == 401 and none.headers["www-authenticate"].startswith("Bearer")
    assert none.headers["content-type"] == "application/problem+json"
    plain = _issue(db, account_id, "contacts:read")
    ok = await client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {plain}"})
    assert ok.status_code == 200
    assert ok.json() == {"account_id": account_id, "key_prefix": plain.split("_")[1],
                         "scopes": ["contacts:read"]}
    via_header = await client.get("/api/v1/whoami", headers={"X-API-Key": plain})
    assert via_header.status_code == 200
    altered = plain[:-1] + ("A" if plain[-1] != "A" else "B")
    for bad in (altered, "mc_nothex_x", "garbage", plain + "x"):
        response = await client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {bad}"})
        assert response.status_code == 401, bad


async def test_key_stored_hashed_and_last_use_recorded(app: FastAPI, client: httpx.AsyncClient, db: Engine,
        clock: Clock, account_id: int) -> None:
    plain = _issue(db, account_id, "*")
    with db.connect() as conn:
        row = conn.execute(select(api_keys)).one()
    assert plain not in (row.key_hash, row.prefix) and row.key_hash == key_repo.hash_key(plain)
    assert row.last_used_at is None
    clock.advance(minutes=5)
    first_use = clock.now
    await client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {plain}"})
    app.state.key_uses.wait(10)
    with db.connect() as conn:
        assert conn.execute(select(api_keys.c.last_used_at)).scalar_one() == first_use
    # At most once a minute per key: uses within the minute write nothing, a later one does.
    writes: list[str] = []
    event.listen(db, "before_cursor_execute",
                 lambda *args: writes.append(args[2]) if args[2].startswith("UPDATE api_keys") else None)
    for _ in range(3):
        clock.advance(seconds=KEY_CACHE_SECONDS + 10)
        assert (await client.get("/api/v1/whoami", headers={"X-API-Key": plain})).status_code == 200
        app.state.key_uses.wait(10)
    assert writes == []
    clock.advance(seconds=30)
    await client.get("/api/v1/whoami", headers={"X-API-Key": plain})
    app.state.key_uses.wait(10)
    assert len(writes) == 1
    with db.connect() as conn:
        assert conn.execute(select(api_keys.c.last_used_at)).scalar_one() == clock.now


async def test_reads_answer_while_the_write_lock_is_held(app: FastAPI, client: httpx.AsyncClient, db: Engine,
        clock: Clock, account_id: int) -> None:
    """Before, authentication wrote last_used_at in the request's own transaction: during a
    worker's or an import's write every API call failed with 500 "database is locked" (18 of
    20) or waited the busy timeout."""
    if db.dialect.name != "sqlite":
        pytest.skip("SQLite's single write lock")
    keys = [_issue(db, account_id, "*") for _ in range(20)]
    locked, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db.connect() as conn:
            conn.exec_driver_sql("COMMIT")
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            locked.set()
            release.wait(60)
            conn.exec_driver_sql("COMMIT")

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert locked.wait(5)
        started = time.perf_counter()
        statuses = [(await client.get("/api/v1/whoami", headers={"X-API-Key": k})).status_code for k in keys]
        elapsed = time.perf_counter() - started
    finally:
        release.set()
        holder.join()
    assert statuses == [200] * 20 and elapsed < 5
    app.state.key_uses.wait(60)
    with db.connect() as conn:
        assert set(conn.execute(select(api_keys.c.last_used_at)).scalars()) == {clock.now}


async def test_revoked_key_refused(client: httpx.AsyncClient, db: Engine,
        account_id: int) -> None:
    plain = _issue(db, account_id, "*")
    with write_transaction(db) as conn:
        key_repo.revoke_api_key(conn, account_id, plain.split("_")[1], T0)
        key_repo.revoke_api_key(conn, account_id, plain.split("_")[1], T0)
    response = await client.get("/api/v1/whoami", headers={"Authorization": f"Bearer {plain}"})
    assert response.status_code == 401


async def test_revocation_applies_once_the_verified_key_cache_expires(
        client: httpx.AsyncClient, db: Engine, clock: Clock, account_id: int) -> None:
    plain = _issue(db, account_id, "*")
    headers = {"Authorization": f"Bearer {plain}"}
    assert (await client.get("/api/v1/whoami", headers=headers)).status_code == 200
    with write_transaction(db) as conn:  # BEGIN IMMEDIATE: the key-use flusher may be writing too
        key_repo.revoke_api_key(conn, account_id, plain.split("_")[1], T0)
    # remembered for KEY_CACHE_SECONDS of the app's clock, then checked against the store again
    assert (await client.get("/api/v1/whoami", headers=headers)).status_code == 200
    clock.advance(seconds=KEY_CACHE_SECONDS)
    assert (await client.get("/api/v1/whoami", headers=headers)).status_code == 401
    assert (await client.get("/api/v1/whoami", headers=headers)).status_code == 401


async def test_scope_checks_and_domain_errors(app: FastAPI, client: httpx.AsyncClient,
                                              db: Engine,
        account_id: int) -> None:
    extra = APIRouter()

    @extra.post("/t/write")
    def write(principal: Principal = Depends(require_scopes("mailings:write"))) -> dict[str, int]:
        return {"account": principal.account_id}

    @extra.get("/t/conflict")
    def conflict() -> None:
        raise ConflictError("already there")

    @extra.get("/t/boom")
    def boom() -> None:
        raise RuntimeError("secret internals")

    app.include_router(extra)
    reader = _issue(db, account_id, "mailings:read")
    writer = _issue(db, account_id, "mailings:*")
    denied = await client.post("/t/write", headers={"Authorization": f"Bearer {reader}"})
    assert denied.status_code == 403 and denied.json()["missing_scopes"] == ["mailings:write"]
    allowed = await client.post("/t/write", headers={"Authorization": f"Bearer {writer}"})
    assert allowed.status_code == 200
    conflicted = await client.get("/t/conflict")
    assert conflicted.status_code == 409 and conflicted.json()["detail"] == "already there"
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://mc.test") as raw:
        crashed = await raw.get("/t/boom")
    assert crashed.status_code == 500 and "secret" not in crashed.text
    assert crashed.headers["content-type"] == "application/problem+json"


def test_scope_rules() -> None:
    assert has_scope(frozenset({"*"}), "contacts:write")
    assert has_scope(frozenset({"contacts:write"}), "contacts:read")
    assert not has_scope(frozenset({"contacts:read"}), "contacts:write")
    assert has_scope(frozenset({"contacts:*"}), "contacts:write")
    assert not has_scope(frozenset({"contacts:*"}), "mailings:read")
