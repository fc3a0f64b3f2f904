"""A project's guidelines: an admin replaces them; each person confirms reading them after every change."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from rlhfkit.errors import UserError
from rlhfkit.label.db import Project, User
from rlhfkit.label.store.core import StoreCore, Who

MAX_GUIDELINES = 100_000  # characters of Markdown


class GuidelinesStore(StoreCore):
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
