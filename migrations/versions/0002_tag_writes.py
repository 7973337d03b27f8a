"""Tag writes: what each file held before we wrote its genre, and what we wrote (for undo).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tag_writes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("track_id", sa.Integer, sa.ForeignKey("tracks.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="SET NULL")),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("path", sa.LargeBinary, nullable=False),
        sa.Column("before", sa.JSON, nullable=False),
        sa.Column("after", sa.JSON, nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("error", sa.String),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("written_at", sa.DateTime),
    )
    op.create_index("ix_tag_writes_track_id", "tag_writes", ["track_id"])
    op.create_index("ix_tag_writes_run_id", "tag_writes", ["run_id"])
    op.create_index("ix_tag_writes_state", "tag_writes", ["state"])
    op.create_index("ix_tag_writes_created_at", "tag_writes", ["created_at"])


def downgrade() -> None:
    op.drop_table("tag_writes")
