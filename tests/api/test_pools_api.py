"""The pools API on real databases: an account sees its own pool, the automation's actions on
its IPs and the reputation events that touched it (neighbours anonymous), reports trap hits
and listings, applies for trusted; scopes and tenant isolation hold."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import Engine

from mailcarrier.domain.dns_checks import Check, CheckStatus
from mailcarrier.domain.warmup import load_schedules
from mailcarrier.services.pools import membership, throttling
from mailcarrier.services.pools import reputation as pool_reputation
from mailcarrier.services.pools import warmup as pool_warmup
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.api_keys import create_api_key

from .conftest import T0

TSS04 = "421 4.7.0 [TSS04] Messages from {ip} to fan@yahoo.com temporarily deferred due to user complaints"
CAP = load_schedules()["conservative"].daily[0]
BEFORE = T0 - timedelta(days=10)


@dataclass
class Keys:
    read: dict[str, str]
    write: dict[str, str]
    other: dict[str, str]
    solo: dict[str, str]
    no_scope: dict[str, str]


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def build(engine: Engine, acme: int) -> Keys:
    """acme and other share pool "apartment" (127.0.0.2 warm, 127.0.0.3 warming); solo has "house"."""
    with engine.begin() as conn:
        other = account_repo.create_account(conn, "other", "Other", BEFORE).id
        solo = account_repo.create_account(conn, "solo", "Solo", BEFORE).id
        membership.create_pool(conn, "apartment", "shared", BEFORE)
        membership.add_ip(conn, "apartment", "127.0.0.2", BEFORE, schedule=load_schedules()["standard"], warm=True)
        membership.add_ip(conn, "apartment", "127.0.0.3", T0, schedule=load_schedules()["conservative"])
        membership.create_pool(conn, "house", "dedicated", BEFORE)
        membership.add_ip(conn, "house", "127.0.0.9", BEFORE, schedule=load_schedules()["standard"], warm=True)
        for account in (acme, other):
            membership.assign_account(conn, account, "apartment", BEFORE)
        membership.assign_account(conn, solo, "house", BEFORE)
        for _ in range(3):
            pool_warmup.record_send(conn, "127.0.0.3", "default", T0)
        listed = Check("DNSBL bl.test for 127.0.0.2", CheckStatus.FAIL, "listed: 127.0.0.2", "delist")
        pool_reputation.record_dnsbl_results(conn, [("127.0.0.2", "bl.test", listed)], T0 - timedelta(days=1))
        pool_reputation.record_reputation_event(conn, "trap", T0 - timedelta(hours=5), source="bounce",
                                    ip_address="127.0.0.2", account_id=other,
                                    evidence="550 5.7.1 spamtrap hit for victim@shop.test")
        pool_reputation.record_reputation_event(conn, "trap", T0 - timedelta(hours=4), source="manual",
                                    ip_address="127.0.0.9", account_id=solo, evidence="solo's trap")
        for ip in ("127.0.0.2", "127.0.0.9"):
            throttling.record_reply_for_throttling(conn, ip, "yahoo.com", T0 - timedelta(minutes=30), delivered=False,
                                            text=TSS04.format(ip=ip))
        keys = [create_api_key(conn, acme, "read", ["pools:read"], BEFORE)[1],
                create_api_key(conn, acme, "write", ["pools:write"], BEFORE)[1],
                create_api_key(conn, other, "other", ["pools:read"], BEFORE)[1],
                create_api_key(conn, solo, "solo", ["*"], BEFORE)[1],
                create_api_key(conn, acme, "reports", ["reports:read"], BEFORE)[1]]
    return Keys(*(_bearer(k) for k in keys))


@pytest.fixture
def keys(db: Engine, account_id: int) -> Keys:
    return build(db, account_id)


async def test_pool_view_shows_own_ips_warmup_and_listings(client: httpx.AsyncClient, keys: Keys) -> None:
    r = await client.get("/api/v1/pools", headers=keys.read)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["name"], body["kind"], body["other_accounts"]) == ("apartment", "shared", 1)
    ips = {ip["address"]: ip for ip in body["ips"]}
    assert set(ips) == {"127.0.0.2", "127.0.0.3"}
    assert ips["127.0.0.2"]["daily_cap"] is None and ips["127.0.0.2"]["listed_on"] == ["bl.test"]
    warming = ips["127.0.0.3"]
    assert (warming["warmup_schedule"], warming["warmup_day"], warming["daily_cap"], warming["sent_today"]) == (
        "conservative", 1, CAP, 3)
    solo = (await client.get("/api/v1/pools", headers=keys.solo)).json()
    assert solo["name"] == "house" and [ip["address"] for ip in solo["ips"]] == ["127.0.0.9"]
    assert solo["other_accounts"] == 0


async def test_throttle_actions_of_own_ips_only_with_addresses_redacted(client: httpx.AsyncClient,
                                                                       keys: Keys) -> None:
    for params in ({}, {"active": "true"}):
        r = await client.get("/api/v1/pools/throttle", headers=keys.read, params=params)
        assert r.status_code == 200, r.text
        [action] = r.json()
        assert (action["ip_address"], action["provider"], action["action"], action["rule"]) == (
            "127.0.0.2", "yahoo", "suspend", "yahoo-tss04")
        assert action["in_force"] and action["end_reason"] is None
        assert "TSS04" in action["trigger"] and "fan@yahoo.com" not in action["trigger"]
        assert "<address>" in action["trigger"]
    solo = (await client.get("/api/v1/pools/throttle", headers=keys.solo)).json()
    assert [a["ip_address"] for a in solo] == ["127.0.0.9"]


async def test_events_show_neighbours_without_naming_them(client: httpx.AsyncClient, keys: Keys) -> None:
    r = await client.get("/api/v1/pools/events", headers=keys.read)
    assert r.status_code == 200, r.text
    events = r.json()
    assert [(e["kind"], e["source"], e["ip_address"]) for e in events] == [
        ("trap", "bounce", "127.0.0.2"), ("listing", "dnsbl", "127.0.0.2")]
    trap, listing = events
    assert not trap["caused_by_this_account"] and trap["accounts_on_ip"] == 2
    assert trap["evidence"] == ""  # the neighbour's bounce text names its recipient
    assert listing["blocklist"] == "bl.test" and listing["accounts_on_ip"] == 2
    theirs = (await client.get("/api/v1/pools/events", headers=keys.other)).json()
    assert theirs[0]["caused_by_this_account"] and "victim@shop.test" in theirs[0]["evidence"]
    solo = (await client.get("/api/v1/pools/events", headers=keys.solo)).json()
    assert [(e["ip_address"], e["evidence"]) for e in solo] == [("127.0.0.9", "solo's trap")]


async def test_report_trap_and_listing_through_the_api(client: httpx.AsyncClient, keys: Keys) -> None:
    r = await client.post("/api/v1/pools/events", headers=keys.read, json={"kind": "trap"})
    assert r.status_code == 403
    r = await client.post("/api/v1/pools/events", headers=keys.write,
                          json={"kind": "trap", "evidence": "Spamhaus notice SBL-1"})
    assert r.status_code == 201, r.text
    assert r.json()["caused_by_this_account"] and r.json()["source"] == "api"
    assert r.json()["evidence"] == "Spamhaus notice SBL-1" and r.json()["accounts_on_ip"] == 1
    r = await client.post("/api/v1/pools/events", headers=keys.write,
                          json={"kind": "listing", "ip_address": "127.0.0.3", "blocklist": "b.barracuda.test",
                                "occurred_at": (T0 - timedelta(hours=1)).isoformat()})
    assert r.status_code == 201, r.text
    assert r.json()["accounts_on_ip"] == 2 and not r.json()["caused_by_this_account"]
    other_sees = (await client.get("/api/v1/pools/events", headers=keys.other)).json()
    assert any(e["blocklist"] == "b.barracuda.test" for e in other_sees)  # the neighbour sees it too
    refusals = [
        ({"kind": "listing", "ip_address": "127.0.0.9", "blocklist": "x"}, 404, "no sending IP 127.0.0.9"),
        ({"kind": "listing", "blocklist": "x"}, 422, "names the listed IP"),
        ({"kind": "listing", "ip_address": "127.0.0.2"}, 422, "names the blocklist"),
        ({"kind": "trap", "occurred_at": (T0 + timedelta(hours=1)).isoformat()}, 422, "future"),
        ({"kind": "trap", "ip_address": "127.0.0.2", "occurred_at": (BEFORE - timedelta(days=1)).isoformat()},
         422, "before this account joined"),
        ({"kind": "trap", "ip_address": "not-an-ip"}, 422, "not an IP"),
        ({"kind": "spam"}, 422, None),
    ]
    for body, status, detail in refusals:
        r = await client.post("/api/v1/pools/events", headers=keys.write, json=body)
        assert r.status_code == status, (body, r.text)
        assert detail is None or detail in r.json()["detail"], r.text
    solo = (await client.get("/api/v1/pools/events", headers=keys.solo)).json()
    assert len(solo) == 1  # nothing acme reported reached the dedicated pool's owner


async def test_eligibility_and_application(client: httpx.AsyncClient, keys: Keys) -> None:
    r = await client.get("/api/v1/pools/eligibility", headers=keys.read)
    assert r.status_code == 200, r.text
    assert r.json()["eligibility"]["trusted_eligible"] and r.json()["applications"] == []
    await client.post("/api/v1/pools/events", headers=keys.write, json={"kind": "trap"})
    r = await client.post("/api/v1/pools/applications", headers=keys.write, json={"kind": "trusted"})
    assert r.status_code == 201, r.text
    assert r.json()["state"] == "refused" and any("trap" in reason for reason in r.json()["reasons"])
    page = (await client.get("/api/v1/pools/eligibility", headers=keys.read)).json()
    assert not page["eligibility"]["trusted_eligible"] and page["eligibility"]["belongs_in"] == "shared"
    assert [a["id"] for a in page["applications"]] == [r.json()["id"]]
    assert (await client.get("/api/v1/pools/eligibility", headers=keys.other)).json()["applications"] == []


async def test_scopes_are_required(client: httpx.AsyncClient, keys: Keys) -> None:
    for path in ("/api/v1/pools", "/api/v1/pools/throttle", "/api/v1/pools/events", "/api/v1/pools/eligibility"):
        assert (await client.get(path)).status_code == 401
        assert (await client.get(path, headers=keys.no_scope)).status_code == 403
