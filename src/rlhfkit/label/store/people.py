"""People and their sessions: invite links (stored as hashes), revoking, logging in and out, and who a session is."""

from __future__ import annotations

import hashlib
import secrets

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rlhfkit.errors import UserError
from rlhfkit.label.db import Assignment, Item, LoginSession, Project, User
from rlhfkit.label.inputs import BadInput, name_key, person_name, unicode_problem
from rlhfkit.label.names import ROLES
from rlhfkit.label.store.core import AlreadyInvited, Conflict, InviteGone, NotFound, StoreCore, Who

SESSION_SECONDS = 14 * 24 * 3600


def digest(token: str) -> str:
    """Tokens (invites, sessions) are stored as their SHA-256 only. Whatever a client sends hashes (a lone
    surrogate as its escape): it simply matches no token."""
    return hashlib.sha256(token.encode("utf-8", "backslashreplace")).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)  # 256 random bits


class PeopleStore(StoreCore):
    def invite(self, project: str, name: str, role: str = "labeler", *, replace: bool = False,
               expires_in: float | None = None, single_use: bool = False) -> str:
        """Create a person (or give a revoked one a new link); returns the invite token.

        The name is stored as `inputs.person_name` makes it (NFKC, no invisible characters) and may not
        collide with another person's of the project (`name_key`: case and width ignored); the database holds
        that rule too (`User.name_key`, unique per project), so two such invites at once store one person.
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

        try:
            self._write(work)
        except IntegrityError:
            # Another invite of a name that reads the same committed between our check and our insert (PostgreSQL;
            # SQLite runs one writer at a time): the unique (project_id, name_key) index refused ours. Run again:
            # the check now sees that person and refuses in its own words (`Conflict`, or `AlreadyInvited`).
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
