"""/v1/users: the workspace's console users, for its admins (admin scope).
The same services as `outbox user` (outbox/admin/users.py). Passwords go in
and never come out."""

from __future__ import annotations

import uuid

import structlog
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, StrictStr
from starlette.concurrency import run_in_threadpool

from outbox.admin.users import UserInfo, create_user, disable_user, list_users
from outbox.api.auth import Admin
from outbox.api.body import parse_model, read_body
from outbox.api.context import context
from outbox.api.schemas import User, UserList, error_responses, request_body
from outbox.errors import InvalidInput, NotFound
from outbox.states import Role

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1/users", tags=["users"])


class NewUser(BaseModel):
    model_config = ConfigDict(extra="forbid")

    email: StrictStr
    role: Role
    password: StrictStr = Field(description="12 characters or more")


@router.get("", response_model=UserList, responses=error_responses())
async def get_users(request: Request, principal: Admin) -> UserList:
    """The workspace's users, disabled ones too."""
    ctx = context(request)

    def run() -> list[UserInfo]:
        with ctx.transaction() as session:
            return list_users(session, workspace_id=principal.workspace_id)

    return UserList(users=[user_model(u) for u in await run_in_threadpool(run)])


@router.post("", status_code=201, response_model=User, openapi_extra=request_body(NewUser),
             responses=error_responses(body=True, user_exists="the workspace has a user with "
                                                              "that email"))
async def post_user(request: Request, principal: Admin) -> User:
    """Add a user (role viewer, agent or admin) with a password of 12 or more characters."""
    body = parse_model(NewUser, await read_body(request))
    ctx = context(request)

    def run() -> UserInfo:
        with ctx.transaction() as session:
            return create_user(session, workspace_id=principal.workspace_id, email=body.email,
                               role=body.role, password=body.password)

    user = await run_in_threadpool(run)
    log.info("user_created", user_id=str(user.id), workspace_id=user.workspace_id)
    return user_model(user)


@router.post("/{user_id}/disable", response_model=User, responses=error_responses())
async def post_disable(user_id: str, request: Request, principal: Admin) -> User:
    """Disable a user: their sessions end now and they cannot sign in. An
    admin cannot disable themselves (another admin can)."""
    ctx = context(request)
    try:
        uid = uuid.UUID(user_id)
    except ValueError:
        raise InvalidInput(f"{user_id[:40]!r} is not a user id", field="user_id") from None
    if uid == principal.user_id:
        raise InvalidInput("you cannot disable yourself", field="user_id")

    def run() -> UserInfo:
        with ctx.transaction() as session:
            found = [u for u in list_users(session, workspace_id=principal.workspace_id)
                     if u.id == uid]
            if not found:
                raise NotFound(f"no user {uid}", field="user_id")
            return disable_user(session, workspace_id=principal.workspace_id,
                                email=found[0].email)

    user = await run_in_threadpool(run)
    log.info("user_disabled", user_id=str(user.id), workspace_id=user.workspace_id)
    return user_model(user)


def user_model(u: UserInfo) -> User:
    return User(id=u.id, workspace_id=u.workspace_id, email=u.email, role=Role(u.role),
                created_at=u.created_at, disabled_at=u.disabled_at)
