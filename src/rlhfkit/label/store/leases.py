"""Leasing and submitting: a labeler's next item (at most k labelers an item, leases that expire and return their
slot) and their answer to it, stored once however often it is sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import exists, false, func, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from rlhfkit.label import assign
from rlhfkit.label.answers import Answer, pairwise_tiers
from rlhfkit.label.db import Assignment, Candidate, Demonstration, Item, Project, RankEntry, Rating, Submission
from rlhfkit.label.store.core import Conflict, NotFound, StoreCore, Who

SWEEP_EVERY_S = 1.0  # an expired lease's slot returns at most this late


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
    # Each shown output that is a trajectory: its messages (assistant turns, tool calls, tool results); None: a text.
    trajectories: list[list[dict] | None] = field(default_factory=list)
    tools: list[dict] | None = None  # the tool schemas the conversation was given (the item's `tools`)
    draft: dict[int, int] | None = None  # the judge's tier (1 = best) of each candidate index, when shown
    draft_judge: str | None = None


@dataclass
class Receipt:
    submission_id: int
    client_id: str
    assignment_id: int
    item_id: str
    kind: str
    duplicate: bool = False


def add_answer_rows(s: Session, sub_id: int, shown: list[int], ans: Answer) -> None:
    """The rows of an answer: tiers (a pairwise choice becomes two), ratings, the demonstration (written by a
    submission and again by each edit, `history.HistoryStore.edit`)."""
    tiers = pairwise_tiers(ans.choice, shown) if ans.kind == "pairwise" else ans.tiers
    s.add_all(RankEntry(submission_id=sub_id, candidate_idx=i, tier=t) for i, t in tiers.items())
    if ans.kind == "rank":
        s.add_all(Rating(submission_id=sub_id, candidate_idx=i, likert=ans.likert.get(i),
                         flags=ans.flags.get(i, {}), notes=ans.notes.get(i, ""), turn_flags=ans.turn_flags.get(i))
                  for i in sorted(tiers))
    if ans.kind == "demo":
        s.add(Demonstration(submission_id=sub_id, text=ans.text))


def candidate_turns(s: Session, item_id) -> list[int | None]:
    """Each candidate's number of turns (None: a text), by candidate index."""
    rows = s.execute(select(Candidate.messages).where(Candidate.item_id == item_id).order_by(Candidate.idx)).all()
    return [None if m is None else len(m) for (m,) in rows]


class LeasesStore(StoreCore):
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

    def next_task(self, who: Who, *, with_draft: bool = True) -> LeasedItem | None:
        """The labeler's live lease, or a new one on the best open item; None when nothing is left.

        `with_draft`: the caller shows the judge's ranking as a starting draft when the lease has one (the task
        page does; the JSON API serves no draft and passes False). The lease records whether a draft was served
        (`Assignment.judge_draft`): True once any serve of it carried one, False while none did."""
        if self.clock() >= self._next_sweep:  # sweeping is a write: do it at most every SWEEP_EVERY_S
            self._next_sweep = self.clock() + min(SWEEP_EVERY_S, self.lease_seconds / 10)
            self.expire_leases()

        def work(s: Session):
            now = self.clock()
            current = s.scalar(select(Assignment).where(Assignment.user_id == who.user_id,
                                                        Assignment.state == "leased",
                                                        ~assign.is_expired(Assignment.expires_at, now)))
            if current is not None:
                return self._leased_item(s, who, current, with_draft)
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
                                   leased_at=now, expires_at=assign.lease_expiry(now, self.lease_seconds),
                                   judge_draft=False)
                s.add(lease)
                s.flush()
                lease.shown = assign.shown_order(k, seed=lease.id)
                self._event(s, "lease", who.project_id, who.user_id, assignment=lease.id, item=item_id)
                return self._leased_item(s, who, lease, with_draft)
            return None

        return self._write(work)

    def _leased_item(self, s: Session, who: Who, a: Assignment, with_draft: bool) -> LeasedItem:
        item = s.get(Item, a.item_id)
        rows = s.execute(select(Candidate.idx, Candidate.text, Candidate.finished, Candidate.messages)
                         .where(Candidate.item_id == a.item_id)).all()
        texts, finished = {i: t for i, t, _, _ in rows}, {i: f for i, _, f, _ in rows}
        turns = {i: m for i, _, _, m in rows}
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
        draft = None
        if with_draft and item.judge_ranking and who.mode == "rank" and not item.is_gold and s.scalar(
                select(Project.judge_draft).where(Project.id == who.project_id)):
            draft = {i: tier for tier, group in enumerate(item.judge_ranking, start=1) for i in group}
            if a.judge_draft is not True:  # served with the draft: the answer to this lease was made seeing it
                a.judge_draft = True
        return LeasedItem(a.id, item.public_id, who.mode, prompt, [(i, texts[i]) for i in a.shown], a.expires_at,
                          page, pages, [bool(finished[i]) for i in a.shown], [turns[i] for i in a.shown], item.tools,
                          draft, item.judge_name if draft else None)

    # --------------------------------------------------------------------------------- submissions

    def output_turns(self, who: Who, assignment_id: int) -> list[int | None]:
        """Per output of the item of one of this labeler's assignments (by candidate index): its number of turns
        if it is a trajectory, None if it is a text (to check an answer's flagged turns)."""

        def work(s: Session):
            owner = s.scalar(select(Assignment.user_id).where(Assignment.id == assignment_id))
            if owner is None or owner != who.user_id:
                raise NotFound(f"no assignment {assignment_id} for {who.name}")
            return candidate_turns(s, select(Assignment.item_id).where(Assignment.id == assignment_id)
                                   .scalar_subquery())

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
        add_answer_rows(s, sub.id, a.shown, ans)
        self._event(s, "submit", who.project_id, who.user_id, assignment=a.id, answer=ans.kind,
                    client_id=ans.client_id)
        return Receipt(sub.id, sub.client_id, a.id, item.public_id, ans.kind)
