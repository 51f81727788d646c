"""`outbox status` and `outbox retry`: what the queue holds, and dead letters back."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox.admin.endpoints import delivery_counts, list_endpoints
from outbox.admin.pacing import PacingState, pacing_overview
from outbox.db import admin_queries as q
from outbox.db import queries
from outbox.db.engine import engine_schema
from outbox.maintenance.analyzer import TableHealth, health_warnings, read_health
from outbox.message_types import parse_channel_id
from outbox.states import EndpointStatus, OutboxStatus

DEAD_LETTERS_SHOWN = 20


@dataclass(slots=True)
class ChannelStatus:
    id: uuid.UUID
    name: str
    status: str
    paused_until: datetime | None
    pause_reason: str | None
    counts: dict[str, int] = field(default_factory=dict)
    #: A paced channel's budget now and the due rows it holds back (None: unpaced).
    pacing: PacingState | None = None
    #: Its webhook secret is stored in the clear (refused unless
    #: OUTBOX_ACCEPT_PLAINTEXT_WEBHOOK_SECRETS), its token in an older
    #: version's passphrase format: `outbox tokens rotate-key` fixes both.
    secret_in_clear: bool = False
    passphrase_token: bool = False


@dataclass(slots=True)
class QueueStatus:
    channels: list[ChannelStatus]
    oldest_due_seconds: float | None
    dead_letters: list[dict[str, Any]]
    #: Webhook bodies kept because we couldn't use them (webhook_dead_letters).
    webhook_dead_letters: int = 0
    webhook_dead_letter_latest: datetime | None = None
    #: The hot tables' statistics and dead rows (outbox/maintenance/analyzer.py).
    tables: list[TableHealth] = field(default_factory=list)
    #: Status callbacks: deliveries by status, and the endpoints disabled.
    callbacks: dict[str, int] = field(default_factory=dict)
    endpoints_disabled: list[dict[str, Any]] = field(default_factory=list)

    def warnings(self) -> list[str]:
        return [*key_warnings(self.channels), *(w.text for w in health_warnings(self.tables))]

    def totals(self) -> dict[str, int]:
        out = _no_rows()
        for c in self.channels:
            for k, v in c.counts.items():
                out[k] = out.get(k, 0) + v
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "totals": self.totals(),
            "oldest_due_seconds": self.oldest_due_seconds,
            "channels": [
                {"id": str(c.id), "name": c.name, "status": c.status,
                 "paused_until": c.paused_until.isoformat() if c.paused_until else None,
                 "pause_reason": c.pause_reason, "counts": c.counts,
                 "pacing": _pacing(c.pacing), "webhook_secret_in_clear": c.secret_in_clear,
                 "token_from_passphrase": c.passphrase_token}
                for c in self.channels
            ],
            "dead_letters": self.dead_letters,
            "webhook_dead_letters": {
                "count": self.webhook_dead_letters,
                "latest": (self.webhook_dead_letter_latest.isoformat()
                           if self.webhook_dead_letter_latest else None)},
            "tables": [
                {"table": t.table, "live_rows": t.live_rows, "dead_rows": t.dead_rows,
                 "changes_since_analyze": t.changes_since_analyze,
                 "last_analyzed": t.last_analyzed.isoformat() if t.last_analyzed else None,
                 "last_vacuumed": t.last_vacuumed.isoformat() if t.last_vacuumed else None,
                 "autovacuum": t.autovacuum, "stale": t.stale}
                for t in self.tables
            ],
            "warnings": self.warnings(),
            "callbacks": {"deliveries": self.callbacks,
                          "endpoints_disabled": self.endpoints_disabled},
        }


KEY_WARNING_CHANNELS_NAMED = 10


def key_warnings(channels: list[ChannelStatus]) -> list[str]:
    """What `outbox tokens rotate-key` has yet to do, naming the channels."""
    out = []
    clear = [c for c in channels if c.secret_in_clear]
    if clear:
        out.append(f"webhook secret stored in the clear on {_channels(clear)}: webhooks "
                   "are refused there unless OUTBOX_ACCEPT_PLAINTEXT_WEBHOOK_SECRETS=true; "
                   "run `outbox tokens rotate-key` to encrypt it")
    old = [c for c in channels if c.passphrase_token]
    if old:
        out.append(f"token in an older version's passphrase format (not bound to its "
                   f"channel) on {_channels(old)}: run `outbox tokens rotate-key`")
    return out


def _channels(channels: list[ChannelStatus]) -> str:
    named = ", ".join(f"{c.name} ({c.id})" for c in channels[:KEY_WARNING_CHANNELS_NAMED])
    more = len(channels) - KEY_WARNING_CHANNELS_NAMED
    count = f"{len(channels)} channel{'s' if len(channels) != 1 else ''}"
    return f"{count} ({named}{f' and {more} more' if more > 0 else ''})"


def _pacing(p: PacingState | None) -> dict[str, Any] | None:
    if p is None:
        return None
    return {"rows_left": p.rows_left, "new_chats_left": p.new_chats_left,
            "day_left": p.day_left, "held_back": p.held_back}


def _no_rows() -> dict[str, int]:
    """Every outbox status, counted or not, so a table always has its columns."""
    return {s.value: 0 for s in OutboxStatus}


def queue_status(session: Session, *, workspace_id: str | None = None) -> QueueStatus:
    params = {"workspace_id": workspace_id}
    channels = {
        r.id: ChannelStatus(r.id, r.name, r.status, r.paused_until, r.pause_reason,
                            _no_rows(), secret_in_clear=r.secret_in_clear,
                            passphrase_token=r.passphrase_token)
        for r in session.execute(text(q.STATUS_CHANNELS), params)
    }
    for r in session.execute(text(q.STATUS_COUNTS), params):
        if r.channel_id in channels:
            channels[r.channel_id].counts[r.status] = int(r.n)
    for p in pacing_overview(session, workspace_id=workspace_id):
        if p.channel_id in channels:
            channels[p.channel_id].pacing = p
    oldest = session.execute(text(q.STATUS_OLDEST_DUE), params).scalar_one_or_none()
    dead = [
        {"message_id": str(r.message_id), "channel_id": str(r.channel_id),
         "to": r.recipient, "attempts": r.attempts, "error": r.last_error,
         "failed_at": r.updated_at.isoformat()}
        for r in session.execute(text(q.STATUS_DEAD_LETTERS),
                                 {**params, "limit": DEAD_LETTERS_SHOWN})
    ]
    hooks = session.execute(text(q.STATUS_WEBHOOK_DEAD_LETTERS), params).all()
    endpoints = list_endpoints(session, workspace_id=workspace_id)
    return QueueStatus(list(channels.values()),
                       float(oldest) if oldest is not None else None, dead,
                       webhook_dead_letters=sum(int(h.n) for h in hooks),
                       webhook_dead_letter_latest=max((h.latest for h in hooks), default=None),
                       tables=read_health(session, schema=_schema(session)),
                       callbacks=delivery_counts(session, workspace_id=workspace_id),
                       endpoints_disabled=[
                           {"id": str(e.id), "url": e.url, "reason": e.disabled_reason}
                           for e in endpoints if e.status == EndpointStatus.DISABLED])


def _schema(session: Session) -> str:
    bind = session.get_bind()
    return engine_schema(bind if isinstance(bind, Engine) else bind.engine)


def retry_failed(
    session: Session,
    *,
    channel_id: uuid.UUID | str | None = None,
    message_id: uuid.UUID | str | None = None,
    workspace_id: str | None = None,
) -> int:
    """Dead letters (failed) back to queued with their attempts reset. Returns how many."""
    from outbox.errors import InvalidInput

    cid = parse_channel_id(channel_id) if channel_id is not None else None
    mid = None
    if message_id is not None:
        try:
            mid = uuid.UUID(str(message_id))
        except ValueError:
            raise InvalidInput(f"message id {str(message_id)[:40]!r} is not a valid id",
                               field="message_id") from None
    row = session.execute(text(queries.RETRY_FAILED), {
        "channel_id": cid, "message_id": mid, "workspace_id": workspace_id}).one()
    return int(row.requeued)
