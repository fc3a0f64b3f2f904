"""The labeling app's tables (SQLAlchemy 2) and how to open a database.

One row per thing a person did: an `Assignment` is a lease of one item to one labeler; a `Submission`
is what came back (idempotent by the client's UUID), with its per-output `Rating`s, the `RankEntry`
tiers of its ranking, or its `Demonstration`. `Event` is an append-only log of who did what.

Times are stored as UNIX seconds (float) so SQLite and PostgreSQL compare them the same way.
The schema itself is created by the Alembic migrations in `migrations/` (`upgrade`), never by
`create_all`, so a database made by an older release is upgraded in place.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    false,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from rlhfkit.errors import UserError
from rlhfkit.label.inputs import name_key
from rlhfkit.label.names import normalize_url

SQLITE_BUSY_TIMEOUT_MS = 30_000  # writers queue behind each other instead of failing at once
PG_DISK_FULL = "53100"  # SQLSTATE disk_full (PostgreSQL manual, Appendix A)


class Base(DeclarativeBase):
    pass


class Project(Base):
    __tablename__ = "project"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    mode: Mapped[str] = mapped_column(String(16))
    overlap: Mapped[int] = mapped_column(Integer)  # k: distinct labelers per item
    created_at: Mapped[float] = mapped_column(Float)
    guidelines: Mapped[str] = mapped_column(Text, default="", server_default="")  # Markdown, shown to labelers
    guidelines_updated_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    locked_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # set: no answer can be edited
    gold_rate: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")  # share of gold items shown
    qc_threshold: Mapped[float] = mapped_column(Float, default=0.7, server_default="0.7")  # flag labelers below
    # show a judge's ranking (item.judge_ranking) to labelers as a starting draft; hidden by default (migration 0006)
    judge_draft: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


def _name_key_of_row(context) -> str:
    return name_key(context.get_current_parameters()["name"])


class User(Base):
    """A person of one project. Two people of a project may not look alike: `name_key` (`inputs.name_key`, the
    name as one reads it) is unique per project in the database itself, so two invites racing on PostgreSQL
    ("ann" and "ANN" at once, each past the store's look-alike check) cannot both be stored (migration 0007)."""

    __tablename__ = "labeler"  # "user" is reserved in PostgreSQL
    __table_args__ = (UniqueConstraint("project_id", "name"),
                      Index("uq_labeler_name_key", "project_id", "name_key", unique=True))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"))
    name: Mapped[str] = mapped_column(String(200))
    # Filled from `name` on insert; Text, as case folding lengthens some names ("ß" -> "ss"). NULL only on a person
    # whom migration 0007 found looking like an earlier one of the project (both stored before the look-alike rule
    # or by the race it closes): they keep their name, answers and link.
    name_key: Mapped[str | None] = mapped_column(Text, nullable=True, default=_name_key_of_row)
    role: Mapped[str] = mapped_column(String(16))
    invite_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the invite token
    created_at: Mapped[float] = mapped_column(Float)
    invite_expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: the link never expires
    invite_single_use: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    revoked_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # set: no link, no session works
    invited_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # when the current link was made
    guidelines_seen_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class LoginSession(Base):
    """A logged-in browser or script: the cookie's hash, valid until `expires_at`."""

    __tablename__ = "session"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 of the cookie value
    user_id: Mapped[int] = mapped_column(ForeignKey("labeler.id"), index=True)
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)


class Item(Base):
    __tablename__ = "item"
    __table_args__ = (UniqueConstraint("project_id", "ext_id"), Index("ix_item_queue", "project_id", "taken"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    project_id: Mapped[int] = mapped_column(ForeignKey("project.id"))
    ext_id: Mapped[str] = mapped_column(String(200))  # the `id` of the imported record
    # What labelers see instead (pages, drafts, API): random, so it tells nothing, a gold item's no more than
    # any other's (issue 31, item 13). Nullable only because migration 0004 adds it to existing rows.
    public_id: Mapped[str | None] = mapped_column(String(32), nullable=True, unique=True, index=True,
                                                  default=lambda: secrets.token_hex(8))
    prompt: Mapped[str] = mapped_column(Text)  # the text; for a conversation, its turns as plain text
    messages: Mapped[list | None] = mapped_column(JSON, nullable=True)  # a conversation prompt: [{role, content}]
    # The conversation's tool schemas (TRL's `tools` column), rendered with it by the chat template (migration 0005).
    tools: Mapped[list | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    position: Mapped[int] = mapped_column(Integer)  # order in the imported file
    # Slots in use: submitted (non-skip) answers + live leases. The lease query only ever changes it
    # with `UPDATE ... WHERE taken < overlap`, which is what keeps an item at k labelers under races.
    taken: Mapped[int] = mapped_column(Integer, default=0)
    locked_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # set: its answers can't be edited
    # A gold item has a known answer (`gold_ranking`, tie groups of candidate indices); it is shown to every
    # labeler at the project's `gold_rate`, outside the k-labeler rule, and never exported as training data.
    is_gold: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    gold_ranking: Mapped[list | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    # A judge's ranking (tie groups of candidate indices, best first) and its name (`rlhf loop --judge`, 0006)
    judge_ranking: Mapped[list | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    judge_name: Mapped[str | None] = mapped_column(String(200), nullable=True)


class Candidate(Base):
    __tablename__ = "candidate"
    __table_args__ = (UniqueConstraint("item_id", "idx"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id"))
    idx: Mapped[int] = mapped_column(Integer)  # index in the imported `completions`
    text: Mapped[str] = mapped_column(Text)  # a trajectory: its turns as plain text (search, the board's snippets)
    source: Mapped[str] = mapped_column(String(200))  # never shown to labelers (blind evaluation)
    finished: Mapped[bool] = mapped_column(Boolean, default=True)
    # A trajectory: the messages after the prompt (assistant turns, tool calls, tool results); None: a text.
    messages: Mapped[list | None] = mapped_column(JSON(none_as_null=True), nullable=True)


class Assignment(Base):
    """A lease: item shown to one labeler until `expires_at`; one row per (item, labeler), ever."""

    __tablename__ = "assignment"
    __table_args__ = (UniqueConstraint("item_id", "user_id"), Index("ix_assignment_open", "state", "expires_at"))
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("labeler.id"), index=True)
    state: Mapped[str] = mapped_column(String(16))  # leased | submitted | skipped | expired
    shown: Mapped[list] = mapped_column(JSON)  # candidate indices in the order they are shown
    leased_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float)
    # Whether the task page served this lease with the judge's ranking as a starting draft (the project's
    # `judge_draft` on when a page was rendered, and the item had a judge's ranking): True once any page of the
    # lease showed it, False when none did (the API never serves a draft). The answer to the lease, and every edit
    # of it (the edit page shows the labeler's own answer, never the judge's), carries it. NULL: unknown, an
    # answer stored before migration 0008 that the event log cannot clear.
    judge_draft: Mapped[bool | None] = mapped_column(Boolean, nullable=True)


class Submission(Base):
    __tablename__ = "submission"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)  # the client's UUID: a retry is stored once
    assignment_id: Mapped[int] = mapped_column(ForeignKey("assignment.id"), unique=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("item.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("labeler.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # rank | pairwise | demo | skip
    created_at: Mapped[float] = mapped_column(Float)
    elapsed_ms: Mapped[int] = mapped_column(Integer)
    choice: Mapped[str | None] = mapped_column(String(8), nullable=True)  # pairwise: A | B | equal
    skip_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    notes: Mapped[str | None] = mapped_column(Text, nullable=True)
    version: Mapped[int] = mapped_column(Integer, default=1, server_default="1")  # 1 + edits; the rows hold the last
    edited_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class AnswerVersion(Base):
    """A version of an answer that an edit replaced: the whole answer as it was (`answer`, JSON), so that
    every version stays readable; the submission's own rows always hold the newest, which exports take."""

    __tablename__ = "answer_version"
    __table_args__ = (UniqueConstraint("submission_id", "version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submission.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float)  # when this version was stored
    answer: Mapped[dict] = mapped_column(JSON)
    edit_client_id: Mapped[str] = mapped_column(String(64), unique=True)  # the edit that replaced it (idempotent)


class Review(Base):
    """An admin's verdict on one version of an answer: accept, or send back with a comment. A sent-back
    answer returns to its labeler until they edit it (`resolved_at`)."""

    __tablename__ = "review"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submission.id"), index=True)
    reviewer_id: Mapped[int] = mapped_column(ForeignKey("labeler.id"))
    action: Mapped[str] = mapped_column(String(16))  # accept | send_back
    comment: Mapped[str] = mapped_column(Text, default="")
    version: Mapped[int] = mapped_column(Integer)  # the answer's version it judged
    created_at: Mapped[float] = mapped_column(Float)
    resolved_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # send_back: when it was edited


class Rating(Base):
    """Likert 1-7, the eight InstructGPT flags, notes and (a trajectory) flagged turns for one output of one
    submission."""

    __tablename__ = "rating"
    __table_args__ = (UniqueConstraint("submission_id", "candidate_idx"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submission.id"))
    candidate_idx: Mapped[int] = mapped_column(Integer)
    likert: Mapped[int | None] = mapped_column(Integer, nullable=True)
    flags: Mapped[dict] = mapped_column(JSON)
    notes: Mapped[str] = mapped_column(Text, default="")
    # A trajectory's flagged turns: [{"turn": index in its messages, "reason": text}]; None on a text output.
    turn_flags: Mapped[list | None] = mapped_column(JSON(none_as_null=True), nullable=True)


class RankEntry(Base):
    """One output's tier in a ranking: tier 0 is best; outputs sharing a tier are tied."""

    __tablename__ = "ranking"
    __table_args__ = (UniqueConstraint("submission_id", "candidate_idx"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submission.id"))
    candidate_idx: Mapped[int] = mapped_column(Integer)
    tier: Mapped[int] = mapped_column(Integer)


class Demonstration(Base):
    __tablename__ = "demonstration"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submission.id"), unique=True)
    text: Mapped[str] = mapped_column(Text)


class Event(Base):
    """Append-only log: import, invite, login, lease, expire, submit, duplicate, skip."""

    __tablename__ = "event"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[float] = mapped_column(Float)
    project_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    kind: Mapped[str] = mapped_column(String(32))
    data: Mapped[dict] = mapped_column(JSON)


# ---------------------------------------------------------------------------------------------- engine

def open_engine(db: str) -> Engine:
    """An engine for `db`; SQLite gets WAL, a busy timeout, full fsync and BEGIN IMMEDIATE transactions."""
    url = normalize_url(db)
    if url.startswith("sqlite"):
        path = make_url(url).database
        if path and path != ":memory:" and not Path(path).parent.exists():
            raise UserError(f"--db {db!r}: directory {Path(path).parent} does not exist")
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000,
                                                  "check_same_thread": False})
        _sqlite_pragmas(engine)
        return engine
    try:
        return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    except ModuleNotFoundError as exc:
        raise UserError(f"--db {db!r}: needs the PostgreSQL driver ({exc.name}); "
                        "pip install 'rlhfkit[postgres]'") from None


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA synchronous=FULL")  # an acknowledged submission survives a crash
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # Writers take the write lock at BEGIN: a deferred transaction that reads and then writes can fail
        # with "database is locked" when it upgrades its lock, which the busy timeout cannot wait out.
        # Read-only work (`readonly` execution option) reads a WAL snapshot without blocking anyone.
        readonly = conn.get_execution_options().get("readonly")
        conn.exec_driver_sql("BEGIN" if readonly else "BEGIN IMMEDIATE")


def upgrade(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (what `serve` and `import` do first)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).parent / "migrations"))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def is_disk_full(exc: BaseException) -> bool:
    """Whether a database error means the disk (or the database's size limit) is full: SQLite's
    SQLITE_FULL, "database or disk is full" (https://sqlite.org/rescode.html#full), or PostgreSQL's
    disk_full. The transaction it broke is rolled back; nothing of it was stored."""
    if not isinstance(exc, DBAPIError):
        return False
    code = getattr(exc.orig, "sqlstate", None)
    return code == PG_DISK_FULL or "database or disk is full" in str(exc.orig).lower()
