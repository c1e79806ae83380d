"""Typed dependencies of the routes: the service (model pool, batcher, inference) and the admin guard."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, HTTPException, Query, Request

from app.schemas import VERSION_DESCRIPTION, OutputFormat
from app.service import Service


async def get_service(request: Request) -> Service:
    """The service built by the lifespan (async: FastAPI would run a plain def on a thread)."""
    return request.app.state.service


ServiceDep = Annotated[Service, Depends(get_service)]
VersionQuery = Annotated[
    str | None, Query(max_length=32, description=VERSION_DESCRIPTION, examples=["v0001"])
]
FormatQuery = Annotated[OutputFormat, Query(description="png (default) or json")]


async def require_admin(request: Request, service: ServiceDep) -> None:
    """Allow the call only with `Authorization: Bearer <admin_token>` (constant-time comparison)."""
    token = service.settings.admin_token
    if token is None:  # admin routes are not mounted then; this is belt and braces
        raise HTTPException(404, "Not Found")
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    expected = token.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise HTTPException(401, "missing or wrong admin token", headers={"WWW-Authenticate": "Bearer"})


AdminDep = Depends(require_admin)
