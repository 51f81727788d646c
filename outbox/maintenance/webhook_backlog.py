"""Webhook entries that came before what they refer to, matched again.

Statuses that came before their message's WhatsApp id was recorded, and
reactions, edits, deletes and echoes that came before their message: the
webhook route tries its own channel's at once; this pass tries everyone's
every few seconds, and drops what waited too long (outbox/webhooks/apply.py
says how long).

Run by the HTTP service, the process that receives webhooks, on its
(synchronous) engine in a worker thread: one transaction under the
service's advisory lock, so of several API processes one does each pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from outbox.db import queries
from outbox.webhooks.apply import (
    BacklogResult,
    PendingResult,
    apply_pending,
    apply_status_backlog,
)

WEBHOOK_BACKLOG_INTERVAL_SECONDS = 5.0
WEBHOOK_BACKLOG_LOCK_KEY = 0x0B0C_0004

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class BacklogPass:
    statuses: BacklogResult
    pending: PendingResult


class WebhookBacklog:
    name = "webhook_backlog"
    interval_seconds = WEBHOOK_BACKLOG_INTERVAL_SECONDS
    first_run_after_seconds = WEBHOOK_BACKLOG_INTERVAL_SECONDS
    lock_key = WEBHOOK_BACKLOG_LOCK_KEY

    def run_once(self, engine: Engine) -> BacklogPass | None:
        """One pass in one transaction (None: another process has the lock)."""
        with Session(engine, expire_on_commit=False) as session, session.begin():
            if not session.scalar(text(queries.TRY_MAINTENANCE_LOCK), {"key": self.lock_key}):
                return None
            statuses = apply_status_backlog(session)
            pending = apply_pending(session)
        if statuses.applied:
            log.info("status_backlog_applied", messages=statuses.applied, rows=statuses.taken)
        if pending.applied or pending.echoes_matched:
            log.info("webhook_pending_applied", actions=pending.applied,
                     echoes=pending.echoes_matched)
        return BacklogPass(statuses, pending)
