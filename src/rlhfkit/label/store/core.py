"""The core every part of the store stands on: the engine, one short transaction per write (`_write`, retried on
a transient conflict) or read (`_read`), the event log, a project by name, the errors the store raises, and `Who`
(the person behind a request).
"""

from __future__ import annotations

import contextlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from rlhfkit.errors import UserError
from rlhfkit.label import assign
from rlhfkit.label.db import Event, Project, is_disk_full

WRITE_RETRIES = 8
_TRANSIENT_PG = {"40001", "40P01"}  # serialization failure, deadlock detected


class NotFound(UserError):
    pass


class Forbidden(UserError):
    pass


class Conflict(UserError):
    pass


class AlreadyInvited(Conflict):
    """Re-inviting a person who has a live link: the caller must confirm (`replace=True`)."""


class InviteGone(UserError):
    """An invite link that expired or, single-use, was used already (HTTP 410 Gone)."""


class DiskFull(UserError):
    """The database could not write (its disk is full); the transaction was rolled back."""


@dataclass(frozen=True)
class Who:
    """The person behind a request."""

    user_id: int
    name: str
    role: str
    project_id: int
    project: str
    mode: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def _transient(exc: DBAPIError) -> bool:
    code = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return code in _TRANSIENT_PG or "database is locked" in str(exc).lower()


class StoreCore:
    """The engine and the transaction helpers; each part of `Store` is a subclass of this."""

    def __init__(self, engine: Engine, *, lease_seconds: float = assign.DEFAULT_LEASE_SECONDS,
                 clock: Callable[[], float] = time.time):
        self.engine = engine
        self.lease_seconds = lease_seconds
        self.clock = clock
        self._reader = engine.execution_options(readonly=True)
        self._next_sweep = 0.0
        # SQLite has one writer at a time, and its busy handler polls with sleeps of up to 100 ms: threads of
        # one server waiting there are served in no order, and an unlucky one starves (its p95 under 20
        # labelers was ~3x this lock's). Threads queue here instead; other processes (an import beside the
        # server) still wait through the busy timeout.
        sqlite = engine.dialect.name == "sqlite"
        self._write_lock = threading.Lock() if sqlite else contextlib.nullcontext()

    # ------------------------------------------------------------------------------------ plumbing

    def _write(self, work: Callable[[Session], object]):
        """Run `work(session)` in one transaction; retry transient conflicts with a short backoff."""
        for attempt in range(WRITE_RETRIES):
            try:
                with self._write_lock, Session(self.engine, expire_on_commit=False) as s, s.begin():
                    return work(s)
            except (OperationalError, DBAPIError) as exc:
                if is_disk_full(exc):  # the transaction was rolled back: say so in one line, never retry
                    raise DiskFull(f"database {self.engine.url.render_as_string(hide_password=True)}: the disk is "
                                   "full, nothing was written; free some space and try again") from None
                if isinstance(exc, IntegrityError) or not _transient(exc) or attempt == WRITE_RETRIES - 1:
                    raise
                time.sleep(0.01 * 2 ** attempt * (1 + secrets.randbelow(100) / 100))
        raise AssertionError("unreachable")

    def _read(self, work: Callable[[Session], object]):
        with Session(self._reader, expire_on_commit=False) as s, s.begin():
            return work(s)

    def _event(self, s: Session, kind: str, project_id: int | None, user_id: int | None, **data) -> None:
        s.add(Event(at=self.clock(), project_id=project_id, user_id=user_id, kind=kind, data=data))

    # ------------------------------------------------------------------------------------ projects

    def _project(self, s: Session, name: str) -> Project:
        project = s.scalar(select(Project).where(Project.name == name))
        if project is None:
            known = ", ".join(s.scalars(select(Project.name).order_by(Project.name))) or "none yet"
            raise NotFound(f"unknown project {name!r} (known: {known}); create it with `rlhf label import`")
        return project

    def project(self, name: str) -> Project:
        return self._read(lambda s: self._project(s, name))

    def projects(self) -> list[Project]:
        return self._read(lambda s: list(s.scalars(select(Project).order_by(Project.name))))
