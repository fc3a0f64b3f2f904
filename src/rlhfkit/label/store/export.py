"""Reading a project out: every answer as a row (the raw export, gold answers apart) and its progress (items
complete, answers per kind, live leases, the People table).
"""

from __future__ import annotations

from sqlalchemy import and_, false, func, select, true
from sqlalchemy.orm import Session

from rlhfkit.label import assign
from rlhfkit.label.db import (
    Assignment,
    Candidate,
    Demonstration,
    Item,
    LoginSession,
    Project,
    RankEntry,
    Rating,
    Review,
    Submission,
    User,
)
from rlhfkit.label.names import KINDS
from rlhfkit.label.store.core import StoreCore


def draft_state(flag: bool | None) -> str | None:
    """`Assignment.judge_draft` as the exports write it: "shown", "hidden", or None (unknown: migration 0008)."""
    return None if flag is None else "shown" if flag else "hidden"


class ExportStore(StoreCore):
    def submissions(self, project: str) -> list[dict]:
        """Every submission of a project with its item, candidates and answer (the raw export), each answer
        as its newest version; gold items are not training data and are left out (see `gold_answers`)."""
        return self._read(lambda s: self._submission_rows(s, self._project(s, project), gold=False))

    def gold_answers(self, project: str) -> list[dict]:
        """The answers on gold items, each with the known ranking as `gold` (quality control)."""
        return self._read(lambda s: self._submission_rows(s, self._project(s, project), gold=True))

    def _submission_rows(self, s: Session, p: Project, *, gold: bool) -> list[dict]:
        rows = s.execute(
            select(Submission, Item, User.name, Assignment.shown, Assignment.judge_draft)
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
        for sub, item, labeler, shown, draft in rows:
            rated = ratings.get(sub.id, [])
            out.append({
                "id": item.ext_id, "public_id": item.public_id,
                "prompt": item.messages if item.messages is not None else item.prompt,
                "mode": p.mode, "kind": sub.kind,
                "labeler": labeler, "client_id": sub.client_id, "submitted_at": sub.created_at,
                "elapsed_ms": sub.elapsed_ms, "shown_order": shown,
                # whether the judge's ranking was shown to this labeler as a starting draft (None: unknown)
                "judge_draft": draft_state(draft),
                "tools": item.tools,
                "completions": [{"text": c.text, "source": c.source, "finished": c.finished,
                                 **({"messages": c.messages} if c.messages is not None else {})}
                                for c in cands.get(item.id, [])],
                "tiers": tiers.get(sub.id), "choice": sub.choice,
                "likert": [r.likert for r in rated] or None, "flags": [r.flags for r in rated] or None,
                "output_notes": [r.notes for r in rated] or None, "notes": sub.notes,
                "turn_flags": [r.turn_flags for r in rated] if any(r.turn_flags for r in rated) else None,
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
