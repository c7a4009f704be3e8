"""The calling account's own policy: contact policy preset and thresholds."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from mailcarrier.api.auth import Principal, require_scopes
from mailcarrier.api.context import AppContext, app_context
from mailcarrier.api.problems import ProblemError
from mailcarrier.services.policies import ACCOUNT_THRESHOLDS, contact_policy, validate_thresholds
from mailcarrier.storage import accounts as account_repo
from mailcarrier.storage.engine import write_transaction

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/account", tags=["account"])


class AccountPolicyView(BaseModel):
    contact_policy: str = Field(description=(
        "What a hard bounce does to a contact: 'marketo' (default; seed 001: category 2 "
        "invalid at once, category 1 counted until it repeats) or 'emma' (seed 003: every "
        "hard bounce moves the contact to error)."))
    thresholds: dict[str, Any] = Field(description=(
        "The account's own thresholds; unset ones are the operator's. Names: "
        + ", ".join(ACCOUNT_THRESHOLDS)))


class AccountPolicyChange(BaseModel):
    contact_policy: str | None = Field(None, max_length=16)
    thresholds: dict[str, Any] | None = Field(None, description=(
        "Replaces the account's thresholds (a null value removes one)."))


@router.get("/policy", response_model=AccountPolicyView)
def get_policy(who: Principal = Depends(require_scopes("account:read")),
               ctx: AppContext = Depends(app_context)) -> AccountPolicyView:
    """The account's contact policy preset and its own thresholds."""
    with ctx.engine.connect() as conn:
        own = account_repo.account_policies(conn, [who.account_id])[who.account_id]
    return AccountPolicyView(contact_policy=own.contact_policy, thresholds=own.thresholds)


@router.put("/policy", response_model=AccountPolicyView)
def put_policy(body: AccountPolicyChange, who: Principal = Depends(require_scopes("account:write")),
               ctx: AppContext = Depends(app_context)) -> AccountPolicyView:
    """Change the preset and/or replace the thresholds; 422 names what is wrong."""
    try:
        preset = contact_policy(body.contact_policy).value if body.contact_policy is not None else None
        thresholds = validate_thresholds(body.thresholds) if body.thresholds is not None else None
    except ValueError as exc:
        raise ProblemError(422, str(exc)) from exc
    with write_transaction(ctx.engine) as conn:
        own = account_repo.set_account_policy(conn, who.account_id, contact_policy=preset,
                                              thresholds=thresholds)
    return AccountPolicyView(contact_policy=own.contact_policy, thresholds=own.thresholds)
