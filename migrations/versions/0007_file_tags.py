"""Tracks remember what their files say: the genre tag, artist, title, album, and our write.

Read at scan time in the workers (the same read that plans the tag write), so ``query tag:``,
``artist:``, ``title:``, ``album:`` and ``written:`` answer about the user's files, not only
about libtagger's guesses.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COLUMNS = ("file_genre", "file_genre_key", "written", "artist", "title", "album")


def upgrade() -> None:
    with op.batch_alter_table("tracks") as batch:
        for name in COLUMNS:
            batch.add_column(sa.Column(name, sa.String))


def downgrade() -> None:
    with op.batch_alter_table("tracks") as batch:
        for name in reversed(COLUMNS):
            batch.drop_column(name)
