"""Blind human evaluation of two policies (InstructGPT's headline measurement, Ouyang et al. 2022 §4.1, done by
people): the same prompts answered by policy A and policy B, shown as a pairwise item each, and the share of
comparisons that B wins, with a 95% Wilson score interval.

`rlhf label import --mode pairwise --eval A.jsonl B.jsonl` pairs the two files by record id (each a candidates
file such as `rlhf sample` writes, whose first completion is taken, or prompt-completion rows). Which output is
A is drawn per item from `--seed` and stored in the candidate's `source` (`eval-A:<source>`), never in what a
labeler sees; the app also shuffles the shown order per labeler (`assign.shown_order`). No schema change: the
arm is part of the source string, and `win_rate_b_over_a` reads it back from the submissions.
"""

from __future__ import annotations

import random
from pathlib import Path

from rlhfkit.data.formats import CANDIDATES, PROMPT_COMPLETION, read_format
from rlhfkit.data.schemas import candidate_record, demo_record
from rlhfkit.errors import UserError
from rlhfkit.stats import wilson_interval

ARMS = ("A", "B")
PREFIX = "eval-"


def arm_source(arm: str, source: str) -> str:
    return f"{PREFIX}{arm}:{source}"


def arm_of(source: str) -> str | None:
    """'A' or 'B' for a candidate imported by `--eval`, else None."""
    for arm in ARMS:
        if source.startswith(f"{PREFIX}{arm}:"):
            return arm
    return None


def read_arm(path: str, opts=None) -> dict[str, dict]:
    """id -> {prompt, text, source, finished}: one output per prompt of one policy."""
    fmt, rows = read_format(path, opts)
    if fmt not in (CANDIDATES, PROMPT_COMPLETION):
        raise UserError(f"{path}: a {fmt} file; --eval takes candidates (id, prompt, completions), as `rlhf sample` "
                        "writes, or prompt-completion rows (id, prompt, completion)")
    out: dict[str, dict] = {}
    for n, (_where, row, error) in enumerate(rows):
        if fmt == CANDIDATES:
            rec = candidate_record(row, error, min_completions=1)  # `rlhf sample -n 1` writes one per prompt
            first = rec["completions"][0]
            rid, arm = rec["id"], {"prompt": rec["prompt"], "text": first["text"], "source": first["source"],
                                   "finished": first["finished"]}
        else:
            rec = demo_record(row, error)
            rid = str(row.get("id", n))
            arm = {"prompt": rec["prompt"], "text": rec["completion"], "source": Path(path).stem, "finished": True}
        if rid in out:
            raise error(f"id {rid!r} appears twice")
        out[rid] = arm
    return out


def pair_items(a: dict[str, dict], b: dict[str, dict], seed: int, a_path: str = "A", b_path: str = "B"
               ) -> list[dict]:
    """Candidates records (2 completions each, A and B in an order drawn per item from `seed`), in A's order.
    Both files must hold the same ids with the same prompts."""
    for mine, other, path, other_path in ((a, b, a_path, b_path), (b, a, b_path, a_path)):
        missing = [rid for rid in mine if rid not in other]
        if missing:
            raise UserError(f"{path}: id {missing[0]!r} has no answer in {other_path} ({len(missing)} ids missing); "
                            "--eval compares both policies on the same prompts")
    rng = random.Random(seed)
    items = []
    for rid, x in a.items():
        y = b[rid]
        if x["prompt"] != y["prompt"]:
            raise UserError(f"{b_path}: id {rid!r} has another prompt than in {a_path}")
        outputs = [{"text": x["text"], "source": arm_source("A", x["source"]), "finished": x["finished"]},
                   {"text": y["text"], "source": arm_source("B", y["source"]), "finished": y["finished"]}]
        if rng.random() < 0.5:
            outputs.reverse()
        items.append({"id": rid, "prompt": x["prompt"], "completions": outputs})
    return items


def win_rate_b_over_a(rows: list[dict]) -> dict | None:
    """From `Store.submissions` rows: B's wins over A (ties half) per answered `--eval` item and labeler,
    with the 95% Wilson interval; None when the project holds no `--eval` items. Each labeler's answer is one
    comparison (with several labelers per item they are not independent; the interval is then too narrow)."""
    wins, n, ties, eval_items = 0.0, 0, 0, False
    sources: dict[str, set] = {"A": set(), "B": set()}
    for r in rows:
        arms = [arm_of(c["source"]) for c in r["completions"]]
        if sorted(a for a in arms if a) != ["A", "B"]:
            continue
        eval_items = True
        for c, arm in zip(r["completions"], arms):
            sources[arm].add(c["source"].split(":", 1)[1])
        if r["kind"] != "pairwise" or not r["tiers"]:
            continue  # a skip is no comparison
        tier = {arms[int(i)]: t for i, t in r["tiers"].items()}
        ties += tier["A"] == tier["B"]
        wins += 0.5 if tier["A"] == tier["B"] else float(tier["B"] < tier["A"])
        n += 1
    if not eval_items:
        return None
    out = {"a": sorted(sources["A"]), "b": sorted(sources["B"]), "b_wins": wins, "ties": ties, "n": n,
           "rate": None, "ci_low": None, "ci_high": None}
    if n:
        low, high = wilson_interval(wins, n)
        out |= {"rate": round(wins / n, 4), "ci_low": round(low, 4), "ci_high": round(high, 4)}
    return out


def report_win_rates(report: dict) -> dict[str, dict]:
    """The win rates a JSON report holds, by name: `rlhf eval winrate --json-out` (one, by the gold reward,
    named '<a> over <b>'), or `rlhf demo`'s report.json (`win_rates`: by gold; `rm_win_rates` if present)."""
    found = {}
    if {"rate", "ci_low", "ci_high"} <= set(report):
        found[f"gold: {report.get('a', 'A')} over {report.get('b', 'B')}"] = report
    for key, kind in (("win_rates", "gold"), ("rm_win_rates", "RM")):
        for name, w in (report.get(key) or {}).items():
            if isinstance(w, dict) and {"rate", "ci_low", "ci_high"} <= set(w):
                found[f"{kind}: {name}"] = w
    return found
