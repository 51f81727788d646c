"""HTTP helpers shared by the simulator's modules: Whapi's error body, JSON
answers, Bearer parsing and the channel check every Whapi endpoint does."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from outbox.providers.simulator.channels import Channel, ChannelRegistry

__all__ = [
    "STATUS_MESSAGES",
    "authenticate",
    "json_response",
    "parse_bearer",
    "read_json",
    "whapi_error",
]

STATUS_MESSAGES: Final[Mapping[int, str]] = {
    400: "Wrong request parameters",
    401: "Channel needs authorization",
    402: "Trial limit exceeded",
    403: "Forbidden to send to this recipient",
    404: "Channel not found",
    408: "Request timeout",
    409: "Conflict",
    413: "Request entity too large",
    415: "Unsupported media type",
    429: "Too many requests",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Gateway timeout",
}
_JSON: Final = "application/json"


def json_response(
    obj: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=json.dumps(obj, separators=(",", ":")).encode(),
        status=status,
        content_type=_JSON,
        headers=headers,
    )


def whapi_error(
    status: int, message: str | None = None, details: str | None = None, **headers: str
) -> web.Response:
    """Whapi's error body: {"error": {"code", "message", "details"?}}."""
    text = message or STATUS_MESSAGES.get(status, "Error")
    err: dict[str, Any] = {"code": status, "message": text}
    if details:
        err["details"] = details
    return json_response({"error": err}, status, headers or None)


def parse_bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


def authenticate(request: web.Request, registry: ChannelRegistry) -> Channel | web.Response:
    """The request's channel, or the error Whapi answers (401/404) without one."""
    token = parse_bearer(request.headers.get("Authorization"))
    if token is None:
        return whapi_error(401, "Unauthorized",
                           "Missing or malformed Authorization: Bearer <token>")
    channel = registry.resolve(token)
    if channel is None:
        status = registry.unknown_token_status
        return whapi_error(status, "Unauthorized" if status == 401 else "Channel not found",
                           "No channel has this token")
    return channel


async def read_json(request: web.Request) -> Any:
    """The body as JSON ({} when empty); ValueError when it is not JSON."""
    raw = await request.read()
    return json.loads(raw) if raw.strip() else {}
