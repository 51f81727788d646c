"""Who may call what: API keys (per workspace), the cron secret.

Webhook secrets are per channel and checked by outbox.webhooks. Every
comparison of a secret is constant-time.
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from outbox.admin.apikeys import Principal, authenticate, bearer_token
from outbox.api.context import context
from outbox.errors import CronDisabled, Unauthorized


async def require_api_key(request: Request) -> Principal:
    """The caller's workspace, from `Authorization: Bearer <key>`; 401 otherwise,
    429 when the key is over its rate (outbox/api/limits.py)."""
    ctx = context(request)
    header = request.headers.get("authorization")

    def lookup() -> Principal:
        with ctx.transaction() as session:
            return authenticate(session, header)

    principal = await run_in_threadpool(lookup)
    ctx.rate_limiter.check(principal.api_key_id)
    return principal


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


#: A route parameter that authenticates the caller: `principal: ApiCaller`.
ApiCaller = Annotated[Principal, Depends(require_api_key)]
