"""Reading request bodies ourselves, so that authentication always runs
before the body is parsed (a bad key is a 401 even with a broken body)."""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from outbox.api.errors import validation_error
from outbox.errors import MalformedJson, PayloadTooLarge
from outbox.jsonio import parse_untrusted

MAX_BODY_BYTES = 1024 * 1024  # a message is at most ~10 KB; webhook batches stay small

M = TypeVar("M", bound=BaseModel)


async def read_body(request: Request, *, limit: int = MAX_BODY_BYTES) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes) -> Any:
    if not raw.strip():
        raise MalformedJson("request body is empty (expected a JSON object)")
    return parse_untrusted(raw, MalformedJson, what="request body")


def parse_model(model: type[M], raw: bytes) -> M:
    data = parse_json(raw)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise validation_error([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]) from None
