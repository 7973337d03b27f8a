"""Alembic migrations of libtagger's database (installed as ``libtagger.migrations``)."""
