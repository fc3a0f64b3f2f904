"""Exports in the formats of docs/design.md §2, built from `Store.submissions` rows.

- rankings: one line per labeler per ranked item; a pairwise answer is a ranking of K=2
  (A better -> [[a], [b]], equal -> one tie group [[a, b]]); optional likert, flags, notes; `finished`
  carries each candidate's EOS flag from the import (`rlhf sample` writes it) through to `rlhf rm`;
  `judge_draft` ("shown" or "hidden") whether the labeler was served the judge's ranking as a starting draft
  (left out when unknown: an answer stored before migration 0008 that its event log could not clear).
  A trajectory is exported as its messages (tool calls and tool results included), the item's `tools` beside
  its prompt, and the turns a labeler flagged as `turn_flags`: per completion, [{"turn", "reason"}], `turn` the
  index of the flagged message in that completion (written when the labeler flagged at least one turn).
- pairs: every strictly ordered pair of those rankings (`rankings_to_pair_records`), TRL format, with
  `chosen_turn_flags` / `rejected_turn_flags` where a flagged trajectory is one side.
- demos: prompt, completion (TRL prompt-completion format), for SFT.
- raw: every submission as stored, skips, timings and sources included.

Every rankings/pairs/demos record passes the validators of `rlhfkit.data.schemas` before it is written.
"""

from __future__ import annotations

from rlhfkit.data.pairs import rankings_to_pair_records
from rlhfkit.data.schemas import demo_record, pair_record, ranking_record, tools_field
from rlhfkit.errors import UserError
from rlhfkit.label.answers import tiers_to_ranking
from rlhfkit.label.configs import FORMATS


def _invalid(message: str) -> UserError:
    raise AssertionError(f"export produced an invalid record: {message}")  # a bug, never user input


def ranking_records(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        if r["kind"] not in ("rank", "pairwise"):
            continue
        record = {"id": r["id"], "prompt": r["prompt"], **({"tools": r["tools"]} if r.get("tools") else {}),
                  "completions": [c.get("messages", c["text"]) for c in r["completions"]],
                  "ranking": tiers_to_ranking({int(i): t for i, t in r["tiers"].items()}),
                  "labeler": r["labeler"],
                  # whether each output ended with EOS: the reward model scores an unfinished one without it
                  "finished": [c["finished"] for c in r["completions"]]}
        if r["likert"] and None not in r["likert"]:
            record["likert"] = r["likert"]
        if r["flags"]:
            record["flags"] = r["flags"]
        if r["output_notes"] and any(r["output_notes"]):
            record["notes"] = r["output_notes"]
        elif r["notes"]:
            record["notes"] = r["notes"]
        if r.get("turn_flags"):
            record["turn_flags"] = [f or [] for f in r["turn_flags"]]
        if r.get("judge_draft"):  # "shown" or "hidden"; left out when unknown
            record["judge_draft"] = r["judge_draft"]
        checked = ranking_record(record, _invalid)
        out.append({**checked, **tools_field(checked["prompt"])})  # the tools go with their conversation
    return out


def pair_records(rows: list[dict]) -> list[dict]:
    return [{**(p := pair_record(r, _invalid)), **tools_field(p["prompt"])}
            for r in rankings_to_pair_records(ranking_records(rows))]


def demo_records(rows: list[dict]) -> list[dict]:
    return [{**(d := demo_record({"prompt": r["prompt"], "completion": r["demonstration"],
                                  **({"tools": r["tools"]} if r.get("tools") else {})}, _invalid)),
             **tools_field(d["prompt"])}
            for r in rows if r["kind"] == "demo"]


def records(rows: list[dict], fmt: str) -> list[dict]:
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt == "raw":
        return rows
    return {"rankings": ranking_records, "pairs": pair_records, "demos": demo_records}[fmt](rows)
