"""A labeler's history and edits: their answers as they stand, every earlier version, and the answers an admin sent
back to them.
"""

from __future__ import annotations

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rlhfkit.label.answers import Answer, BadAnswer
from rlhfkit.label.db import (
    AnswerVersion,
    Assignment,
    Candidate,
    Demonstration,
    Item,
    Project,
    RankEntry,
    Rating,
    Review,
    Submission,
)
from rlhfkit.label.store.core import Conflict, NotFound, StoreCore, Who
from rlhfkit.label.store.leases import Receipt, add_answer_rows, candidate_turns

HISTORY_LIMIT = 200  # answers on a labeler's history page


class HistoryStore(StoreCore):
    def _answer_of(self, s: Session, sub: Submission) -> dict:
        """One answer as it stands (the content of a version): tiers by candidate index, ratings, texts."""
        tiers = dict(s.execute(select(RankEntry.candidate_idx, RankEntry.tier)
                               .where(RankEntry.submission_id == sub.id)).all())
        rated = list(s.scalars(select(Rating).where(Rating.submission_id == sub.id).order_by(Rating.candidate_idx)))
        return {"kind": sub.kind, "tiers": {str(i): t for i, t in sorted(tiers.items())} or None,
                "choice": sub.choice, "likert": [r.likert for r in rated] or None,
                "flags": [r.flags for r in rated] or None, "output_notes": [r.notes for r in rated] or None,
                "turn_flags": [r.turn_flags for r in rated] if any(r.turn_flags for r in rated) else None,
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
        rows = s.execute(select(Candidate.idx, Candidate.text, Candidate.finished, Candidate.messages)
                         .where(Candidate.item_id == item.id)).all()
        texts, finished = {i: t for i, t, _, _ in rows}, {i: bool(f) for i, _, f, _ in rows}
        turns = {i: m for i, _, _, m in rows}
        rv = s.scalar(select(Review).where(Review.submission_id == sub.id).order_by(Review.id.desc()).limit(1))
        locked = item.locked_at is not None or p.locked_at is not None
        return {"submission_id": sub.id, "assignment_id": sub.assignment_id,
                "item_id": item.public_id, "mode": p.mode,
                "prompt": item.messages if item.messages is not None else item.prompt,
                "outputs": [(i, texts[i]) for i in shown], "finished": [finished[i] for i in shown],
                "trajectories": [turns[i] for i in shown], "tools": item.tools,
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
            add_answer_rows(s, sub.id, shown, ans)
            s.execute(update(Review).where(Review.submission_id == sub.id, Review.action == "send_back",
                                           Review.resolved_at.is_(None)).values(resolved_at=now))
            self._event(s, "edit", p.id, who.user_id, submission=sub.id, version=version + 1,
                        client_id=ans.client_id)
            return receipt

        try:
            return self._write(work)
        except IntegrityError:  # the same edit raced itself (PostgreSQL): the other copy won
            return self._write(work)

    def edit_turns(self, who: Who, submission_id: int) -> list[int | None]:
        """Per output of the item of one of this labeler's answers: its turns (a trajectory) or None (a text)."""
        return self._read(lambda s: candidate_turns(s, self._own_submission(s, who, submission_id)[1].id))

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
