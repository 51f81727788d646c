"""Logging: structlog for our code, stdlib logging routed through the same
renderer, and redaction of secrets and message content on every line.

Call `configure_logging()` once at process start (CLI, daemon, HTTP app),
before anything logs: until then structlog's default prints to stdout, which
is reserved for command output. Logs go to stderr:

- JSON lines when stderr is not a terminal (or ``json=True``): one object per
  line with ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``, ``event``,
  the bound keys and, on errors, ``exception`` (the formatted traceback);
- structlog's console renderer when it is.

Redaction runs last before rendering, on structlog events and stdlib records
alike (`redact_event`):

- values under credential-like keys (token, authorization, secret, password,
  api_key, encryption_key, cookie, ...) and message-content keys (body, text,
  caption, preview, vcard) become "[redacted]", in nested dicts and lists too;
  flags and numbers stay (``has_token=True``, ``body_chars=120``);
- ``Bearer <credential>``, ``?token=<credential>`` and the password of a
  ``scheme://user:password@host`` URL inside any string are masked;
- values handed to `register_secret` (decrypted channel tokens, the
  encryption key) are masked wherever they appear inside any string,
  including exception messages and tracebacks.

Tracebacks are rendered as plain text without local variables: structlog's
rich and dict tracebacks show locals by default, and a frame that just
decrypted a token has it in a local.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from outbox.errors import ConfigurationError

REDACTED = "[redacted]"
#: Shorter registered values are ignored: masking every "abc" in every line
#: would make logs unreadable and protects nothing.
MIN_SECRET_CHARS = 6
#: Nested structures deeper than this are replaced, not walked (cycles, abuse).
MAX_REDACT_DEPTH = 8

# Substrings of a (lowercased, "-" -> "_") key that mark a credential.
_CREDENTIAL_KEY_PARTS = (
    "token",
    "authorization",
    "secret",
    "password",
    "passwd",
    "api_key",
    "apikey",
    "encryption_key",
    "private_key",
    "cookie",
    "credential",
)
# Whole words of a key that mark message content: never logged (DESIGN.md).
_CONTENT_KEY_WORDS = frozenset({"body", "text", "caption", "preview", "vcard"})
# Keys that match the rules above but hold nothing secret.
_NOT_SECRET_KEYS = frozenset({"claim_token"})  # a lease id, needed to debug rescues

_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9\-._~+/]+=*")
# scheme://user:password@host: the password of any URL (a database's, a proxy's).
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)[^@\s/]+@")
_QUERY_CREDENTIAL = re.compile(r"(?i)([?&](?:token|access_token|api_key|apikey)=)[^&#\s\"']+")

_secrets_lock = threading.Lock()
# Replaced, never mutated: readers take the current tuple without locking.
# Longest first, so a secret that contains another is masked whole.
_secrets: tuple[str, ...] = ()

_handler: logging.Handler | None = None
_configured_with: tuple[int, bool] | None = None


# --- secrets registry ---------------------------------------------------------------


def register_secret(value: str) -> None:
    """Mask `value` wherever it appears in any later log line.

    For values that must never be logged but can turn up inside free text:
    decrypted channel tokens, the encryption key. Values shorter than
    `MIN_SECRET_CHARS` are ignored.
    """
    global _secrets
    if not isinstance(value, str) or len(value) < MIN_SECRET_CHARS:
        return
    with _secrets_lock:
        if value in _secrets:
            return
        _secrets = tuple(sorted((*_secrets, value), key=len, reverse=True))


def clear_secrets() -> None:
    """Forget every registered secret (tests; a process never needs it)."""
    global _secrets
    with _secrets_lock:
        _secrets = ()


# --- redaction ---------------------------------------------------------------------------


def redact_event(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask secrets and message content (see the module doc)."""
    secrets = _secrets
    return {
        key: _redact_value(key, value, secrets, 0) if key != "_record" else value
        for key, value in event_dict.items()
    }


def is_sensitive_key(key: object) -> bool:
    if not isinstance(key, str):
        return False
    name = key.lower().replace("-", "_")
    if name in _NOT_SECRET_KEYS:
        return False
    if any(part in name for part in _CREDENTIAL_KEY_PARTS):
        return True
    return not _CONTENT_KEY_WORDS.isdisjoint(name.split("_"))


def scrub_text(text: str, secrets: Iterable[str] | None = None) -> str:
    """Mask registered secrets, Bearer credentials and ?token= in a string."""
    for secret in _secrets if secrets is None else secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    text = _BEARER.sub(rf"\1 {REDACTED}", text)
    if "://" in text:
        text = _URL_PASSWORD.sub(rf"\1{REDACTED}@", text)
    if "=" in text:
        text = _QUERY_CREDENTIAL.sub(rf"\1{REDACTED}", text)
    return text


def _redact_value(key: object, value: Any, secrets: tuple[str, ...], depth: int) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if is_sensitive_key(key):
        return REDACTED
    return _scrub(value, secrets, depth)


def _scrub(value: Any, secrets: tuple[str, ...], depth: int) -> Any:
    if isinstance(value, str):
        return scrub_text(value, secrets)
    if value is None or isinstance(value, bool | int | float):
        return value
    if depth >= MAX_REDACT_DEPTH:
        return "[too deep]"
    if isinstance(value, Mapping):
        return {k: _redact_value(k, v, secrets, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_scrub(item, secrets, depth + 1) for item in value]
    if isinstance(value, bytes | bytearray):
        return REDACTED  # could be anything, e.g. a request body
    # Anything else is rendered with repr() later (JSON fallback and console
    # alike); do it here so that text gets scrubbed too.
    return scrub_text(repr(value), secrets)


# --- configuration ---------------------------------------------------------------------


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is at the time of the call (so test
    capture and redirected streams work)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: TextIO) -> None:
        pass


# (alembic: plugin and context notes at INFO; `outbox db` says the outcome itself)
_CHATTY_LIBRARIES = ("httpx", "httpcore", "apscheduler", "alembic")

def configure_logging(*, level: str = "INFO", json: bool | None = None) -> None:
    """Set up structlog and stdlib logging for this process.

    Idempotent: calling it again with the same arguments changes nothing;
    with other arguments it replaces the previous setup (never a second
    handler). Handlers that others attached to the root logger are left alone.
    """
    global _handler, _configured_with
    numeric_level = _parse_level(level)
    if json is None:
        json = not _isatty(sys.stderr)
    if _configured_with == (numeric_level, json) and _handler is not None:
        return

    timestamper = structlog.processors.TimeStamper(fmt="iso", utc=True)
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        timestamper,
    ]
    renderer: Processor
    if json:
        renderer = structlog.processors.JSONRenderer(ensure_ascii=False)
    else:
        renderer = structlog.dev.ConsoleRenderer(
            colors=_isatty(sys.stderr),
            exception_formatter=structlog.dev.plain_traceback,
        )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # Text before redaction, so secrets in exception messages and
            # tracebacks are masked; plain text, so no frame locals.
            structlog.processors.format_exc_info,
            redact_event,
            renderer,
        ],
    )

    handler = _StderrHandler()
    handler.setFormatter(formatter)
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(numeric_level)
    # Libraries that log per request or per scheduler tick at INFO: at the
    # dispatcher's rates that is noise, and measurable CPU.
    for name in _CHATTY_LIBRARIES:
        logging.getLogger(name).setLevel(max(numeric_level, logging.WARNING))

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a logger bound before configure_logging() (at import
        # time) must still pick up this configuration.
        cache_logger_on_first_use=False,
    )
    _handler, _configured_with = handler, (numeric_level, json)


def _unconfigure() -> None:
    """Undo `configure_logging` (tests)."""
    global _handler, _configured_with
    if _handler is not None:
        logging.getLogger().removeHandler(_handler)
    _handler, _configured_with = None, None
    structlog.reset_defaults()


def _parse_level(level: str) -> int:
    name = level.strip().upper() if isinstance(level, str) else ""
    numeric = logging.getLevelNamesMapping().get(name)
    if numeric is None:
        raise ConfigurationError(
            f"invalid log level {str(level)[:20]!r}: use DEBUG, INFO, WARNING, ERROR or CRITICAL",
            field="level",
        )
    return numeric


def _isatty(stream: TextIO | None) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError):  # closed or not a real stream
        return False
