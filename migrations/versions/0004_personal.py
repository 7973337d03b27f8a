"""Per-track embedding vectors (similar tracks) and personal genre heads.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("classifications") as batch:
        batch.add_column(sa.Column("vector", sa.LargeBinary))
    # Backfill: a track's vector is the mean of its window embeddings, L2-normalised.
    bind = op.get_bind()
    rows = bind.execute(sa.text(
        "SELECT id, embeddings, embedding_dim FROM classifications "
        "WHERE embeddings IS NOT NULL AND embedding_dim > 0")).all()
    for row_id, blob, dim in rows:
        windows = np.frombuffer(blob, dtype=np.float16).astype(np.float32).reshape(-1, dim)
        vector = windows.mean(axis=0)
        vector /= max(float(np.linalg.norm(vector)), 1e-12)
        bind.execute(sa.text("UPDATE classifications SET vector = :v WHERE id = :i"),
                     {"v": vector.astype(np.float16).tobytes(), "i": row_id})
    op.create_table(
        "heads",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("path", sa.String, nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("genres", sa.JSON, nullable=False),
        sa.Column("tracks", sa.Integer, nullable=False),
        sa.Column("metrics", sa.JSON, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("heads")
    with op.batch_alter_table("classifications") as batch:
        batch.drop_column("vector")
