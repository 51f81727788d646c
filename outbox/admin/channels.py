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

from sqlalchemy import Row, select, text
from sqlalchemy.orm import Session

from outbox import crypto
from outbox.db import admin_queries as q
from outbox.db.models import DEFAULT_WORKSPACE, Channel
from outbox.errors import ChannelNotFound, InvalidInput
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
) -> ChannelInfo:
    """Add a channel and its encrypted token to the caller's transaction."""
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
    stored_token = _encrypted_token(token, encryption_key)
    if base_url is not None:
        if not isinstance(base_url, str):
            raise InvalidInput("base URL must be text", field="base_url")
        base_url = base_url.strip().rstrip("/")
        if not base_url.startswith(("http://", "https://")) or len(base_url) > 2048:
            raise InvalidInput("base URL must start with http:// or https://", field="base_url")
    row = session.execute(text(q.CREATE_CHANNEL), {
        "id": uuid.uuid4(), "workspace_id": workspace_id, "name": name,
        "phone_number": phone.phone, "base_url": base_url,
        "webhook_secret": secrets.token_urlsafe(32), **stored_token,
    }).one()
    return ChannelInfo.of(row)


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
    cid = parse_channel_id(channel_id)
    return _changed(session, q.STORE_NEW_CREDENTIAL, cid, workspace_id,
                    **_encrypted_token(token, encryption_key))


def _encrypted_token(token: object, encryption_key: str) -> dict[str, str]:
    """A Whapi token checked and encrypted: the columns channel_tokens stores."""
    if not isinstance(token, str):
        raise InvalidInput("token must be text", field="token")
    token = token.strip()
    if not token or any(ch.isspace() for ch in token) or len(token) > 512:
        raise InvalidInput("token is empty or malformed (no spaces, at most 512 characters)",
                           field="token")
    return {"encrypted_token": crypto.encrypt_token(token, encryption_key),
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
