"""One small exception hierarchy shared by the library, the CLI and HTTP.

Catch `OutboxError` for everything, or a family (`InvalidInput`,
`NotFound`, `ConfigurationError`, `CryptoError`) for one kind of problem.
Every message is one line a person can act on and never contains a token or
a message body. Each class carries the HTTP status and the JSON `code` the
API answers with, so every error the package raises on purpose is here.

db/ keeps its own (`DatabaseError`, `InvalidDatabaseURL`, ...): it imports
nothing from this package; outbox/database.py turns them into these.
"""

from __future__ import annotations

from typing import Any


class OutboxError(Exception):
    """Base of every error this package raises on purpose."""

    #: HTTP status the API answers with for this error.
    http_status: int = 500
    #: Stable machine-readable code for JSON bodies.
    code: str = "outbox_error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        return body


# --- bad input: the caller can fix it -------------------------------------


class InvalidInput(OutboxError):
    http_status = 422
    code = "invalid_input"


class InvalidPhone(InvalidInput):
    code = "invalid_phone"


class NotAConversation(InvalidPhone):
    """A real WhatsApp id that is not a chat: a channel (``<id>@newsletter``),
    status updates (``status@broadcast``) or a broadcast list
    (``<id>@broadcast``). Inbound events for these are ignored, not errors;
    as a recipient it is refused like any bad number."""

    code = "not_a_conversation"

    def __init__(self, message: str, *, kind: str, field: str | None = None) -> None:
        super().__init__(message, field=field)
        #: "newsletter", "status" or "broadcast".
        self.kind = kind


class InvalidMessage(InvalidInput):
    """Empty or over-long text, bad media fields, unsupported type."""

    code = "invalid_message"


class InvalidSchedule(InvalidInput):
    """`send_at` without a timezone, or otherwise unusable."""

    code = "invalid_schedule"


# --- requests the HTTP API can't read ----------------------------------------


class MalformedJson(OutboxError):
    http_status = 400
    code = "malformed_json"


class MalformedWebhook(OutboxError):
    """A webhook body that is not JSON, or not an object or a list of them.
    The webhook route keeps such a body as a dead letter (Whapi retries
    anything but a 200 forever); the parser raises this to say so."""

    http_status = 400
    code = "malformed_webhook"


class PayloadTooLarge(OutboxError):
    http_status = 413
    code = "payload_too_large"


# --- who is calling -----------------------------------------------------------


class Unauthorized(OutboxError):
    """Missing, malformed, unknown or revoked credentials: an API key, the
    cron secret, a channel's webhook secret (HTTP 401)."""

    http_status = 401
    code = "unauthorized"


class CsrfFailed(OutboxError):
    """A request that changes state, authenticated by the console's session
    cookie, without the session's CSRF token in `X-CSRF-Token`, or a sign-in
    posted from another site (HTTP 403)."""

    http_status = 403
    code = "csrf_failed"


# --- things that don't exist or can't be used ------------------------------


class NotFound(OutboxError):
    http_status = 404
    code = "not_found"


class ChannelNotFound(NotFound):
    code = "channel_not_found"


class MessageNotFound(NotFound):
    code = "message_not_found"


class ChatNotFound(NotFound):
    code = "chat_not_found"


class CronDisabled(NotFound):
    """`OUTBOX_CRON_SECRET` is unset: the cron endpoint does not exist, so a
    forgotten setting can't leave it open."""

    code = "cron_disabled"


class ChannelDisabled(OutboxError):
    http_status = 409
    code = "channel_disabled"


class InsufficientScope(OutboxError):
    """Authenticated, but not allowed this (HTTP 403)."""

    http_status = 403
    code = "insufficient_scope"


class UserExists(OutboxError):
    """A user with that email is already in the workspace."""

    http_status = 409
    code = "user_exists"


class NotCancellable(OutboxError):
    """The message can't be cancelled any more (HTTP 409); `code` says why."""

    http_status = 409
    code = "not_cancellable"


class AlreadySending(NotCancellable):
    code = "already_sending"


class AlreadySent(NotCancellable):
    code = "already_sent"


class AlreadyFailed(NotCancellable):
    code = "already_failed"


class NotFailed(OutboxError):
    """Only a failed message goes back to the queue (HTTP 409)."""

    http_status = 409
    code = "not_failed"


class FailedAfterSending(NotFailed):
    """WhatsApp took the message, then reported it failed: a retry could
    deliver it twice, so none is made; send a new message instead."""

    code = "failed_after_sending"


class ContactNotFound(NotFound):
    code = "contact_not_found"


class EndpointNotFound(NotFound):
    code = "endpoint_not_found"


class CronBusy(OutboxError):
    """A cron pass is already running (POST /v1/cron/dispatch): this call
    would only compete with it for the same rows."""

    http_status = 409
    code = "cron_busy"


class IdempotencyConflict(OutboxError):
    """The idempotency key exists but the concurrent insert that owns it is
    not visible to this transaction's snapshot (REPEATABLE READ callers)."""

    http_status = 409
    code = "idempotency_conflict"


class EventsExpired(OutboxError):
    """The events after the client's cursor were pruned (older than
    OUTBOX_EVENTS_RETENTION): reload what it shows, then follow from
    `oldest_id` (the oldest event still held for its workspace, or null)."""

    http_status = 410
    code = "events_expired"

    def __init__(self, message: str, *, oldest_id: int | None, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.oldest_id = oldest_id

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "oldest_id": self.oldest_id}


# --- too much, too fast: try again later -------------------------------------


class RateLimited(OutboxError):
    """Too many requests; `retry_after` seconds until the next is taken."""

    http_status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: float, field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.retry_after = retry_after


class QueueFull(RateLimited):
    """The workspace holds as many queued messages as it may."""

    code = "queue_full"


# --- configuration and secrets ---------------------------------------------


class ConfigurationError(OutboxError):
    code = "configuration_error"


class MigrationError(OutboxError):
    """`outbox db upgrade|downgrade|current` could not do its work; the
    message names the database, the revisions and what to do."""

    code = "migration_error"


class CryptoError(OutboxError):
    code = "crypto_error"


class MissingEncryptionKey(CryptoError, ConfigurationError):
    code = "missing_encryption_key"


class WeakEncryptionKey(CryptoError, ConfigurationError):
    """OUTBOX_ENCRYPTION_KEY is not 32 random bytes in base64."""

    code = "weak_encryption_key"


class DecryptionFailed(CryptoError):
    """Wrong key or tampered ciphertext (AES-GCM authentication failed)."""

    code = "decryption_failed"


class MalformedCiphertext(CryptoError):
    code = "malformed_ciphertext"
