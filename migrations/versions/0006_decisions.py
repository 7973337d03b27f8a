"""A classification keeps the genre tree's decision: what to write, its level, and why.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("classifications") as batch:
        batch.add_column(sa.Column("decision", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("classifications") as batch:
        batch.drop_column("decision")
