"""Tag writes remember their temporary copy's name, and the snapshot of the file they change.

Only a file whose name was recorded here before it was created is ever removed by libtagger
(a crash mid-write leaves it behind). The snapshot (device, inode, size, mtime) is the file
that was analysed: a write applies only while the file is still that one.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tag_writes") as batch:
        batch.add_column(sa.Column("temp_path", sa.LargeBinary))
        batch.add_column(sa.Column("snapshot", sa.JSON))


def downgrade() -> None:
    with op.batch_alter_table("tag_writes") as batch:
        batch.drop_column("snapshot")
        batch.drop_column("temp_path")
