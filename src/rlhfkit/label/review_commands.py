"""`rlhf label review|lock|gold`: the review queue, closing answers for edits, gold items for quality control."""

from __future__ import annotations

import json

from rlhfkit.data.formats import RANKINGS, read_format
from rlhfkit.data.schemas import ranking_record
from rlhfkit.errors import UserError
from rlhfkit.label import review
from rlhfkit.label.commands import open_store
from rlhfkit.label.configs import GoldConfig, LockConfig, ReviewConfig

# ---------------------------------------------------------------------------------------------- review


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

def lock(cfg: LockConfig) -> int:
    cfg.check()
    changed = open_store(cfg.db, migrate=True).lock(cfg.project, cfg.item, unlock=cfg.unlock)
    what = f"item {cfg.item} of project {cfg.project}" if cfg.item else f"project {cfg.project}"
    state = "open for edits" if cfg.unlock else "locked: its answers can no longer be edited or sent back"
    print(f"{what} {state}" + ("" if changed else " (it already was)"))
    return changed


# ------------------------------------------------------------------------------------------------ gold

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
