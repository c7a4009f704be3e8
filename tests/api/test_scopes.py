"""API key scopes are a closed set (issue 17): unknown names are refused where keys are made and
where routes declare them; a legacy stored scope outside the set grants nothing."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import Engine, update

from mailcarrier.api.auth import require_scopes
from mailcarrier.domain.scopes import Scope, UnknownScopeError, grants, parse_scopes
from mailcarrier.storage import api_keys as key_repo
from mailcarrier.storage.tables import api_keys
from tests.api.conftest import T0


def test_parse_scopes_refuses_unknown_names_and_lists_the_allowed_ones() -> None:
    assert parse_scopes(["contacts:read", " *", "", "mailings:*"]) == {
        Scope.CONTACTS_READ, Scope.ALL, Scope.MAILINGS_ALL}
    with pytest.raises(UnknownScopeError, match=r"'a\.csv'.*contacts:read"):
        parse_scopes(["a.csv"])
    with pytest.raises(UnknownScopeError):
        parse_scopes(["contact:read"])  # a typo


def test_grants_follow_the_documented_rules() -> None:
    assert grants({"*"}, Scope.CONTACTS_WRITE)
    assert grants({"contacts:write"}, Scope.CONTACTS_READ)
    assert not grants({"contacts:read"}, Scope.CONTACTS_WRITE)
    assert grants({"contacts:*"}, Scope.CONTACTS_WRITE)
    assert not grants({"a.csv", "contact:*"}, Scope.CONTACTS_READ)


def test_a_misspelt_route_scope_fails_when_declared() -> None:
    with pytest.raises(ValueError, match="contact:read"):
        require_scopes("contact:read")


def test_storage_refuses_to_issue_a_key_with_an_unknown_scope(db: Engine, account_id: int) -> None:
    with db.begin() as conn, pytest.raises(UnknownScopeError):
        key_repo.create_api_key(conn, account_id, "x", ["contacts:read", "a.csv"], T0)
    with db.connect() as conn:
        assert key_repo.list_api_keys(conn, account_id) == []


async def test_a_legacy_unknown_scope_grants_nothing(client: httpx.AsyncClient, db: Engine,
                                                     account_id: int) -> None:
    with db.begin() as conn:
        key, plain = key_repo.create_api_key(conn, account_id, "old", ["reports:read"], T0)
        conn.execute(update(api_keys).where(api_keys.c.id == key.id).values(scopes=["a.csv"]))
    r = await client.get("/api/v1/audiences", headers={"Authorization": f"Bearer {plain}"})
    assert r.status_code == 403
