"""One error hierarchy (outbox/errors.py): every error the package raises
on purpose is defined there, with the HTTP status and JSON code the API
answers with."""

from __future__ import annotations

import ast
from pathlib import Path

import outbox.errors as errors

ROOT = Path(__file__).resolve().parent.parent


def _subclasses(cls: type) -> set[type]:
    return {cls} | {s for sub in cls.__subclasses__() for s in _subclasses(sub)}


def test_every_error_class_is_in_errors_py() -> None:
    names = set(vars(errors))
    elsewhere = []
    for path in sorted((ROOT / "outbox").rglob("*.py")):
        if path.name == "errors.py" and path.parent.name == "outbox":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ClassDef) and any(
                    isinstance(b, ast.Name) and b.id in names for b in node.bases):
                elsewhere.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert elsewhere == []


def test_codes_and_statuses_are_the_api_contract() -> None:
    # What clients match on: a code or status changes only on purpose.
    table = {c.__name__: (c.http_status, c.code) for c in _subclasses(errors.OutboxError)}
    assert table == {
        "OutboxError": (500, "outbox_error"),
        "InvalidInput": (422, "invalid_input"),
        "InvalidPhone": (422, "invalid_phone"),
        "NotAConversation": (422, "not_a_conversation"),
        "InvalidMessage": (422, "invalid_message"),
        "InvalidSchedule": (422, "invalid_schedule"),
        "MalformedJson": (400, "malformed_json"),
        "MalformedWebhook": (400, "malformed_webhook"),
        "PayloadTooLarge": (413, "payload_too_large"),
        "Unauthorized": (401, "unauthorized"),
        "NotFound": (404, "not_found"),
        "ChannelNotFound": (404, "channel_not_found"),
        "MessageNotFound": (404, "message_not_found"),
        "ChatNotFound": (404, "chat_not_found"),
        "CronDisabled": (404, "cron_disabled"),
        "ChannelDisabled": (409, "channel_disabled"),
        "IdempotencyConflict": (409, "idempotency_conflict"),
        "RateLimited": (429, "rate_limited"),
        "QueueFull": (429, "queue_full"),
        "ConfigurationError": (500, "configuration_error"),
        "MigrationError": (500, "migration_error"),
        "CryptoError": (500, "crypto_error"),
        "MissingEncryptionKey": (500, "missing_encryption_key"),
        "DecryptionFailed": (500, "decryption_failed"),
        "WeakEncryptionKey": (500, "weak_encryption_key"),
        "CronBusy": (409, "cron_busy"),
        "InsufficientScope": (403, "insufficient_scope"),
        "CsrfFailed": (403, "csrf_failed"),
        "UserExists": (409, "user_exists"),
        "NotCancellable": (409, "not_cancellable"),
        "AlreadySending": (409, "already_sending"),
        "AlreadySent": (409, "already_sent"),
        "AlreadyFailed": (409, "already_failed"),
        "NotFailed": (409, "not_failed"),
        "FailedAfterSending": (409, "failed_after_sending"),
        "ContactNotFound": (404, "contact_not_found"),
        "EventsExpired": (410, "events_expired"),
        "EndpointNotFound": (404, "endpoint_not_found"),
        "MalformedCiphertext": (500, "malformed_ciphertext"),
    }
