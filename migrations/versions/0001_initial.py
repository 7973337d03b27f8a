"""Tracks, their classifications and genres, and runs.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# 64 bits on PostgreSQL (its INTEGER is 32); SQLite's INTEGER already is, and stays as it was.
INT64 = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("roots", sa.JSON, nullable=False),
        sa.Column("counts", sa.JSON, nullable=False),
    )
    op.create_table(
        "tracks",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("path", sa.LargeBinary, nullable=False, unique=True),
        sa.Column("size", INT64, nullable=False),
        sa.Column("mtime_ns", INT64, nullable=False),
        sa.Column("identity", sa.String(40)),
        sa.Column("format", sa.String(32)),
        sa.Column("duration", sa.Float),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("last_error", sa.String),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("added_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("missing_since", sa.DateTime),
    )
    op.create_index("ix_tracks_identity", "tracks", ["identity"])
    op.create_index("ix_tracks_status", "tracks", ["status"])
    op.create_table(
        "classifications",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("track_id", sa.Integer, sa.ForeignKey("tracks.id", ondelete="CASCADE"),
                  nullable=False, unique=True),
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="SET NULL")),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("windows", sa.Integer, nullable=False),
        sa.Column("voting_windows", sa.Integer, nullable=False),
        sa.Column("duration", sa.Float),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("timeline", sa.JSON),
        sa.Column("tags", sa.JSON),
        sa.Column("embeddings", sa.LargeBinary),
        sa.Column("embedding_dim", sa.Integer),
    )
    op.create_index("ix_classifications_created_at", "classifications", ["created_at"])
    op.create_table(
        "genres",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("classification_id", sa.Integer,
                  sa.ForeignKey("classifications.id", ondelete="CASCADE"), nullable=False),
        sa.Column("rank", sa.Integer, nullable=False),
        sa.Column("genre", sa.String(100), nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("confidence", sa.Float, nullable=False),
    )
    op.create_index("ix_genres_classification_id", "genres", ["classification_id"])
    op.create_index("ix_genres_genre_score", "genres", ["genre", "score"])


def downgrade() -> None:
    op.drop_table("genres")
    op.drop_table("classifications")
    op.drop_table("tracks")
    op.drop_table("runs")
