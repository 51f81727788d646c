"""One JSON error shape for every failure:

    {"error": {"code": "invalid_phone", "message": "...", "field": "to"}}

`OutboxError`s answer with their own `http_status` and `to_dict()`;
a request's validation errors become the same shape (422, naming the field;
`details` lists every problem); malformed JSON is a 400; unknown routes
404; anything unexpected, an answer that doesn't fit its schema too, a 500
without internals.
"""

from __future__ import annotations

import math
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from outbox.errors import InvalidInput, MalformedJson, OutboxError, RateLimited

log = structlog.get_logger(__name__)

_LOCATIONS = ("body", "query", "path", "header")


def error_body(code: str, message: str, *, field: str | None = None,
               **extra: Any) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if field is not None:
        err["field"] = field
    err.update(extra)
    return {"error": err}


def outbox_error_response(exc: OutboxError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.http_status == 401 else None
    if isinstance(exc, RateLimited):
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    return JSONResponse({"error": exc.to_dict()}, status_code=exc.http_status, headers=headers)


def validation_error(errors: list[Any]) -> OutboxError:
    """pydantic's error list → one `OutboxError` naming the first field."""
    details = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ())]
        if loc and loc[0] in _LOCATIONS:
            loc = loc[1:]
        details.append({"field": ".".join(loc) or None, "message": _message(e)})
    if any(e.get("type") == "json_invalid" for e in errors):
        return MalformedJson("request body is not valid JSON")
    first = details[0] if details else {"field": None, "message": "invalid request"}
    field = first["field"]
    message = f"{field}: {first['message']}" if field else str(first["message"])
    exc = InvalidInput(message, field=field)
    exc.details = details  # type: ignore[attr-defined]
    return exc


def _message(e: dict[str, Any]) -> str:
    kind = e.get("type")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a known field"
    if kind in ("model_attributes_type", "dict_type", "model_type"):
        return "request body must be a JSON object"
    return str(e.get("msg", "is invalid"))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(OutboxError)
    async def _outbox(request: Request, exc: OutboxError) -> JSONResponse:
        response = outbox_error_response(exc)
        details = getattr(exc, "details", None)
        if details:
            body = exc.to_dict() | {"details": details}
            response = JSONResponse({"error": body}, status_code=exc.http_status)
        if exc.http_status >= 500:
            log.error("request_failed", code=exc.code, path=request.url.path)
        return response

    @app.exception_handler(RequestValidationError)
    async def _request_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return await _outbox(request, validation_error(list(exc.errors())))

    @app.exception_handler(ValidationError)
    async def _validation(request: Request, exc: ValidationError) -> JSONResponse:
        # Requests were validated before this (outbox/api/body.py, the handler
        # above): here an answer doesn't fit its own schema. Our bug, not a 422.
        log.error("response_invalid", path=request.url.path, model=exc.title,
                  errors=exc.error_count())
        return JSONResponse(error_body("internal_error", "internal error"), status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(OperationalError)
    async def _database(request: Request, exc: OperationalError) -> JSONResponse:
        log.error("database_unavailable", path=request.url.path, error=type(exc.orig).__name__)
        return JSONResponse(error_body("database_unavailable",
                                       "the database is unreachable; try again"),
                            status_code=503)

    @app.exception_handler(PoolTimeout)
    async def _pool_full(request: Request, exc: PoolTimeout) -> JSONResponse:
        # Every connection is busy: a moment of overload, not a fault of ours.
        log.warning("database_pool_full", path=request.url.path)
        return JSONResponse(error_body("database_busy",
                                       "all database connections are busy; try again"),
                            status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled_error", path=request.url.path)
        return JSONResponse(error_body("internal_error", "internal error"), status_code=500)
