"""All the labeling app's SQL, in one folder: `Store`, one class made of a part per concern over one core.

- `core`: the engine, transactions and their retry, the errors, `Who`, a project by name;
- `items`: importing items; `people`: invites, sessions; `guidelines`: a project's guidelines;
- `leases`: leasing items and submitting answers; `history`: a labeler's history and edits;
- `review`: review, locks, gold items; `export`: answers as rows and a project's progress.

`Store` wraps an engine. Every write runs in one short transaction (`_write`), retried when the database
reports a transient conflict (a PostgreSQL deadlock or serialization failure, a locked SQLite file).
Two conditional updates carry the concurrency guarantees, on SQLite and PostgreSQL alike:

- leasing: `UPDATE item SET taken = taken + 1 WHERE id = ? AND taken < overlap` — at most k slots;
- answering: `UPDATE assignment SET state = ? WHERE id = ? AND state = 'leased'` — one answer per lease;

and two unique constraints make retries harmless: `submission.client_id` (a resent answer is stored
once) and `assignment (item_id, user_id)` (no labeler sees an item twice). A third holds a rule the store also
checks in Python: `labeler (project_id, name_key)` (two invites at once of names that read alike store one
person; the other is run again and refused by the check).
"""

from __future__ import annotations

from rlhfkit.label.store.core import (
    WRITE_RETRIES,
    AlreadyInvited,
    Conflict,
    DiskFull,
    Forbidden,
    InviteGone,
    NotFound,
    Who,
)
from rlhfkit.label.store.export import ExportStore
from rlhfkit.label.store.guidelines import MAX_GUIDELINES, GuidelinesStore
from rlhfkit.label.store.history import HISTORY_LIMIT, HistoryStore
from rlhfkit.label.store.items import ItemsStore, conversation_text
from rlhfkit.label.store.leases import SWEEP_EVERY_S, LeasedItem, LeasesStore, Receipt
from rlhfkit.label.store.people import SESSION_SECONDS, PeopleStore, digest, new_token
from rlhfkit.label.store.review import MAX_COMMENT, ReviewStore

__all__ = [
    "HISTORY_LIMIT", "MAX_COMMENT", "MAX_GUIDELINES", "SESSION_SECONDS", "SWEEP_EVERY_S", "WRITE_RETRIES",
    "AlreadyInvited", "Conflict", "DiskFull", "Forbidden", "InviteGone", "LeasedItem", "NotFound", "Receipt",
    "Store", "Who", "conversation_text", "digest", "new_token",
]


class Store(ItemsStore, PeopleStore, GuidelinesStore, LeasesStore, HistoryStore, ReviewStore, ExportStore):
    """The labeling app's database: every concern's operations over one engine (`core.StoreCore`)."""
