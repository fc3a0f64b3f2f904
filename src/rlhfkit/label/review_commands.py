"""`rlhf label review|lock|gold`: the review queue, closing answers for edits, gold items for quality control."""

from __future__ import annotations

import json
from dataclasses import dataclass

from rlhfkit.config import option, required
from rlhfkit.data.formats import RANKINGS, read_format
from rlhfkit.data.schemas import ranking_record
from rlhfkit.errors import UserError
from rlhfkit.label import review
from rlhfkit.label.commands import open_store
from rlhfkit.label.db import normalize_url

# ---------------------------------------------------------------------------------------------- review


@dataclass
class ReviewConfig:
    db: str | None = required("database: a SQLite file or a URL")
    project: str | None = required("project name")
    limit: int = option(20, "items to print, most disputed first")
    json: bool = option(False, "print the whole queue as JSON instead")

    def check(self) -> None:
        normalize_url(self.db)
        if self.limit < 1:
            raise UserError(f"--limit must be at least 1, got {self.limit}")


def format_queue(items: list[dict], limit: int) -> str:
    lines = [f"{len(items)} items, most disputed first (disagreement = 1 - pairwise agreement; rankings best "
             "first, outputs numbered as each labeler saw them)"]
    for item in items[:limit]:
        d = item["disagreement"]
        tau = item["agreement"]["kendall_tau_b"]
        lines.append(f"\n{item['id']} (labelers see {item['public_id']}): "
                     f"disagreement {'-' if d is None else f'{100 * d:.0f}%'}"
                     + ("" if tau is None else f", tau-b {tau:.2f}") + (" (locked)" if item["locked"] else ""))
        for a in item["answers"]:
            what = (f"skip ({a['skip_reason']})" if a["kind"] == "skip" else "demonstration" if a["kind"] == "demo"
                    else review.ranking_text(a["tiers"], a["shown_order"]))
            extra = [f"{a['elapsed_ms'] / 1000:.0f} s", f"v{a['version']}"]
            if a["notes"]:
                extra.append(f"notes: {a['notes']!r}")
            if a["review"]:
                extra.append("accepted" if a["review"]["action"] == "accept"
                             else f"sent back: {a['review']['comment']!r}")
            lines.append(f"  #{a['submission_id']:<6} {a['labeler']:<16} {what:<24} {'; '.join(extra)}")
    return "\n".join(lines)


def review_queue(cfg: ReviewConfig) -> list[dict]:
    cfg.check()
    items = review.review_queue(open_store(cfg.db).submissions(cfg.project))
    print(json.dumps(items, indent=2, ensure_ascii=False) if cfg.json else format_queue(items, cfg.limit))
    return items


# ------------------------------------------------------------------------------------------------ lock

@dataclass
class LockConfig:
    db: str | None = required("database: a SQLite file or a URL")
    project: str | None = required("project name")
    item: str | None = option(None, "lock only this item (its imported id)")
    unlock: bool = option(False, "open it for edits again")

    def check(self) -> None:
        normalize_url(self.db)


def lock(cfg: LockConfig) -> int:
    cfg.check()
    changed = open_store(cfg.db, migrate=True).lock(cfg.project, cfg.item, unlock=cfg.unlock)
    what = f"item {cfg.item} of project {cfg.project}" if cfg.item else f"project {cfg.project}"
    state = "open for edits" if cfg.unlock else "locked: its answers can no longer be edited or sent back"
    print(f"{what} {state}" + ("" if changed else " (it already was)"))
    return changed


# ------------------------------------------------------------------------------------------------ gold

@dataclass
class GoldConfig:
    file: str | None = option(None, "gold items: a rankings JSONL file (id, prompt, completions, ranking = the known "
                                    "answer)", positional=True)
    db: str | None = required("database: a SQLite file or a URL")
    project: str | None = required("project name (import its items first)")
    rate: float | None = option(None, "share of each labeler's items that are gold, 0-1 (e.g. 0.1)")
    threshold: float | None = option(None, "flag labelers whose gold accuracy or agreement is below this, 0-1 "
                                           "(default 0.7)")

    def check(self) -> None:
        normalize_url(self.db)
        if self.file is None and self.rate is None and self.threshold is None:
            raise UserError("give a gold FILE, --rate or --threshold")
        for name, value in (("--rate", self.rate), ("--threshold", self.threshold)):
            if value is not None and not 0 <= value <= 1:
                raise UserError(f"{name} must be from 0 to 1, got {value}")


def read_gold(path: str) -> list[dict]:
    """Gold items: rankings records, each checked (`ranking` covers every completion); ids unique."""
    fmt, rows = read_format(path)
    if fmt != RANKINGS:
        raise UserError(f"{path}: a {fmt} file; gold items are rankings records (id, prompt, completions, ranking)")
    out, seen = [], set()
    for _where, row, error in rows:
        record = ranking_record(row, error)
        if record["id"] in seen:
            raise error(f"id {record['id']!r} appears twice")
        seen.add(record["id"])
        out.append(record)
    return out


def gold(cfg: GoldConfig) -> tuple[int, int]:
    cfg.check()
    records = read_gold(cfg.file) if cfg.file is not None else []  # the whole file is checked first
    store = open_store(cfg.db, migrate=True)
    added, present = store.import_gold(cfg.project, records) if records else (0, 0)
    store.set_quality(cfg.project, gold_rate=cfg.rate, threshold=cfg.threshold)
    p = store.project(cfg.project)
    print(f"project {p.name}: {added} gold items added, {present} already there; gold rate {100 * p.gold_rate:.0f}%, "
          f"labelers flagged below {100 * p.qc_threshold:.0f}%")
    return added, present
