"""What admins do to keep answers good: review (accept, send back), lock a project or an item against edits, and gold
items (known rankings mixed in to score labelers) with the quality settings.
"""

from __future__ import annotations

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from rlhfkit.data.schemas import tools_of
from rlhfkit.errors import UserError
from rlhfkit.label.answers import BadAnswer
from rlhfkit.label.db import Candidate, Item, Project, Review, Submission
from rlhfkit.label.names import REVIEW_ACTIONS
from rlhfkit.label.store.core import Conflict, NotFound, StoreCore, Who
from rlhfkit.label.store.items import candidate_text, conversation_text

MAX_COMMENT = 5_000  # characters in a reviewer's comment


class ReviewStore(StoreCore):
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
                    messages, prompt = list(prompt), conversation_text(prompt)
                gold = Item(project_id=p.id, ext_id=r["id"], prompt=prompt, messages=messages, position=start + added,
                            tools=tools_of(r["prompt"]), taken=0, is_gold=True, gold_ranking=r["ranking"])
                s.add(gold)
                s.flush()
                finished = r.get("finished") or [True] * len(r["completions"])  # as imported, like any item's
                s.add_all(Candidate(item_id=gold.id, idx=i, source="gold", finished=finished[i], **candidate_text(text))
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
