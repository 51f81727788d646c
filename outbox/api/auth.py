"""Who may call what: API keys and console sessions (per workspace, with
scopes), the cron secret.

Every route declares the scopes it needs (outbox/admin/access.py) with a
parameter type from here: `principal: Reader`, `Sender`, `ChatAgent`,
`Admin`; a caller without them gets 403 insufficient_scope. A credential is
an API key (`Authorization: Bearer wo_...`) or a session token
(`Authorization: Bearer ws_...`, or the SESSION_COOKIE the console carries).

A request that changes state (any method but GET, HEAD, OPTIONS) and is
authenticated by the cookie must carry the session's CSRF token in
CSRF_HEADER (403 csrf_failed otherwise). The cookie is also SameSite=Strict;
the token is the second, independent lock, and it holds where SameSite
doesn't (a sibling subdomain counts as the same site). A request with an
Authorization header carries no cookie credentials, so it needs no token.

Webhook secrets are per channel and checked by outbox.webhooks. Every
comparison of a secret is constant-time.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from functools import cache
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from outbox.admin.access import Principal
from outbox.admin.apikeys import authenticate, bearer_token
from outbox.admin.sessions import authenticate_session, csrf_token, is_session_token
from outbox.api.context import context
from outbox.db.states import Scope
from outbox.errors import CronDisabled, CsrfFailed, Unauthorized

#: The console's session cookie (HttpOnly, SameSite=Strict: see outbox/api/sessions.py).
SESSION_COOKIE = "outbox_session"
#: Where a cookie-authenticated request that changes state puts the session's CSRF token.
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def check_csrf(request: Request, cookie: str) -> None:
    """403 csrf_failed unless a state-changing request carries the CSRF
    token of the session in `cookie` (compared in constant time)."""
    if request.method in SAFE_METHODS:
        return
    presented = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(presented.encode(), csrf_token(cookie).encode()):
        raise CsrfFailed(f"missing or wrong {CSRF_HEADER} header (a request authenticated by "
                         "the session cookie that changes state must carry the session's "
                         "CSRF token: GET /v1/sessions/current)")


async def authenticate_caller(request: Request) -> Principal:
    """The caller, from `Authorization: Bearer <API key or session token>` or,
    without that header, the session cookie; 401 otherwise, 429 when the key
    or user is over its rate (outbox/api/limits.py)."""
    ctx = context(request)
    header = request.headers.get("authorization")
    token = bearer_token(header)
    cookie = request.cookies.get(SESSION_COOKIE) if header is None else None
    if cookie:
        check_csrf(request, cookie)

    def lookup() -> Principal:
        with ctx.transaction() as session:
            if token is not None and is_session_token(token):
                return authenticate_session(session, token)
            if cookie:
                return authenticate_session(session, cookie)
            return authenticate(session, header)

    principal = await run_in_threadpool(lookup)
    ctx.rate_limiter.check(principal.rate_key,
                           what="API key" if principal.api_key_id else "user")
    return principal


#: Each dependency `require` made, and the scopes it demands: what a route
#: needs can be read off the app's route table (tests/test_access.py does).
DEMANDS: dict[Callable[..., Awaitable[Principal]], frozenset[Scope]] = {}


@cache
def require(*scopes: Scope) -> Callable[..., Awaitable[Principal]]:
    """A dependency: the caller, who must hold every one of `scopes`
    (403 insufficient_scope otherwise). Cached, so each set is one dependency."""

    async def scoped(principal: Annotated[Principal, Depends(authenticate_caller)]) -> Principal:
        principal.demand(*scopes)
        return principal

    scoped.__name__ = f"require_{'_'.join(scopes) or 'any'}"
    DEMANDS[scoped] = frozenset(scopes)
    return scoped


def require_cron_secret(request: Request) -> None:
    """`Authorization: Bearer $OUTBOX_CRON_SECRET`. Unset secret: the endpoint
    does not exist (404 cron_disabled), so a forgotten setting can't leave it open."""
    secret = context(request).settings.cron_secret
    expected = secret.get_secret_value() if secret is not None else ""
    if not expected:
        raise CronDisabled("the cron endpoint is disabled: set OUTBOX_CRON_SECRET to enable it")
    presented = bearer_token(request.headers.get("authorization"))
    if presented is None or not hmac.compare_digest(expected.encode(), presented.encode()):
        raise Unauthorized("missing or wrong cron secret (Authorization: Bearer <secret>)")


# Route parameter types: `principal: Reader` authenticates the caller and
# demands the scope.
#: Any authenticated caller, whatever its scopes.
Caller = Annotated[Principal, Depends(authenticate_caller)]
Reader = Annotated[Principal, Depends(require(Scope.READ))]
Sender = Annotated[Principal, Depends(require(Scope.SEND))]
ChatAgent = Annotated[Principal, Depends(require(Scope.CHATS))]
Admin = Annotated[Principal, Depends(require(Scope.ADMIN))]
#: What every API key could do before keys had scopes: read and send.
ApiCaller = Annotated[Principal, Depends(require(Scope.READ, Scope.SEND))]
