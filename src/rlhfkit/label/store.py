"""All the labeling app's SQL, in one place.

`Store` wraps an engine. Every write runs in one short transaction (`_write`), retried when the database
reports a transient conflict (a PostgreSQL deadlock or serialization failure, a locked SQLite file).
Two conditional updates carry the concurrency guarantees, on SQLite and PostgreSQL alike:

- leasing: `UPDATE item SET taken = taken + 1 WHERE id = ? AND taken < overlap` — at most k slots;
- answering: `UPDATE assignment SET state = ? WHERE id = ? AND state = 'leased'` — one answer per lease;

and two unique constraints make retries harmless: `submission.client_id` (a resent answer is stored
once) and `assignment (item_id, user_id)` (no labeler sees an item twice).
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import and_, delete, exists, false, func, select, true, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from rlhfkit.errors import UserError
from rlhfkit.label import assign
from rlhfkit.label.answers import Answer, BadAnswer, pairwise_tiers
from rlhfkit.label.db import (
    KINDS,
    MODES,
    REVIEW_ACTIONS,
    ROLES,
    AnswerVersion,
    Assignment,
    Candidate,
    Demonstration,
    Event,
    Item,
    LoginSession,
    Project,
    RankEntry,
    Rating,
    Review,
    Submission,
    User,
    is_disk_full,
)
from rlhfkit.label.inputs import BadInput, name_key, person_name, unicode_problem

SESSION_SECONDS = 14 * 24 * 3600
MAX_GUIDELINES = 100_000  # characters of Markdown
WRITE_RETRIES = 8
MAX_COMMENT = 5_000  # characters in a reviewer's comment
HISTORY_LIMIT = 200  # answers on a labeler's history page
SWEEP_EVERY_S = 1.0  # an expired lease's slot returns at most this late
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


def conversation_text(messages: list[dict]) -> str:
    """A conversation as plain text, one "role: content" block a turn (the `item.prompt` of a chat item)."""
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


def digest(token: str) -> str:
    """Tokens (invites, sessions) are stored as their SHA-256 only. Whatever a client sends hashes (a lone
    surrogate as its escape): it simply matches no token."""
    return hashlib.sha256(token.encode("utf-8", "backslashreplace")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)  # 256 random bits


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


@dataclass
class LeasedItem:
    """One item leased to a labeler, as they see it: no sources, outputs in their shown order."""

    assignment_id: int
    item_id: str
    mode: str
    prompt: str | list[dict]  # a text, or a conversation: [{"role", "content"}, ...]
    outputs: list[tuple[int, str]]  # (candidate index, text), shown order
    expires_at: float
    page: int
    pages: int
    finished: list[bool] = field(default_factory=list)  # each shown output ended with EOS (False: cut off)


@dataclass
class Receipt:
    submission_id: int
    client_id: str
    assignment_id: int
    item_id: str
    kind: str
    duplicate: bool = False


def _transient(exc: DBAPIError) -> bool:
    code = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return code in _TRANSIENT_PG or "database is locked" in str(exc).lower()


class Store:
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

    def import_items(self, name: str, mode: str, overlap: int | None, records: list[dict]) -> tuple[int, int]:
        """Create the project if needed and add the records it does not hold yet: (added, already there).

        One transaction: a failure leaves the database as it was.
        """
        if mode not in MODES:
            raise UserError(f"--mode {mode!r}: expected one of {', '.join(MODES)}")
        if overlap is not None and overlap < 1:
            raise UserError(f"--overlap {overlap}: each item needs at least one labeler")

        def work(s: Session):
            now = self.clock()
            project = s.scalar(select(Project).where(Project.name == name))
            if project is None:
                project = Project(name=name, mode=mode, overlap=overlap or 3, created_at=now)
                s.add(project)
                s.flush()
            elif project.mode != mode:
                raise UserError(f"project {name!r} collects {project.mode!r} labels, not {mode!r}")
            elif overlap is not None and overlap != project.overlap:
                project.overlap = overlap
            existing = set(s.scalars(select(Item.ext_id).where(Item.project_id == project.id)))
            start = s.scalar(select(func.coalesce(func.max(Item.position), -1)).where(
                Item.project_id == project.id)) + 1
            added = 0
            for record in records:
                if record["id"] in existing:
                    continue
                existing.add(record["id"])
                prompt, messages = record["prompt"], None
                if isinstance(prompt, list):  # a conversation: kept as turns, its text for reading and search
                    messages, prompt = prompt, conversation_text(prompt)
                item = Item(project_id=project.id, ext_id=record["id"], prompt=prompt, messages=messages,
                            position=start + added, taken=0)
                s.add(item)
                s.flush()
                s.add_all(Candidate(item_id=item.id, idx=i, text=c["text"], source=c.get("source", "unknown"),
                                    finished=c.get("finished", True))
                          for i, c in enumerate(record.get("completions", [])))
                added += 1
            self._event(s, "import", project.id, None, added=added, present=len(records) - added)
            return added, len(records) - added

        return self._write(work)

    # ------------------------------------------------------------------------------- people, sessions

    def invite(self, project: str, name: str, role: str = "labeler", *, replace: bool = False,
               expires_in: float | None = None, single_use: bool = False) -> str:
        """Create a person (or give a revoked one a new link); returns the invite token.

        The name is stored as `inputs.person_name` makes it (NFKC, no invisible characters) and may not
        collide with another person's of the project (`name_key`: case and width ignored).
        A person who has a live link is only re-invited with `replace` (their old link and sessions end).
        `expires_in` seconds: the link stops working then (None: never); `single_use`: it logs in once.
        The project's last admin cannot be made a labeler.
        """
        if role not in ROLES:
            raise UserError(f"--role {role!r}: expected one of {', '.join(ROLES)}")
        name = person_name(name)
        if expires_in is not None and not expires_in > 0:
            raise UserError(f"--expires must be above 0 seconds, got {expires_in}")
        token = new_token()

        def work(s: Session):
            p = self._project(s, project)
            now = self.clock()
            user = s.scalar(select(User).where(User.project_id == p.id, User.name == name))
            if user is None and (same := self._person_named(s, p, name)) is not None:
                raise Conflict(f"{name!r} would look like {same.name!r}, who is in project {p.name!r} already "
                               f"(names are compared ignoring case and width); re-invite {same.name!r} or pick "
                               "another name")
            if user is None:
                user = User(project_id=p.id, name=name, role=role, invite_hash=digest(token), created_at=now)
                s.add(user)
            else:
                if user.revoked_at is None and not replace:
                    raise AlreadyInvited(f"{name!r} is already invited to project {p.name!r} as {user.role}; "
                                         "re-invite with --replace to replace their link (it logs them out)")
                if user.role == "admin" and role != "admin":
                    self._keep_an_admin(s, p, user, "made a labeler")
                user.invite_hash, user.role, user.revoked_at = digest(token), role, None
                self._end_sessions(s, user)
            user.invite_expires_at = now + expires_in if expires_in is not None else None
            user.invite_single_use, user.invited_at = single_use, now
            s.flush()
            self._event(s, "invite", p.id, user.id, name=name, role=role, expires_in=expires_in,
                        single_use=single_use)

        self._write(work)
        return token

    def revoke(self, project: str, name: str) -> None:
        """End a person's link and sessions and return their live lease; their answers stay. `name` is theirs
        as stored, or one that reads the same (`inputs.name_key`)."""
        if (problem := unicode_problem(name)) is not None:
            raise BadInput(f"name {name!r} {problem}")

        def work(s: Session):
            p = self._project(s, project)
            user = s.scalar(select(User).where(User.project_id == p.id, User.name == name))
            if user is None:
                user = self._person_named(s, p, name)
            if user is None:
                raise NotFound(f"nobody called {name!r} in project {p.name!r}")
            if user.revoked_at is not None:
                return
            if user.role == "admin":
                self._keep_an_admin(s, p, user, "revoked")
            user.revoked_at = self.clock()
            user.invite_hash = digest(new_token())  # nobody knows this token: the old link is dead
            self._end_sessions(s, user)
            leases = s.execute(select(Assignment.id, Assignment.item_id)
                               .where(Assignment.user_id == user.id, Assignment.state == "leased")).all()
            for aid, item_id in leases:
                s.execute(update(Assignment).where(Assignment.id == aid).values(state="expired"))
                s.execute(update(Item).where(Item.id == item_id).values(taken=Item.taken - 1))
            self._event(s, "revoke", p.id, user.id, name=name, leases_returned=len(leases))

        self._write(work)

    def _person_named(self, s: Session, p: Project, name: str) -> User | None:
        """The person of project `p` whose name reads as `name` (`inputs.name_key`), if any."""
        key = name_key(name)
        return next((u for u in s.scalars(select(User).where(User.project_id == p.id)) if name_key(u.name) == key),
                    None)

    def _keep_an_admin(self, s: Session, p: Project, user: User, what: str) -> None:
        admins = s.scalar(select(func.count()).select_from(User).where(
            User.project_id == p.id, User.role == "admin", User.revoked_at.is_(None), User.id != user.id))
        if not admins:
            raise Conflict(f"{user.name!r} is the last admin of project {p.name!r} and cannot be {what}; "
                           "invite another admin first")

    def _end_sessions(self, s: Session, user: User) -> None:
        s.execute(update(LoginSession).where(LoginSession.user_id == user.id).values(expires_at=0))

    def invitee(self, invite_token: str) -> dict:
        """Whom an invite link logs in: {name, role, project}. Read-only: opening the link's page (a chat preview
        fetches it too) changes nothing; `login` does. `NotFound` when the link is unknown, replaced or revoked,
        `InviteGone` when it expired or, single-use, was used."""

        def work(s: Session):
            row = s.execute(select(User, Project.name).join(Project, Project.id == User.project_id)
                            .where(User.invite_hash == digest(invite_token), User.revoked_at.is_(None))).first()
            if row is None:
                raise NotFound("this invite link is unknown or was replaced by a newer one; ask your admin")
            user, project = row
            if user.invite_expires_at is not None and user.invite_expires_at <= self.clock():
                raise InviteGone("this invite link has expired or was already used; ask your admin for a new one")
            return {"name": user.name, "role": user.role, "project": project}

        return self._read(work)

    def login(self, invite_token: str) -> str | None:
        """An invite token -> a new session token (None when the invite is unknown or revoked;
        `InviteGone` when it expired or, single-use, was used)."""
        session_token = new_token()

        def work(s: Session):
            user = s.scalar(select(User).where(User.invite_hash == digest(invite_token), User.revoked_at.is_(None)))
            if user is None:
                return None
            now = self.clock()
            if user.invite_expires_at is not None and user.invite_expires_at <= now:
                return "gone"
            if user.invite_single_use:
                user.invite_expires_at = now  # used: it never logs anyone in again
            s.add(LoginSession(token_hash=digest(session_token), user_id=user.id, created_at=now,
                               expires_at=now + SESSION_SECONDS))
            self._event(s, "login", user.project_id, user.id)
            return session_token

        token = self._write(work)
        if token == "gone":
            raise InviteGone("this invite link has expired or was already used; ask your admin for a new one")
        return token

    def logout(self, session_token: str) -> None:
        self._write(lambda s: s.execute(update(LoginSession).where(LoginSession.token_hash == digest(session_token))
                                        .values(expires_at=0)))

    def who(self, session_token: str) -> Who | None:
        def work(s: Session):
            row = s.execute(
                select(User, Project).join(LoginSession, LoginSession.user_id == User.id)
                .join(Project, Project.id == User.project_id)
                .where(LoginSession.token_hash == digest(session_token), LoginSession.expires_at > self.clock(),
                       User.revoked_at.is_(None))
            ).first()
            if row is None:
                return None
            user, p = row
            return Who(user.id, user.name, user.role, p.id, p.name, p.mode)

        return self._read(work)

    # ---------------------------------------------------------------------------------- guidelines

    def set_guidelines(self, project: str, text: str) -> None:
        """Replace a project's guidelines (Markdown; empty: none). Labelers see them again before their next item."""
        if len(text) > MAX_GUIDELINES:
            raise UserError(f"the guidelines are longer than {MAX_GUIDELINES} characters")

        def work(s: Session):
            p = self._project(s, project)
            p.guidelines, p.guidelines_updated_at = text, self.clock()
            self._event(s, "guidelines", p.id, None, chars=len(text))

        self._write(work)

    def guidelines(self, project: str) -> str:
        return self.project(project).guidelines or ""

    def guidelines_unread(self, who: Who) -> bool:
        """Whether the project has guidelines this person has not confirmed reading since they last changed."""

        def work(s: Session):
            p, seen = s.execute(select(Project, User.guidelines_seen_at).join(User, User.project_id == Project.id)
                                .where(User.id == who.user_id)).one()
            return bool((p.guidelines or "").strip()) and (seen is None or seen < (p.guidelines_updated_at or 0))

        return self._read(work)

    def guidelines_read(self, who: Who) -> None:
        self._write(lambda s: s.execute(update(User).where(User.id == who.user_id)
                                        .values(guidelines_seen_at=self.clock())))

    # -------------------------------------------------------------------------------------- leases

    def expire_leases(self) -> int:
        """Return the slots of leases past their expiry to the pool; how many expired."""

        def work(s: Session):
            now = self.clock()
            rows = s.execute(select(Assignment.id, Assignment.item_id, Assignment.user_id)
                             .where(Assignment.state == "leased", assign.is_expired(Assignment.expires_at, now))
                             .order_by(Assignment.item_id).limit(500)).all()
            n = 0
            for aid, item_id, user_id in rows:
                done = s.execute(update(Assignment).where(Assignment.id == aid, Assignment.state == "leased")
                                 .values(state="expired"))
                if done.rowcount:
                    s.execute(update(Item).where(Item.id == item_id).values(taken=Item.taken - 1))
                    self._event(s, "expire", None, user_id, assignment=aid, item=item_id)
                    n += 1
            return n

        return self._write(work)

    def next_task(self, who: Who) -> LeasedItem | None:
        """The labeler's live lease, or a new one on the best open item; None when nothing is left."""
        if self.clock() >= self._next_sweep:  # sweeping is a write: do it at most every SWEEP_EVERY_S
            self._next_sweep = self.clock() + min(SWEEP_EVERY_S, self.lease_seconds / 10)
            self.expire_leases()

        def work(s: Session):
            now = self.clock()
            current = s.scalar(select(Assignment).where(Assignment.user_id == who.user_id,
                                                        Assignment.state == "leased",
                                                        ~assign.is_expired(Assignment.expires_at, now)))
            if current is not None:
                return self._leased_item(s, who, current)
            overlap, gold_rate = s.execute(select(Project.overlap, Project.gold_rate)
                                           .where(Project.id == who.project_id)).one()
            seen = exists().where(Assignment.item_id == Item.id, Assignment.user_id == who.user_id)
            rows = s.execute(select(Item.id, Item.position, Item.taken)
                             .where(Item.project_id == who.project_id, Item.taken < overlap, ~seen,
                                    Item.is_gold == false())
                             .order_by(Item.position).limit(64)).all()
            queue = assign.queue_order([assign.Slot(*r) for r in rows], overlap)
            if queue and gold_rate > 0:  # a gold item goes to every labeler, outside the k-labeler rule
                given = s.scalar(select(func.count()).select_from(Assignment).where(Assignment.user_id == who.user_id))
                if assign.wants_gold(who.user_id, given, gold_rate):
                    gold = s.scalar(select(Item.id).where(Item.project_id == who.project_id, Item.is_gold == true(),
                                                          ~seen).order_by(Item.position).limit(1))
                    if gold is not None:
                        queue = [gold]
            for item_id in queue:
                took = s.execute(update(Item).where(Item.id == item_id, Item.is_gold | (Item.taken < overlap))
                                 .values(taken=Item.taken + 1))
                if not took.rowcount:
                    continue  # another labeler filled the last slot first
                k = s.scalar(select(func.count()).where(Candidate.item_id == item_id))
                lease = Assignment(item_id=item_id, user_id=who.user_id, state="leased", shown=[],
                                   leased_at=now, expires_at=assign.lease_expiry(now, self.lease_seconds))
                s.add(lease)
                s.flush()
                lease.shown = assign.shown_order(k, seed=lease.id)
                self._event(s, "lease", who.project_id, who.user_id, assignment=lease.id, item=item_id)
                return self._leased_item(s, who, lease)
            return None

        return self._write(work)

    def _leased_item(self, s: Session, who: Who, a: Assignment) -> LeasedItem:
        item = s.get(Item, a.item_id)
        rows = s.execute(select(Candidate.idx, Candidate.text, Candidate.finished)
                         .where(Candidate.item_id == a.item_id)).all()
        texts, finished = {i: t for i, t, _ in rows}, {i: f for i, _, f in rows}
        overlap, gold_rate = s.execute(select(Project.overlap, Project.gold_rate)
                                       .where(Project.id == who.project_id)).one()
        answered = s.scalar(select(func.count()).select_from(Submission).where(Submission.user_id == who.user_id))
        seen = exists().where(Assignment.item_id == Item.id, Assignment.user_id == who.user_id)
        # N counts every item still open to this labeler, gold ones too (while gold is mixed in): whichever kind
        # is on screen, it is counted once, in n, so N does not tell them apart (issue 31, item 13).
        open_to_me = (Item.taken < overlap) & (Item.is_gold == false())
        if gold_rate > 0:
            open_to_me = open_to_me | (Item.is_gold == true())
        available = s.scalar(select(func.count()).select_from(Item).where(
            Item.project_id == who.project_id, ~seen, open_to_me))
        page, pages = assign.page_numbers(answered, available)
        prompt = item.messages if item.messages is not None else item.prompt
        return LeasedItem(a.id, item.public_id, who.mode, prompt, [(i, texts[i]) for i in a.shown], a.expires_at,
                          page, pages, [bool(finished[i]) for i in a.shown])

    # --------------------------------------------------------------------------------- submissions

    def output_count(self, who: Who, assignment_id: int) -> int:
        """How many outputs the item of one of this labeler's assignments has (to check an answer)."""

        def work(s: Session):
            row = s.execute(select(Assignment.user_id, func.count(Candidate.id))
                            .outerjoin(Candidate, Candidate.item_id == Assignment.item_id)
                            .where(Assignment.id == assignment_id).group_by(Assignment.id)).first()
            if row is None or row[0] != who.user_id:
                raise NotFound(f"no assignment {assignment_id} for {who.name}")
            return row[1]

        return self._read(work)

    def submit(self, who: Who, assignment_id: int, ans: Answer) -> Receipt:
        """Store an answer once. Resending the same `client_id` returns the first receipt."""
        try:
            return self._write(lambda s: self._submit(s, who, assignment_id, ans))
        except IntegrityError:
            # Two copies of one answer raced (PostgreSQL): the other one won; report it.
            return self._write(lambda s: self._submit(s, who, assignment_id, ans))

    def _duplicate(self, s: Session, who: Who, client_id: str) -> Receipt | None:
        row = s.execute(select(Submission, Item).join(Item, Item.id == Submission.item_id)
                        .where(Submission.client_id == client_id)).first()
        if row is None:
            return None
        sub, item = row
        if sub.user_id != who.user_id:
            raise Conflict("client_id was already used by someone else; generate a new UUID per answer")
        return Receipt(sub.id, sub.client_id, sub.assignment_id, item.public_id, sub.kind, duplicate=True)

    def _submit(self, s: Session, who: Who, assignment_id: int, ans: Answer) -> Receipt:
        if (dup := self._duplicate(s, who, ans.client_id)) is not None:
            return dup
        a = s.get(Assignment, assignment_id)
        if a is None or a.user_id != who.user_id:
            raise NotFound(f"no assignment {assignment_id} for {who.name}")
        item = s.get(Item, a.item_id)
        new_state = "skipped" if ans.kind == "skip" else "submitted"
        moved = s.execute(update(Assignment).where(Assignment.id == a.id, Assignment.state == "leased")
                          .values(state=new_state)).rowcount
        if moved:
            if ans.kind == "skip":  # the slot goes back to the pool for someone else
                s.execute(update(Item).where(Item.id == item.id).values(taken=Item.taken - 1))
        else:
            s.expire(a)
            if (dup := self._duplicate(s, who, ans.client_id)) is not None:
                return dup
            if a.state != "expired":
                raise Conflict("this item was already answered (a different client_id); fetch the next one")
            if ans.kind != "skip":
                # A late answer on an expired lease is kept if the item still has a free slot (a gold item always
                # has one, as when it is leased: refusing it would tell gold apart).
                overlap = s.scalar(select(Project.overlap).where(Project.id == who.project_id))
                took = s.execute(update(Item).where(Item.id == item.id, Item.is_gold | (Item.taken < overlap))
                                 .values(taken=Item.taken + 1)).rowcount
                if not took:
                    raise Conflict("your lease on this item expired and other labelers have taken it")
            s.execute(update(Assignment).where(Assignment.id == a.id).values(state=new_state))
        sub = Submission(client_id=ans.client_id, assignment_id=a.id, item_id=item.id, user_id=who.user_id,
                         kind=ans.kind, created_at=self.clock(), elapsed_ms=ans.elapsed_ms, choice=ans.choice,
                         skip_reason=ans.reason, notes=ans.note or None)
        s.add(sub)
        s.flush()
        self._add_answer_rows(s, sub.id, a.shown, ans)
        self._event(s, "submit", who.project_id, who.user_id, assignment=a.id, answer=ans.kind,
                    client_id=ans.client_id)
        return Receipt(sub.id, sub.client_id, a.id, item.public_id, ans.kind)

    def _add_answer_rows(self, s: Session, sub_id: int, shown: list[int], ans: Answer) -> None:
        """The rows of an answer: tiers (a pairwise choice becomes two), ratings, the demonstration."""
        tiers = pairwise_tiers(ans.choice, shown) if ans.kind == "pairwise" else ans.tiers
        s.add_all(RankEntry(submission_id=sub_id, candidate_idx=i, tier=t) for i, t in tiers.items())
        if ans.kind == "rank":
            s.add_all(Rating(submission_id=sub_id, candidate_idx=i, likert=ans.likert.get(i),
                             flags=ans.flags.get(i, {}), notes=ans.notes.get(i, "")) for i in sorted(tiers))
        if ans.kind == "demo":
            s.add(Demonstration(submission_id=sub_id, text=ans.text))

    # ---------------------------------------------------------------------------- history, edits

    def _answer_of(self, s: Session, sub: Submission) -> dict:
        """One answer as it stands (the content of a version): tiers by candidate index, ratings, texts."""
        tiers = dict(s.execute(select(RankEntry.candidate_idx, RankEntry.tier)
                               .where(RankEntry.submission_id == sub.id)).all())
        rated = list(s.scalars(select(Rating).where(Rating.submission_id == sub.id).order_by(Rating.candidate_idx)))
        return {"kind": sub.kind, "tiers": {str(i): t for i, t in sorted(tiers.items())} or None,
                "choice": sub.choice, "likert": [r.likert for r in rated] or None,
                "flags": [r.flags for r in rated] or None, "output_notes": [r.notes for r in rated] or None,
                "notes": sub.notes, "text": s.scalar(select(Demonstration.text)
                                                     .where(Demonstration.submission_id == sub.id)),
                "skip_reason": sub.skip_reason, "elapsed_ms": sub.elapsed_ms}

    def _own_submission(self, s: Session, who: Who, submission_id: int) -> tuple[Submission, Item, Project, list]:
        """One of this labeler's answers (anyone else's is NotFound, as if it did not exist)."""
        row = s.execute(select(Submission, Item, Project, Assignment.shown)
                        .join(Item, Item.id == Submission.item_id).join(Project, Project.id == Item.project_id)
                        .join(Assignment, Assignment.id == Submission.assignment_id)
                        .where(Submission.id == submission_id, Submission.user_id == who.user_id)).first()
        if row is None:
            raise NotFound(f"no answer {submission_id} of {who.name}")
        return tuple(row)

    def _history_entry(self, s: Session, sub: Submission, item: Item, p: Project, shown: list[int]) -> dict:
        rows = s.execute(select(Candidate.idx, Candidate.text, Candidate.finished)
                         .where(Candidate.item_id == item.id)).all()
        texts, finished = {i: t for i, t, _ in rows}, {i: bool(f) for i, _, f in rows}
        rv = s.scalar(select(Review).where(Review.submission_id == sub.id).order_by(Review.id.desc()).limit(1))
        locked = item.locked_at is not None or p.locked_at is not None
        return {"submission_id": sub.id, "assignment_id": sub.assignment_id,
                "item_id": item.public_id, "mode": p.mode,
                "prompt": item.messages if item.messages is not None else item.prompt,
                "outputs": [(i, texts[i]) for i in shown], "finished": [finished[i] for i in shown],
                "submitted_at": sub.created_at,
                "edited_at": sub.edited_at, "version": sub.version, "answer": self._answer_of(s, sub),
                "locked": locked, "editable": sub.kind != "skip" and not locked,
                "review": None if rv is None else {"action": rv.action, "comment": rv.comment,
                                                   "open": rv.action == "send_back" and rv.resolved_at is None}}

    def history(self, who: Who, limit: int = HISTORY_LIMIT) -> list[dict]:
        """This labeler's answers, newest first, each as it stands now (with whether it can still be edited
        and the latest review of it)."""

        def work(s: Session):
            rows = s.execute(select(Submission, Item, Project, Assignment.shown)
                             .join(Item, Item.id == Submission.item_id).join(Project, Project.id == Item.project_id)
                             .join(Assignment, Assignment.id == Submission.assignment_id)
                             .where(Submission.user_id == who.user_id)
                             .order_by(func.coalesce(Submission.edited_at, Submission.created_at).desc(),
                                       Submission.id.desc()).limit(limit)).all()
            return [self._history_entry(s, *row) for row in rows]

        return self._read(work)

    def history_entry(self, who: Who, submission_id: int) -> dict:
        """One of this labeler's answers, with every earlier version (`versions`, oldest first)."""

        def work(s: Session):
            entry = self._history_entry(s, *self._own_submission(s, who, submission_id))
            entry["versions"] = [{"version": v.version, "at": v.created_at, "answer": v.answer} for v in s.scalars(
                select(AnswerVersion).where(AnswerVersion.submission_id == submission_id)
                .order_by(AnswerVersion.version))]
            return entry

        return self._read(work)

    def edit(self, who: Who, submission_id: int, ans: Answer) -> Receipt:
        """Replace one of this labeler's answers by a new version (the old one is kept in `answer_version`);
        refused once the project or the item is locked. Resending the same `client_id` stores it once."""

        def work(s: Session):
            done = s.execute(select(AnswerVersion.submission_id).where(AnswerVersion.edit_client_id == ans.client_id)
                             ).scalar()
            sub, item, p, shown = self._own_submission(s, who, submission_id if done is None else done)
            receipt = Receipt(sub.id, ans.client_id, sub.assignment_id, item.public_id, sub.kind)
            if done is not None:
                receipt.duplicate = True
                return receipt
            if p.locked_at is not None or item.locked_at is not None:
                raise Conflict("this answer is locked (its project or item was closed for edits); ask your admin")
            if sub.kind == "skip":
                raise Conflict("a skipped item cannot be edited")
            if ans.kind != sub.kind:
                raise BadAnswer(f"this answer is a {sub.kind!r} answer; an edit cannot make it {ans.kind!r}")
            now, version = self.clock(), sub.version
            old = AnswerVersion(submission_id=sub.id, version=version, created_at=sub.edited_at or sub.created_at,
                                answer=self._answer_of(s, sub), edit_client_id=ans.client_id)
            moved = s.execute(update(Submission).where(Submission.id == sub.id, Submission.version == version)
                              .values(version=version + 1, edited_at=now, choice=ans.choice,
                                      notes=ans.note or None, elapsed_ms=sub.elapsed_ms + ans.elapsed_ms)).rowcount
            if not moved:
                raise Conflict("this answer was edited at the same time somewhere else; reload it")
            s.add(old)
            for table in (RankEntry, Rating, Demonstration):
                s.execute(delete(table).where(table.submission_id == sub.id))
            self._add_answer_rows(s, sub.id, shown, ans)
            s.execute(update(Review).where(Review.submission_id == sub.id, Review.action == "send_back",
                                           Review.resolved_at.is_(None)).values(resolved_at=now))
            self._event(s, "edit", p.id, who.user_id, submission=sub.id, version=version + 1,
                        client_id=ans.client_id)
            return receipt

        try:
            return self._write(work)
        except IntegrityError:  # the same edit raced itself (PostgreSQL): the other copy won
            return self._write(work)

    def edit_outputs(self, who: Who, submission_id: int) -> int:
        """How many outputs the item of one of this labeler's answers has (to check an edit)."""
        return self._read(lambda s: s.scalar(select(func.count()).where(
            Candidate.item_id == self._own_submission(s, who, submission_id)[1].id)))

    def sent_back(self, who: Who) -> dict | None:
        """The oldest of this labeler's answers that an admin sent back and they have not edited yet."""

        def work(s: Session):
            row = s.execute(select(Review.submission_id, Review.comment)
                            .join(Submission, Submission.id == Review.submission_id)
                            .join(Item, Item.id == Submission.item_id).join(Project, Project.id == Item.project_id)
                            .where(Submission.user_id == who.user_id, Review.action == "send_back",
                                   Review.resolved_at.is_(None), Item.locked_at.is_(None),
                                   Project.locked_at.is_(None))
                            .order_by(Review.id).limit(1)).first()
            return None if row is None else {"submission_id": row[0], "comment": row[1]}

        return self._read(work)

    # ------------------------------------------------------------------------------- review, locks

    def review(self, who: Who, submission_id: int, action: str, comment: str = "") -> dict:
        """An admin accepts an answer of their project or sends it back to its labeler with a comment."""
        if action not in REVIEW_ACTIONS:
            raise BadAnswer(f"action must be one of: {', '.join(REVIEW_ACTIONS)}")
        comment = (comment or "").strip()
        if len(comment) > MAX_COMMENT:
            raise BadAnswer(f"the comment is longer than {MAX_COMMENT} characters")
        if action == "send_back" and not comment:
            raise BadAnswer("say what to change: sending an answer back needs a comment")

        def work(s: Session):
            row = s.execute(select(Submission, Item, Project).join(Item, Item.id == Submission.item_id)
                            .join(Project, Project.id == Item.project_id)
                            .where(Submission.id == submission_id, Project.id == who.project_id)).first()
            if row is None or not who.is_admin:
                raise NotFound(f"no answer {submission_id} in project {who.project!r}")
            sub, item, p = row
            if action == "send_back":
                if sub.kind == "skip":
                    raise Conflict("a skip cannot be sent back (there is no answer to correct)")
                if p.locked_at is not None or item.locked_at is not None:
                    raise Conflict("this item is locked; unlock it (rlhf label lock --unlock) to send it back")
            now = self.clock()
            s.execute(update(Review).where(Review.submission_id == sub.id, Review.action == "send_back",
                                           Review.resolved_at.is_(None)).values(resolved_at=now))
            s.add(Review(submission_id=sub.id, reviewer_id=who.user_id, action=action, comment=comment,
                         version=sub.version, created_at=now))
            self._event(s, "review", p.id, who.user_id, submission=sub.id, action=action, version=sub.version)
            return {"submission_id": sub.id, "action": action, "comment": comment, "version": sub.version}

        return self._write(work)

    def lock(self, project: str, item: str | None = None, *, unlock: bool = False) -> int:
        """Close a project (or one item, by its imported id or the id labelers see) for edits, or open it again;
        how many changed."""

        def work(s: Session):
            p = self._project(s, project)
            value = None if unlock else self.clock()
            if item is None:
                changed = int((p.locked_at is None) != unlock)
                p.locked_at = value
            else:
                row = s.scalar(select(Item).where(Item.project_id == p.id,
                                                  (Item.ext_id == item) | (Item.public_id == item)))
                if row is None:
                    raise NotFound(f"project {p.name!r} has no item {item!r}")
                changed = int((row.locked_at is None) != unlock)
                row.locked_at = value
            self._event(s, "unlock" if unlock else "lock", p.id, None, item=item)
            return changed

        return self._write(work)

    # ------------------------------------------------------------------------------------- gold items

    def import_gold(self, project: str, records: list[dict]) -> tuple[int, int]:
        """Add gold items (records with a known `ranking`) to an existing rank or pairwise project:
        (added, already there). One transaction."""

        def work(s: Session):
            p = self._project(s, project)
            if p.mode == "demo":
                raise UserError(f"project {p.name!r} collects demonstrations: gold items need rank or pairwise")
            have = dict(s.execute(select(Item.ext_id, Item.is_gold).where(Item.project_id == p.id)).all())
            start = s.scalar(select(func.coalesce(func.max(Item.position), -1)).where(
                Item.project_id == p.id)) + 1
            added = 0
            for r in records:
                if r["id"] in have:
                    if not have[r["id"]]:
                        raise UserError(f"gold item {r['id']!r}: project {p.name!r} has a regular item with this "
                                        "id; give gold items ids of their own")
                    continue
                if p.mode == "pairwise" and len(r["completions"]) != 2:
                    raise UserError(f"gold item {r['id']!r}: a pairwise project needs 2 completions, "
                                    f"got {len(r['completions'])}")
                prompt, messages = r["prompt"], None
                if isinstance(prompt, list):
                    messages, prompt = prompt, conversation_text(prompt)
                gold = Item(project_id=p.id, ext_id=r["id"], prompt=prompt, messages=messages, position=start + added,
                            taken=0, is_gold=True, gold_ranking=r["ranking"])
                s.add(gold)
                s.flush()
                finished = r.get("finished") or [True] * len(r["completions"])  # as imported, like any item's
                s.add_all(Candidate(item_id=gold.id, idx=i, text=text, source="gold", finished=finished[i])
                          for i, text in enumerate(r["completions"]))
                have[r["id"]] = True
                added += 1
            self._event(s, "gold", p.id, None, added=added)
            return added, len(records) - added

        return self._write(work)

    def set_quality(self, project: str, *, gold_rate: float | None = None, threshold: float | None = None) -> None:
        """The share of gold items each labeler gets, and the score below which a labeler is flagged."""
        for name, value in (("--rate", gold_rate), ("--threshold", threshold)):
            if value is not None and not 0 <= value <= 1:
                raise UserError(f"{name} must be from 0 to 1, got {value}")

        def work(s: Session):
            p = self._project(s, project)
            if gold_rate is not None:
                p.gold_rate = gold_rate
            if threshold is not None:
                p.qc_threshold = threshold

        self._write(work)

    # ------------------------------------------------------------------------------- export, stats

    def submissions(self, project: str) -> list[dict]:
        """Every submission of a project with its item, candidates and answer (the raw export), each answer
        as its newest version; gold items are not training data and are left out (see `gold_answers`)."""
        return self._read(lambda s: self._submission_rows(s, self._project(s, project), gold=False))

    def gold_answers(self, project: str) -> list[dict]:
        """The answers on gold items, each with the known ranking as `gold` (quality control)."""
        return self._read(lambda s: self._submission_rows(s, self._project(s, project), gold=True))

    def _submission_rows(self, s: Session, p: Project, *, gold: bool) -> list[dict]:
        rows = s.execute(
            select(Submission, Item, User.name, Assignment.shown)
            .join(Item, Item.id == Submission.item_id).join(User, User.id == Submission.user_id)
            .join(Assignment, Assignment.id == Submission.assignment_id)
            .where(Item.project_id == p.id, Item.is_gold == (true() if gold else false()))
            .order_by(Item.position, Submission.id)).all()
        sub_ids = [r[0].id for r in rows]
        item_ids = {r[1].id for r in rows}
        cands: dict[int, list[Candidate]] = {}
        for c in s.scalars(select(Candidate).where(Candidate.item_id.in_(item_ids)).order_by(Candidate.idx)):
            cands.setdefault(c.item_id, []).append(c)
        tiers: dict[int, dict[int, int]] = {}
        for r in s.scalars(select(RankEntry).where(RankEntry.submission_id.in_(sub_ids))):
            tiers.setdefault(r.submission_id, {})[r.candidate_idx] = r.tier
        ratings: dict[int, list[Rating]] = {}
        for r in s.scalars(select(Rating).where(Rating.submission_id.in_(sub_ids)).order_by(Rating.candidate_idx)):
            ratings.setdefault(r.submission_id, []).append(r)
        demos = dict(s.execute(select(Demonstration.submission_id, Demonstration.text)
                               .where(Demonstration.submission_id.in_(sub_ids))).all())
        reviews = {}
        for rv, by in s.execute(select(Review, User.name).join(User, User.id == Review.reviewer_id)
                                .where(Review.submission_id.in_(sub_ids)).order_by(Review.id)):
            reviews[rv.submission_id] = {"action": rv.action, "comment": rv.comment, "by": by,
                                         "version": rv.version, "at": rv.created_at,
                                         "open": rv.action == "send_back" and rv.resolved_at is None}
        out = []
        for sub, item, labeler, shown in rows:
            rated = ratings.get(sub.id, [])
            out.append({
                "id": item.ext_id, "public_id": item.public_id,
                "prompt": item.messages if item.messages is not None else item.prompt,
                "mode": p.mode, "kind": sub.kind,
                "labeler": labeler, "client_id": sub.client_id, "submitted_at": sub.created_at,
                "elapsed_ms": sub.elapsed_ms, "shown_order": shown,
                "completions": [{"text": c.text, "source": c.source, "finished": c.finished}
                                for c in cands.get(item.id, [])],
                "tiers": tiers.get(sub.id), "choice": sub.choice,
                "likert": [r.likert for r in rated] or None, "flags": [r.flags for r in rated] or None,
                "output_notes": [r.notes for r in rated] or None, "notes": sub.notes,
                "demonstration": demos.get(sub.id), "skip_reason": sub.skip_reason,
                "submission_id": sub.id, "version": sub.version, "edited_at": sub.edited_at,
                "item_locked": item.locked_at is not None or p.locked_at is not None,
                "review": reviews.get(sub.id),
            })
            if gold:
                out[-1]["gold"] = item.gold_ranking
        return out

    def progress(self, project: str) -> dict:
        """Items, how many are complete (k answers), answers per kind, live leases, labelers."""

        def work(s: Session):
            p = self._project(s, project)
            counts = self._item_answer_counts(s, p)
            items = len(counts)
            complete = sum(answers >= p.overlap for _, answers, _ in counts)  # k answers: the item is done
            kinds = dict(s.execute(select(Submission.kind, func.count()).join(Item, Item.id == Submission.item_id)
                                   .where(Item.project_id == p.id, Item.is_gold == false())
                                   .group_by(Submission.kind)).all())
            gold_items = s.scalar(select(func.count()).select_from(Item).where(Item.project_id == p.id,
                                                                               Item.is_gold == true()))
            live = s.scalar(select(func.count()).select_from(Assignment).join(Item, Item.id == Assignment.item_id)
                            .where(Item.project_id == p.id, Assignment.state == "leased",
                                   ~assign.is_expired(Assignment.expires_at, self.clock())))
            last_login = (select(func.max(LoginSession.created_at)).where(LoginSession.user_id == User.id)
                          .scalar_subquery())
            people = [self._person(u, at) for u, at in s.execute(
                select(User, last_login).where(User.project_id == p.id).order_by(User.name))]
            return {"project": p.name, "mode": p.mode, "overlap": p.overlap, "items": items,
                    "complete": complete, "answers": {k: kinds.get(k, 0) for k in KINDS},
                    "live_leases": live, "people": people,
                    "locked": p.locked_at is not None, "gold_items": gold_items, "gold_rate": p.gold_rate,
                    "qc_threshold": p.qc_threshold}

        return self._read(work)

    def _person(self, user: User, last_login: float | None) -> dict:
        """A row of the People table: whether the person logged in since their link was made, and the link's state."""
        invited = user.invited_at if user.invited_at is not None else user.created_at
        logged_in = last_login is not None and last_login >= invited
        used_up = user.invite_expires_at is not None and user.invite_expires_at <= self.clock()
        status = "revoked" if user.revoked_at is not None else "active" if logged_in else "invited"
        link = "revoked" if user.revoked_at is not None else (
            ("used" if user.invite_single_use and logged_in else "expired") if used_up else "live")
        return {"name": user.name, "role": user.role, "active": user.revoked_at is None, "status": status,
                "last_login_at": last_login if logged_in else None, "link": link,
                "link_expires_at": user.invite_expires_at, "single_use": user.invite_single_use}

    def item_answer_counts(self, project: str) -> list[tuple[str, int, int]]:
        """(item id, answers, distinct labelers) per item, skips not counted: what `progress` counts as
        complete, and the load test's invariant (answers = labelers = k), from the database."""
        return self._read(lambda s: self._item_answer_counts(s, self._project(s, project)))

    def _item_answer_counts(self, s: Session, p: Project) -> list[tuple[str, int, int]]:
        return [tuple(row) for row in s.execute(
            select(Item.ext_id, func.count(Submission.id), func.count(func.distinct(Submission.user_id)))
            .outerjoin(Submission, and_(Submission.item_id == Item.id, Submission.kind != "skip"))
            .where(Item.project_id == p.id, Item.is_gold == false())
            .group_by(Item.id, Item.ext_id).order_by(Item.ext_id))]
