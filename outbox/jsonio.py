"""Parsing untrusted JSON (API bodies, webhooks); encoding on hot paths.

`json.loads` accepts more than PostgreSQL, UTF-8 or our own recursion can
hold: NaN and Infinity (jsonb refuses them), numbers that overflow a float
(1e999 -> inf), escapes of lone surrogates ("\\ud800": not encodable as
UTF-8) and nesting deep enough to exhaust the interpreter's recursion
limit. `loads_untrusted` refuses all of them with a ValueError;
`parse_untrusted` turns that into the caller's own error (an API body's,
a webhook's).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

MAX_DEPTH = 64

# json.dumps(..., ensure_ascii=False) builds a new JSONEncoder on every call
# (any non-default option does): 2.6 us for a text payload, against 1.5 us
# through one encoder made once. Enqueue encodes every message's payload.
dumps_unicode: Callable[[Any], str] = json.JSONEncoder(ensure_ascii=False).encode


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _check_text(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("a string holds an unpaired surrogate escape") from None


def loads_untrusted(raw: bytes | str) -> Any:
    try:
        data = json.loads(raw, parse_constant=_no_constant, parse_float=_finite)
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            _check_text(value)
        elif isinstance(value, dict | list):
            if depth >= MAX_DEPTH:
                raise ValueError(f"nested deeper than {MAX_DEPTH} levels")
            if isinstance(value, dict):
                for key, item in value.items():
                    _check_text(key)
                    stack.append((item, depth + 1))
            else:
                stack.extend((item, depth + 1) for item in value)
    return data


def parse_untrusted(raw: bytes, error: Callable[[str], Exception], *, what: str) -> Any:
    """`raw` as JSON (`loads_untrusted`), or `error(message)`, the message
    naming `what` ("request body", "webhook body") and why."""
    try:
        return loads_untrusted(raw)
    except UnicodeDecodeError:
        raise error(f"{what} is not valid JSON") from None
    except ValueError as exc:
        raise error(f"{what} is not usable JSON: {exc}") from None
