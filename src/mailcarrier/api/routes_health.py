"""Liveness and authentication probes."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel

from mailcarrier.api.auth import Principal, require_scopes

__all__ = ["router"]

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str


class WhoAmI(BaseModel):
    account_id: int
    key_prefix: str
    scopes: list[str]


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up and serving (no database round trip, so probes stay cheap)."""
    return Health(status="ok")


@router.get("/api/v1/whoami", response_model=WhoAmI)
def whoami(principal: Principal = Depends(require_scopes())) -> WhoAmI:
    """The account and scopes of the presented API key."""
    return WhoAmI(account_id=principal.account_id, key_prefix=principal.key_prefix,
                  scopes=sorted(principal.scopes))
