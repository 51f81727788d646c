"""channel_pacing: a channel's send limits and the budget that enforces them.

One row per channel that has limits (or a typing_time default); a channel
without one is unlimited, as before. The limits are the operator's; the
budget columns (a token bucket, a minute and a day counter, the new chats
of the day) are the claim's, updated in the claim statement itself so that
every dispatcher shares them (db/queries.py CLAIM, docs/pacing.md).

A table of its own rather than columns on `channels`: the claim writes the
budget of a busy channel many times a second, and those writes must not
contend with (or bloat) the channel row that pauses, webhooks and the
admin API update. `paced` is generated: the claim locks the budget only of
channels that have a limit.

Revision ID: 0011
Revises: 0014
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PACED = ("per_second IS NOT NULL OR per_minute IS NOT NULL OR per_day IS NOT NULL "
         "OR new_chats_per_day IS NOT NULL OR chat_gap_seconds IS NOT NULL "
         "OR warmup_start IS NOT NULL")


def upgrade() -> None:
    op.create_table(
        "channel_pacing",
        sa.Column("channel_id", sa.UUID(), nullable=False),
        sa.Column("per_second", sa.Float(), nullable=True),
        sa.Column("burst", sa.Integer(), nullable=True),
        sa.Column("per_minute", sa.Integer(), nullable=True),
        sa.Column("per_day", sa.Integer(), nullable=True),
        sa.Column("new_chats_per_day", sa.Integer(), nullable=True),
        sa.Column("chat_gap_seconds", sa.Float(), nullable=True),
        sa.Column("typing_time_seconds", sa.Integer(), nullable=True),
        sa.Column("timezone", sa.Text(), server_default="UTC", nullable=False),
        sa.Column("warmup_start", sa.Integer(), nullable=True),
        sa.Column("warmup_factor", sa.Float(), nullable=True),
        sa.Column("warmup_ceiling", sa.Integer(), nullable=True),
        sa.Column("warmup_from", sa.Date(), nullable=True),
        sa.Column("paced", sa.Boolean(), sa.Computed(PACED, persisted=True), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=True),
        sa.Column("refilled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("minute_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("minute_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("day", sa.Date(), nullable=True),
        sa.Column("day_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("day_new_chats", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("per_second > 0 AND burst >= 1 OR per_second IS NULL",
                           name="ck_channel_pacing_rate"),
        sa.CheckConstraint(
            "(per_minute IS NULL OR per_minute >= 1) AND (per_day IS NULL OR per_day >= 1) "
            "AND (new_chats_per_day IS NULL OR new_chats_per_day >= 0) "
            "AND (chat_gap_seconds IS NULL OR chat_gap_seconds > 0) "
            "AND (typing_time_seconds IS NULL OR typing_time_seconds BETWEEN 0 AND 60)",
            name="ck_channel_pacing_limits"),
        sa.CheckConstraint(
            "warmup_start IS NULL OR (warmup_start >= 1 AND warmup_factor >= 1 "
            "AND warmup_ceiling >= warmup_start AND warmup_from IS NOT NULL)",
            name="ck_channel_pacing_warmup"),
        sa.ForeignKeyConstraint(["channel_id"], ["channels.id"],
                                name="fk_channel_pacing_channel_id_channels", ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("channel_id", name="pk_channel_pacing"),
    )


def downgrade() -> None:
    op.drop_table("channel_pacing")
