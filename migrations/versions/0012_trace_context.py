"""outbox_messages.trace_context: the enqueuing request's trace context.

With OpenTelemetry (the [otel] extra) configured, an enqueue stores the
W3C trace context (traceparent, tracestate) of the span it ran in, and the
send's span links back to it (outbox/tracing.py). NULL otherwise.

A nullable column without a default: added without rewriting the table.

Revision ID: 0012
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0012"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox_messages", sa.Column("trace_context", postgresql.JSONB()))


def downgrade() -> None:
    op.drop_column("outbox_messages", "trace_context")
