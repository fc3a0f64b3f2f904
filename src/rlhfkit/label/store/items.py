"""Importing items: a project is created by its first import, and later imports add the records it lacks."""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from rlhfkit.data.schemas import tools_of
from rlhfkit.errors import UserError
from rlhfkit.label.db import Candidate, Item, Project
from rlhfkit.label.names import MODES
from rlhfkit.label.store.core import StoreCore
from rlhfkit.label.trajectory import conversation_text


def candidate_text(value: str | list[dict]) -> dict:
    """A candidate's columns: a text, or a trajectory (its messages, and their plain text)."""
    if isinstance(value, list):
        return {"text": conversation_text(value), "messages": list(value)}
    return {"text": value, "messages": None}


class ItemsStore(StoreCore):
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
                    messages, prompt = list(prompt), conversation_text(prompt)
                item = Item(project_id=project.id, ext_id=record["id"], prompt=prompt, messages=messages,
                            tools=tools_of(record["prompt"]), position=start + added, taken=0)
                s.add(item)
                s.flush()
                s.add_all(Candidate(item_id=item.id, idx=i, source=c.get("source", "unknown"),
                                    finished=c.get("finished", True), **candidate_text(c["text"]))
                          for i, c in enumerate(record.get("completions", [])))
                added += 1
            self._event(s, "import", project.id, None, added=added, present=len(records) - added)
            return added, len(records) - added

        return self._write(work)

    # ------------------------------------------------------------------------ a judge's rankings as drafts

    def set_judge_rankings(self, name: str, judge: str, rankings: dict[str, list[list[int]]]) -> int:
        """Store a judge's ranking (tie groups of candidate indices) of the project's items by their imported
        ids; how many items got one. Shown to labelers only while `judge_draft` is on."""

        def work(s: Session):
            project = self._project(s, name)
            done = 0
            for ext_id, ranking in rankings.items():
                done += s.execute(update(Item).where(Item.project_id == project.id, Item.ext_id == ext_id)
                                  .values(judge_ranking=ranking, judge_name=judge)).rowcount
            self._event(s, "judge_rankings", project.id, None, judge=judge, items=done)
            return done

        return self._write(work)

    def set_judge_draft(self, name: str, show: bool) -> None:
        """Show (or hide) the judge's ranking to labelers as a starting draft."""

        def work(s: Session):
            project = self._project(s, name)
            project.judge_draft = bool(show)
            self._event(s, "judge_draft", project.id, None, shown=bool(show))

        self._write(work)

    def judge_draft(self, name: str) -> bool:
        return self._read(lambda s: bool(self._project(s, name).judge_draft))

    def gold_items(self, name: str) -> list[dict]:
        """The project's gold items as candidates records with their known `ranking` (to measure a judge)."""

        def work(s: Session):
            project = self._project(s, name)
            out = []
            for item in s.scalars(select(Item).where(Item.project_id == project.id, Item.is_gold.is_(True))
                                  .order_by(Item.position)):
                cands = s.execute(select(Candidate.text, Candidate.finished).where(Candidate.item_id == item.id)
                                  .order_by(Candidate.idx)).all()
                out.append({"id": item.ext_id, "prompt": item.messages if item.messages is not None else item.prompt,
                            "completions": [{"text": t, "finished": f} for t, f in cands],
                            "ranking": item.gold_ranking})
            return out

        return self._read(work)
