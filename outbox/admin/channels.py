"""Channels: one WhatsApp number connected through Whapi, with its token.

Shared by the CLI, the HTTP API and the dispatcher; none of them has a
second implementation.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Row, select, text
from sqlalchemy.orm import Session

from outbox import crypto
from outbox.db import admin_queries as q
from outbox.db.models import DEFAULT_WORKSPACE, Channel
from outbox.errors import ChannelNotFound, CryptoError, DecryptionFailed, InvalidInput
from outbox.message_types import check_workspace_id, is_utf8, parse_channel_id
from outbox.phone import normalize_recipient

MAX_NAME_LENGTH = 200
MAX_REASON_LENGTH = 500


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    id: uuid.UUID
    workspace_id: str
    name: str
    phone_number: str
    provider: str
    base_url: str | None
    status: str
    paused_until: datetime | None
    pause_reason: str | None

    @classmethod
    def of(cls, c: Channel | Row[Any]) -> ChannelInfo:
        return cls(
            c.id, c.workspace_id, c.name, c.phone_number, c.provider, c.base_url,
            c.status, c.paused_until, c.pause_reason,
        )


def create_channel(
    session: Session,
    *,
    name: str,
    phone_number: str,
    token: str,
    encryption_key: str,
    workspace_id: str = DEFAULT_WORKSPACE,
    base_url: str | None = None,
    default_region: str | None = None,
    allow_http: bool = False,
) -> ChannelInfo:
    """Add a channel and its encrypted token to the caller's transaction.

    The token and the webhook secret are encrypted bound to the channel's id
    and base URL (outbox/crypto.py). `base_url` must be https, except on
    loopback or with `allow_http` (OUTBOX_ALLOW_HTTP_BASE_URL, for a
    simulator on another host)."""
    encryption_key = crypto.require_strong_key(encryption_key)
    if not isinstance(name, str):
        raise InvalidInput("channel name must be text", field="name")
    name = name.strip()
    if not name or len(name) > MAX_NAME_LENGTH or "\x00" in name or not is_utf8(name):
        raise InvalidInput(f"channel name must be 1 to {MAX_NAME_LENGTH} characters", field="name")
    workspace_id = check_workspace_id(workspace_id)
    try:
        phone = normalize_recipient(phone_number, default_region=default_region)
    except InvalidInput as exc:
        exc.field = exc.field or "phone_number"
        raise
    if phone.is_group:
        raise InvalidInput("a channel's phone number can't be a group", field="phone_number")
    if not phone.phone.startswith("+"):
        # A linked id (@lid) names someone WhatsApp hides the number of: a
        # channel is our own account, whose number we know.
        raise InvalidInput("a channel's phone number must be a number, not a linked id (@lid)",
                           field="phone_number")
    _check_token(token)
    if base_url is not None:
        base_url = check_base_url(base_url, allow_http=allow_http)
    channel_id = uuid.uuid4()
    row = session.execute(text(q.CREATE_CHANNEL), {
        "id": channel_id, "workspace_id": workspace_id, "name": name,
        "phone_number": phone.phone, "base_url": base_url,
        "webhook_secret": crypto.encrypt_token(
            secrets.token_urlsafe(32), encryption_key,
            crypto.Binding(channel_id, base_url, purpose=WEBHOOK_SECRET)),
        **_encrypted_token(token, encryption_key, crypto.Binding(channel_id, base_url)),
    }).one()
    return ChannelInfo.of(row)


WEBHOOK_SECRET = "webhook-secret"  # noqa: S105 (the Binding purpose of webhook secrets)
_LOOPBACK = ("localhost", "127.0.0.1", "::1", "[::1]")


def check_base_url(base_url: object, *, allow_http: bool = False) -> str:
    """A channel's Whapi base URL, normalised: https, or http on loopback
    (the token is sent to it in the clear otherwise)."""
    if not isinstance(base_url, str):
        raise InvalidInput("base URL must be text", field="base_url")
    url = base_url.strip().rstrip("/")
    parsed = urlsplit(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname or len(url) > 2048:
        raise InvalidInput("base URL must start with http:// or https:// and name a host",
                           field="base_url")
    host = parsed.hostname
    loopback = host in _LOOPBACK or host.startswith("127.")
    if parsed.scheme == "http" and not (loopback or allow_http):
        raise InvalidInput("base URL must be https (the token travels in it); http only on "
                           "loopback, or with OUTBOX_ALLOW_HTTP_BASE_URL=true", field="base_url")
    return url


def stored_in_clear(stored: str) -> bool:
    """Whether a stored webhook secret is the secret itself (as versions
    before 0.2 kept it) rather than our ciphertext. Anyone who can write the
    database can plant one, so the webhook refuses it unless
    OUTBOX_ACCEPT_PLAINTEXT_WEBHOOK_SECRETS is set."""
    return not stored.startswith(crypto.V2_PREFIX)


def webhook_secret_of(channel_id: uuid.UUID, stored: str, base_url: str | None,
                      keys: list[str]) -> str:
    """A channel's webhook secret in the clear. One stored in the clear
    (`stored_in_clear`) is returned as is: the rotation encrypts it and
    webhook-info shows it; whether a webhook may use it is
    `check_webhook_secret`'s decision."""
    if stored_in_clear(stored):
        return stored
    binding = crypto.Binding(channel_id, base_url, purpose=WEBHOOK_SECRET)
    for key in keys:
        try:
            return crypto.decrypt_token(stored, key, binding)
        except CryptoError:
            continue
    raise DecryptionFailed(f"channel {channel_id}: webhook secret decrypts with no key set "
                           "(OUTBOX_ENCRYPTION_KEY, OUTBOX_ENCRYPTION_KEY_OLD)")


def replace_channel_token(
    session: Session,
    channel_id: uuid.UUID | str,
    *,
    token: str,
    encryption_key: str,
    workspace_id: str | None = None,
) -> ChannelInfo:
    """Store a new token for a channel. A channel disabled, or paused because
    Whapi refused its token or it could not be decrypted, is active again; any
    other pause (an operator's, a rate limit) stays. The dispatcher picks the
    new token up when its cached one expires (outbox/dispatch/credentials.py)."""
    encryption_key = crypto.require_strong_key(encryption_key)
    checked = _check_token(token)
    channel = get_channel(session, channel_id, workspace_id=workspace_id)
    return _changed(session, q.STORE_NEW_CREDENTIAL, channel.id, workspace_id,
                    **_encrypted_token(checked, encryption_key,
                                       crypto.Binding(channel.id, channel.base_url)))


def _check_token(token: object) -> str:
    """A Whapi token as given, checked: `InvalidInput` naming `token` otherwise."""
    if not isinstance(token, str):
        raise InvalidInput("token must be text", field="token")
    token = token.strip()
    if not token or any(ch.isspace() for ch in token) or len(token) > 512:
        raise InvalidInput("token is empty or malformed (no spaces, at most 512 characters)",
                           field="token")
    return token


def _encrypted_token(token: object, encryption_key: str,
                     binding: crypto.Binding) -> dict[str, str]:
    """A Whapi token checked and encrypted for its channel: the columns
    channel_tokens stores."""
    return {"encrypted_token": crypto.encrypt_token(_check_token(token), encryption_key,
                                                    binding),
            "key_id": crypto.key_id(encryption_key)}


@dataclass(frozen=True, slots=True)
class ChannelQueue:
    """A channel with what waits on it: for an operator's list."""

    channel: ChannelInfo
    pause_cause: str | None
    queued: int
    oldest_due_at: datetime | None  # the longest-waiting row that could go now


def channel_queues(session: Session, *, workspace_id: str) -> list[ChannelQueue]:
    return [ChannelQueue(ChannelInfo.of(r), r.pause_cause, r.queued, r.oldest_due_at)
            for r in session.execute(text(q.CHANNEL_QUEUES), {"workspace_id": workspace_id})]


def list_channels(session: Session, *, workspace_id: str | None = None) -> list[ChannelInfo]:
    return [ChannelInfo.of(r)
            for r in session.execute(text(q.LIST_CHANNELS), {"workspace_id": workspace_id})]


def get_channel(
    session: Session, channel_id: uuid.UUID | str, *, workspace_id: str | None = None
) -> Channel:
    cid = parse_channel_id(channel_id)
    # The named statement's row, as the session's `Channel` object.
    as_model = select(Channel).from_statement(text(q.CHANNEL))
    channel: Channel | None = session.scalars(
        as_model, {"channel_id": cid, "workspace_id": workspace_id}).one_or_none()
    if channel is None:
        raise _not_found(cid)
    return channel


def pause_channel(
    session: Session,
    channel_id: uuid.UUID | str,
    *,
    seconds: float | None = None,
    reason: str = "paused by operator",
    workspace_id: str | None = None,
) -> ChannelInfo:
    """Pause a channel: its rows stay queued; nothing is claimed until it resumes
    (or until `seconds` pass, if given)."""
    if seconds is not None and seconds <= 0:
        get_channel(session, channel_id, workspace_id=workspace_id)  # not found comes first
        raise InvalidInput("pause duration must be positive", field="seconds")
    if (not isinstance(reason, str) or len(reason) > MAX_REASON_LENGTH or "\x00" in reason
            or not is_utf8(reason)):
        raise InvalidInput(f"pause reason must be text of at most {MAX_REASON_LENGTH} "
                           "characters", field="reason")
    return _changed(session, q.PAUSE_CHANNEL, channel_id, workspace_id,
                    seconds=seconds, reason=reason)


def resume_channel(
    session: Session, channel_id: uuid.UUID | str, *, workspace_id: str | None = None
) -> ChannelInfo:
    """Make a paused or disabled channel active again."""
    return _changed(session, q.RESUME_CHANNEL, channel_id, workspace_id)


def _changed(session: Session, sql: str, channel_id: uuid.UUID | str,
             workspace_id: str | None, **params: Any) -> ChannelInfo:
    """Run a channel's UPDATE ... RETURNING; `ChannelNotFound` if it matched nothing."""
    cid = parse_channel_id(channel_id)
    row = session.execute(text(sql), {
        "channel_id": cid, "workspace_id": workspace_id, **params}).one_or_none()
    if row is None:
        raise _not_found(cid)
    return ChannelInfo.of(row)


def _not_found(channel_id: uuid.UUID) -> ChannelNotFound:
    return ChannelNotFound(f"channel {channel_id} does not exist", field="channel_id")
