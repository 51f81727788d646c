"""A channel's new inbound-webhook secret, with a grace window for the old
one: `outbox channel rotate-webhook-secret` and
POST /v1/channels/{id}/webhook-secret.

Whapi holds the secret in its webhook settings, and changing those takes a
moment (or an operator): the replaced secret stays accepted until
`previous_webhook_secret_until`, so no webhook is refused meanwhile
(outbox/webhooks/apply.py `check_webhook_secret`).
"""

from __future__ import annotations

import math
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session

from outbox import crypto
from outbox.admin.channels import WEBHOOK_SECRET, stored_in_clear
from outbox.db import admin_queries as q
from outbox.errors import ChannelNotFound, InvalidInput
from outbox.message_types import parse_channel_id

DEFAULT_KEEP_OLD = timedelta(hours=24)
#: Longer than this, a leaked secret would stay useful for too long.
MAX_KEEP_OLD = timedelta(days=7)
MAX_KEEP_OLD_HOURS = MAX_KEEP_OLD / timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class RotatedSecret:
    channel_id: uuid.UUID
    secret: str = field(repr=False)
    #: Until when the replaced secret is still accepted (None: it no longer is).
    previous_valid_until: datetime | None


def keep_old_hours(hours: object) -> timedelta:
    """A grace window given in hours (CLI, HTTP), checked: 0 to
    MAX_KEEP_OLD_HOURS; `InvalidInput` naming `keep_old_hours` otherwise."""
    if (isinstance(hours, bool) or not isinstance(hours, int | float)
            or not math.isfinite(hours) or not 0 <= hours <= MAX_KEEP_OLD_HOURS):
        raise InvalidInput(f"keep_old_hours must be a number from 0 to {MAX_KEEP_OLD_HOURS:g}",
                           field="keep_old_hours")
    return timedelta(hours=hours)


def rotate_webhook_secret(
    session: Session,
    channel_id: uuid.UUID | str,
    *,
    workspace_id: str | None,
    encryption_key: str,
    keep_old_for: timedelta = DEFAULT_KEEP_OLD,
) -> RotatedSecret:
    """Give the channel a new random webhook secret, in the caller's transaction.

    The current secret becomes the previous one (encrypted, bound as
    before) and is accepted for `keep_old_for` more (0: not at all); it
    replaces any earlier previous secret. A current secret stored in the
    clear (versions before 0.2) is never kept: the webhook refuses those by
    default, and keeping one would carry a secret anyone with write access
    to the database could have planted. `ChannelNotFound` outside
    `workspace_id` (None: any workspace); `InvalidInput` for a negative
    `keep_old_for` or one over MAX_KEEP_OLD."""
    encryption_key = crypto.require_strong_key(encryption_key)
    cid = parse_channel_id(channel_id)
    if not isinstance(keep_old_for, timedelta) or not (
            timedelta(0) <= keep_old_for <= MAX_KEEP_OLD):
        raise InvalidInput(f"keep_old_for must be from 0 to {MAX_KEEP_OLD.days} days",
                           field="keep_old_for")
    row = session.execute(text(q.WEBHOOK_CHANNEL_TO_ROTATE),
                          {"channel_id": cid, "workspace_id": workspace_id}).one_or_none()
    if row is None:
        raise ChannelNotFound(f"channel {cid} does not exist", field="channel_id")
    secret = secrets.token_urlsafe(32)
    keep = keep_old_for > timedelta(0) and not stored_in_clear(row.webhook_secret)
    until = session.execute(text(q.STORE_NEW_WEBHOOK_CIPHERTEXT), {
        "channel_id": cid,
        "webhook_secret": crypto.encrypt_token(
            secret, encryption_key, crypto.Binding(cid, row.base_url, purpose=WEBHOOK_SECRET)),
        "previous": row.webhook_secret if keep else None,
        "keep_seconds": keep_old_for.total_seconds(),
    }).scalar_one()
    return RotatedSecret(cid, secret, until)
