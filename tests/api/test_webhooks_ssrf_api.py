"""POST /api/v1/webhooks refuses internal targets with a problem document (issue 17)."""

from __future__ import annotations

import httpx
from sqlalchemy import Engine

from mailcarrier.storage.api_keys import create_api_key
from tests.api.conftest import T0
from tests.services.test_webhook_ssrf import ISSUE_URLS


async def test_api_refuses_internal_urls_with_a_problem(client: httpx.AsyncClient, db: Engine,
                                                       account_id: int) -> None:
    with db.begin() as conn:
        _, key = create_api_key(conn, account_id, "hooks", ["webhooks:write"], T0)
    auth = {"Authorization": f"Bearer {key}"}
    for url in ISSUE_URLS:
        r = await client.post("/api/v1/webhooks", headers=auth, json={"url": url, "events": ["*"]})
        assert r.status_code == 422, url
        assert "refused" in r.json()["detail"] or "https" in r.json()["detail"], r.json()
    ok = await client.post("/api/v1/webhooks", headers=auth,
                           json={"url": "https://hooks.example.com/in", "events": ["*"]})
    assert ok.status_code == 201
