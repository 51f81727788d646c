"""Channels: one WhatsApp number connected through Whapi, with its token.

Shared by the CLI, the HTTP API and the dispatcher; none of them has a
second implementation.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from outbox import crypto
from outbox.db.models import DEFAULT_WORKSPACE, Channel, ChannelToken
from outbox.errors import ChannelNotFound, InvalidInput
from outbox.message_types import check_workspace_id, is_utf8, parse_channel_id
from outbox.phone import normalize_recipient

MAX_NAME_LENGTH = 200


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
    def of(cls, c: Channel) -> ChannelInfo:
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
    phone = normalize_recipient(phone_number, default_region=default_region)
    if phone.is_group:
        raise InvalidInput("a channel's phone number can't be a group", field="phone_number")
    if not phone.phone.startswith("+"):
        # A linked id (@lid) names someone WhatsApp hides the number of: a
        # channel is our own account, whose number we know.
        raise InvalidInput("a channel's phone number must be a number, not a linked id (@lid)",
                           field="phone_number")
    if not isinstance(token, str):
        raise InvalidInput("token must be text", field="token")
    token = token.strip()
    if not token or any(ch.isspace() for ch in token) or len(token) > 512:
        raise InvalidInput("token is empty or malformed (no spaces, at most 512 characters)",
                           field="token")
    if base_url is not None:
        if not isinstance(base_url, str):
            raise InvalidInput("base URL must be text", field="base_url")
        base_url = base_url.strip().rstrip("/")
        if not base_url.startswith(("http://", "https://")) or len(base_url) > 2048:
            raise InvalidInput("base URL must start with http:// or https://", field="base_url")
    encrypted = crypto.encrypt_token(token, encryption_key)
    channel = Channel(
        id=uuid.uuid4(),
        workspace_id=workspace_id,
        name=name,
        phone_number=phone.phone,
        provider="whapi",
        base_url=base_url,
        status="active",
        webhook_secret=secrets.token_urlsafe(32),
    )
    session.add(channel)
    session.flush()
    session.add(ChannelToken(
        channel_id=channel.id, encrypted_token=encrypted, key_id=crypto.key_id(encryption_key)
    ))
    session.flush()
    session.refresh(channel)
    return ChannelInfo.of(channel)


def list_channels(session: Session, *, workspace_id: str | None = None) -> list[ChannelInfo]:
    stmt = select(Channel).order_by(Channel.created_at, Channel.id)
    if workspace_id is not None:
        stmt = stmt.where(Channel.workspace_id == workspace_id)
    return [ChannelInfo.of(c) for c in session.scalars(stmt)]


def get_channel(
    session: Session, channel_id: uuid.UUID | str, *, workspace_id: str | None = None
) -> Channel:
    cid = parse_channel_id(channel_id)
    stmt = select(Channel).where(Channel.id == cid)
    if workspace_id is not None:
        stmt = stmt.where(Channel.workspace_id == workspace_id)
    channel = session.scalars(stmt).one_or_none()
    if channel is None:
        raise ChannelNotFound(f"channel {cid} does not exist", field="channel_id")
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
    channel = get_channel(session, channel_id, workspace_id=workspace_id)
    if seconds is not None and seconds <= 0:
        raise InvalidInput("pause duration must be positive", field="seconds")
    now = session.execute(text("SELECT now()")).scalar_one()
    channel.status = "paused"
    channel.paused_until = now + timedelta(seconds=seconds) if seconds else None
    channel.pause_reason = reason
    channel.pause_cause = "manual"
    channel.updated_at = now
    session.flush()
    return ChannelInfo.of(channel)


def resume_channel(
    session: Session, channel_id: uuid.UUID | str, *, workspace_id: str | None = None
) -> ChannelInfo:
    """Make a paused or disabled channel active again."""
    channel = get_channel(session, channel_id, workspace_id=workspace_id)
    session.execute(
        update(Channel)
        .where(Channel.id == channel.id)
        .values(status="active", paused_until=None, pause_reason=None, pause_cause=None,
                rate_limit_strikes=0, rate_limited_at=None,
                updated_at=text("now()"))
    )
    session.refresh(channel)
    return ChannelInfo.of(channel)
