"""POST /v1/sessions (sign in), GET /v1/sessions/current, DELETE /v1/sessions
(sign out): console users' sessions (outbox/admin/sessions.py).

Signing in answers the token in the body (for `Authorization: Bearer`) and
sets it as the SESSION_COOKIE: HttpOnly (page scripts can't read it),
SameSite=Strict (another site's form or fetch doesn't carry it, so it can't
make requests on the user's behalf), Secure when the service is reached over
HTTPS. Attempts are limited per account and per client address before the
password is checked (outbox/api/limits.py); every failure is the same 401.

The answer also carries the session's `csrf_token` (GET /current repeats
it), which a request authenticated by the cookie that changes state sends in
X-CSRF-Token (outbox/api/auth.py). A browser's sign-in from another site is
refused (403 csrf_failed: its Origin or Sec-Fetch-Site says so), so no page
can sign a visitor in to an account of its choosing; signing in over an old
session cookie ends that session, so a session id planted before sign-in is
worthless (fixation).
"""

from __future__ import annotations

import uuid
from urllib.parse import urlsplit

import structlog
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, StrictStr
from starlette.concurrency import run_in_threadpool

from outbox.admin.access import Principal
from outbox.admin.apikeys import bearer_token
from outbox.admin.sessions import (
    SESSION_TTL_SECONDS,
    NewSession,
    csrf_token,
    sign_in,
    sign_out,
    sign_out_token,
    user_of_session,
)
from outbox.admin.users import UserInfo, normalize_email
from outbox.api.auth import SESSION_COOKIE, Caller
from outbox.api.body import parse_model, read_body
from outbox.api.context import context
from outbox.api.schemas import CurrentSession, SessionCreated, SessionUser, error_responses
from outbox.db.models import DEFAULT_WORKSPACE
from outbox.errors import CsrfFailed, InvalidInput
from outbox.states import Role

log = structlog.get_logger(__name__)

router = APIRouter(prefix="/v1/sessions", tags=["sessions"])


class SignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workspace_id: StrictStr = DEFAULT_WORKSPACE
    email: StrictStr
    password: StrictStr


_SIGN_IN_BODY = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": SignIn.model_json_schema()}}}}


@router.post("", status_code=201, response_model=SessionCreated, openapi_extra=_SIGN_IN_BODY,
             responses=error_responses(body=True))
async def create_session(request: Request, response: Response) -> SessionCreated:
    """Sign in with email and password: the session token (also set as a cookie)."""
    _check_same_origin(request)
    body = parse_model(SignIn, await read_body(request))
    ctx = context(request)
    old = request.cookies.get(SESSION_COOKIE)
    address = request.client.host if request.client else "unknown"
    ctx.login_limits.check(address, (body.workspace_id, _account(body.email)))

    def run() -> NewSession:
        with ctx.transaction() as session:
            new = sign_in(session, workspace_id=body.workspace_id, email=body.email,
                          password=body.password)
            if old:
                sign_out_token(session, old)
            return new

    new = await run_in_threadpool(run)
    log.info("signed_in", workspace_id=new.user.workspace_id, user_id=str(new.user.id))
    response.set_cookie(SESSION_COOKIE, new.token, max_age=SESSION_TTL_SECONDS, path="/",
                        httponly=True, samesite="strict", secure=_https(request))
    return SessionCreated(token=new.token, expires_at=new.expires_at,
                          csrf_token=csrf_token(new.token), user=_user(new.user),
                          scopes=sorted(new.user.scopes))


@router.get("/current", response_model=CurrentSession, responses=error_responses())
async def current_session(request: Request, principal: Caller) -> CurrentSession:
    """Who the session belongs to (the user, their role), what it may do, and
    its `csrf_token`."""
    session_id = _session_of(principal)
    ctx = context(request)

    def run() -> UserInfo:
        with ctx.transaction() as session:
            return user_of_session(session, session_id)

    user = await run_in_threadpool(run)
    token = bearer_token(request.headers.get("authorization")) or (
        request.cookies.get(SESSION_COOKIE, ""))
    return CurrentSession(workspace_id=principal.workspace_id, user_id=user.id,
                          user=_user(user), scopes=sorted(user.scopes),
                          csrf_token=csrf_token(token))


@router.delete("", status_code=204, responses=error_responses())
async def delete_session(request: Request, principal: Caller) -> Response:
    """Sign out: the session (the bearer token's, or the cookie's) ends now."""
    ctx = context(request)
    session_id = _session_of(principal)

    def run() -> None:
        with ctx.transaction() as session:
            sign_out(session, session_id)

    await run_in_threadpool(run)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict",
                           secure=_https(request))
    return response


def _check_same_origin(request: Request) -> None:
    """A browser says where a request comes from (Origin, Sec-Fetch-Site); a
    sign-in from another site is refused. Programs send neither header."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        raise CsrfFailed("sign-in from another site refused")
    origin = request.headers.get("origin")
    if origin is None:
        return
    public = context(request).settings.public_url
    allowed = {request.headers.get("host", "")}
    if public:
        allowed.add(urlsplit(public).netloc)
    if urlsplit(origin).netloc not in allowed:
        raise CsrfFailed("sign-in from another site refused")


def _account(email: str) -> str:
    """What the per-account limit counts: the address as stored, or the raw
    text when it isn't one (sign_in refuses it, but the attempt counts)."""
    try:
        return normalize_email(email)
    except InvalidInput:
        return email[:300]


def _session_of(principal: Principal) -> uuid.UUID:
    if principal.session_id is None:
        raise InvalidInput("this request is authenticated with an API key, not a session "
                           "(revoke keys with: outbox apikey revoke)")
    return principal.session_id


def _user(user: UserInfo) -> SessionUser:
    return SessionUser(id=user.id, workspace_id=user.workspace_id, email=user.email,
                       role=Role(user.role))


def _https(request: Request) -> bool:
    public = context(request).settings.public_url or ""
    return request.url.scheme == "https" or public.startswith("https://")
