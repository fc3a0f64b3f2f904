"""Alembic migrations of the labeling app's database (run by `rlhfkit.label.db.upgrade`)."""
