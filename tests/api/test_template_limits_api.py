"""POST /api/v1/mailings refuses a template that would blow the render limits (issue 17).

Before: ``html: "{{ 'a' * 1000000000 }}"`` returned 201 and the server reached 4.1 GB.
"""

from __future__ import annotations

import tracemalloc

import httpx
from sqlalchemy import Engine

from mailcarrier.storage.api_keys import create_api_key
from tests.api.conftest import T0


async def test_huge_template_is_a_422_problem_and_allocates_nothing(client: httpx.AsyncClient, db: Engine,
                                                                    account_id: int) -> None:
    with db.begin() as conn:
        _, key = create_api_key(conn, account_id, "m", ["mailings:write"], T0)
    body = {"from_address": "news@shop.example", "subject": "Hi", "html": "{{ 'a' * 1000000000 }}"}
    tracemalloc.start()
    try:
        r = await client.post("/api/v1/mailings", json=body, headers={"Authorization": f"Bearer {key}"})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert r.status_code == 422, r.text
    assert "1,000,000,000 characters" in r.json()["detail"] and "html template" in r.json()["detail"]
    assert peak < 60_000_000
    body["html"] = "{{ 'a' * 10 }}"
    assert (await client.post("/api/v1/mailings", json=body,
                              headers={"Authorization": f"Bearer {key}"})).status_code == 201
