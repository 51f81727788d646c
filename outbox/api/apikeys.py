"""/v1/api-keys: the workspace's API keys, for its admins (admin scope).
The same services as `outbox apikey` (outbox/admin/apikeys.py).

A new key is in the answer to its creation and nowhere else, ever: only its
hash is stored.
"""

from __future__ import annotations

import structlog
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.concurrency import run_in_threadpool

from outbox.admin.access import DEFAULT_KEY_SCOPES
from outbox.admin.apikeys import (
    ApiKeyInfo,
    NewApiKey,
    create_api_key,
    list_api_keys,
    revoke_api_key,
)
from outbox.api.auth import Admin
from outbox.api.body import parse_model, read_body
from outbox.api.context import context
from outbox.api.schemas import ApiKey, ApiKeyCreated, ApiKeyList, error_responses, request_body
from outbox.states import Scope

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1/api-keys", tags=["api-keys"])

_DEFAULT_SCOPES = sorted(DEFAULT_KEY_SCOPES)


class NewKey(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: StrictStr | None = Field(default=None, description="what the key is for")
    scopes: list[Scope] = Field(default_factory=lambda: list(_DEFAULT_SCOPES), min_length=1,
                                description="default: read, send")


@router.get("", response_model=ApiKeyList, responses=error_responses())
async def get_api_keys(request: Request, principal: Admin) -> ApiKeyList:
    """Every key of the workspace, revoked ones too (never the key)."""
    ctx = context(request)

    def run() -> list[ApiKeyInfo]:
        with ctx.transaction() as session:
            return list_api_keys(session, workspace_id=principal.workspace_id)

    return ApiKeyList(api_keys=[_key(k) for k in await run_in_threadpool(run)])


@router.post("", status_code=201, response_model=ApiKeyCreated,
             openapi_extra=request_body(NewKey), responses=error_responses(body=True))
async def post_api_key(request: Request, principal: Admin) -> ApiKeyCreated:
    """A new key: `key` is in this answer only; store it now."""
    body = parse_model(NewKey, await read_body(request))
    ctx = context(request)

    def run() -> NewApiKey:
        with ctx.transaction() as session:
            return create_api_key(session, workspace_id=principal.workspace_id, name=body.name,
                                  scopes=frozenset(body.scopes))

    new = await run_in_threadpool(run)
    log.info("api_key_created", api_key_id=str(new.id), workspace_id=new.workspace_id)
    return ApiKeyCreated(id=new.id, workspace_id=new.workspace_id, name=body.name,
                         prefix=new.prefix, scopes=sorted(new.scopes), key=new.key)


@router.delete("/{key_id}", status_code=204, responses=error_responses())
async def delete_api_key(key_id: str, request: Request, principal: Admin) -> Response:
    """Revoke a key: requests with it are refused from now on."""
    ctx = context(request)

    def run() -> None:
        with ctx.transaction() as session:
            revoke_api_key(session, key_id, workspace_id=principal.workspace_id)

    await run_in_threadpool(run)
    log.info("api_key_revoked", api_key_id=key_id[:40], workspace_id=principal.workspace_id)
    return Response(status_code=204)


def _key(k: ApiKeyInfo) -> ApiKey:
    return ApiKey(id=k.id, workspace_id=k.workspace_id, name=k.name, prefix=k.prefix,
                  scopes=sorted(k.scopes), created_at=k.created_at, revoked_at=k.revoked_at)
