"""Personal heads live in the database, not in files beside it or in one machine's data folder.

Several machines sharing a PostgreSQL database all apply the active head. Each head's file is
read into ``heads.data``; a head whose file is not on the machine that upgrades keeps its
record and metrics but is deactivated (``libtagger learn`` makes a new one). The files are left
where they are.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

HEADS = sa.table("heads", sa.column("id", sa.Integer), sa.column("path", sa.String),
                 sa.column("data", sa.LargeBinary), sa.column("active", sa.Boolean))


def upgrade() -> None:
    with op.batch_alter_table("heads") as batch:
        batch.add_column(sa.Column("data", sa.LargeBinary))
    connection = op.get_bind()
    for head_id, path in connection.execute(sa.select(HEADS.c.id, HEADS.c.path)).all():
        try:
            with open(path, "rb") as stored:
                values = {"data": stored.read()}
        except OSError:
            values = {"active": False}
        connection.execute(sa.update(HEADS).where(HEADS.c.id == head_id).values(**values))
    with op.batch_alter_table("heads") as batch:
        batch.drop_column("path")


def downgrade() -> None:
    with op.batch_alter_table("heads") as batch:
        batch.add_column(sa.Column("path", sa.String, nullable=False, server_default=""))
        batch.drop_column("data")
