"""The label app's closed vocabularies (project modes, roles, answer kinds, review actions) and the `--db` URL rule:
light (no ORM, no Alembic), so the label commands' configs check their flags without loading the database layer."""

from __future__ import annotations

from typing import Literal, get_args

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from rlhfkit.errors import UserError

Mode = Literal["rank", "pairwise", "demo"]
Role = Literal["labeler", "admin"]
Kind = Literal["rank", "pairwise", "demo", "skip"]
ReviewAction = Literal["accept", "send_back"]
MODES, ROLES, KINDS, REVIEW_ACTIONS = get_args(Mode), get_args(Role), get_args(Kind), get_args(ReviewAction)


def normalize_url(db: str) -> str:
    """`labels.db` -> sqlite:///labels.db; postgresql://... -> postgresql+psycopg://... (psycopg 3)."""
    db = (db or "").strip()
    if not db:
        raise UserError("--db is empty; give a SQLite file (labels.db) or a URL (postgresql://user@host/db)")
    if "://" not in db:
        return f"sqlite:///{db}"
    try:
        url = make_url(db)
    except ArgumentError:
        raise UserError(f"--db {db!r}: not a database URL (e.g. sqlite:///labels.db, postgresql://host/db)") from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise UserError(f"--db {db!r}: only SQLite and PostgreSQL are supported")
    return url.render_as_string(hide_password=False)
