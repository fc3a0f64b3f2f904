"""Assignment policy: which item a labeler gets next, how long a lease lasts, how outputs are shown.

Pure Python; `store.py` applies it inside transactions. The rules (docs/design.md §6):

- each item goes to `overlap` (k) distinct labelers; an item has a free slot while
  submitted answers + live leases < k (a skip gives its slot back);
- a lease expires `lease_seconds` after it was handed out and its slot returns to the pool;
- a labeler never gets an item twice: one assignment row per (item, labeler), ever;
- among open items, those already started come first, so finished items (usable data) accumulate
  early instead of every item being one-third done; then the imported order.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

DEFAULT_LEASE_SECONDS = 30 * 60  # long enough to write a demonstration; a lost tab frees it in half an hour


@dataclass(frozen=True)
class Slot:
    """An item as the queue sees it: `taken` = answers + live leases."""

    item_id: int
    position: int
    taken: int


def has_room(taken: int, overlap: int) -> bool:
    return taken < overlap


def queue_order(slots: list[Slot], overlap: int, seen: set[int] = frozenset()) -> list[int]:
    """Item ids a labeler may be offered, best first: room left, not seen, most-started, then file order."""
    open_ = [s for s in slots if has_room(s.taken, overlap) and s.item_id not in seen]
    return [s.item_id for s in sorted(open_, key=lambda s: (-s.taken, s.position))]


def lease_expiry(now: float, lease_seconds: float) -> float:
    return now + lease_seconds


def is_expired(expires_at, now: float):
    """A lease is over once `now` is past its expiry. Works on numbers and on a SQLAlchemy column alike
    (`is_expired(Assignment.expires_at, now)` is the SQL `expires_at < now`, negated `expires_at >= now`),
    so the store's queries apply this rule instead of restating it."""
    return now > expires_at


def shown_order(k: int, seed: int) -> list[int]:
    """The order in which an assignment shows its K outputs: a fixed shuffle per assignment, so
    position carries no information about the source (InstructGPT shuffles; blind A/B needs it)."""
    order = list(range(k))
    random.Random(seed).shuffle(order)
    return order


def page_numbers(answered: int, available_after: int) -> tuple[int, int]:
    """"Page n of N" for a labeler holding a lease: n counts this item, N adds what is still open to them."""
    n = answered + 1
    return n, n + available_after


def wants_gold(user_id: int, leases_so_far: int, rate: float) -> bool:
    """Whether a labeler's next item is a gold one (known answer): a draw with probability `rate`, seeded by
    (labeler, how many items they were given), so the mix is random to them but the same on every replay."""
    return rate > 0 and random.Random(f"gold/{user_id}/{leases_so_far}").random() < rate
