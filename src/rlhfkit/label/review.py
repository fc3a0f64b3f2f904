"""Review and quality control, as pure functions over `Store.submissions` / `Store.gold_answers` rows.

- The review queue: a project's items with every labeler's answer, most disputed first. An item's
  disagreement is 1 − its pairwise agreement (over the output pairs two labelers both ordered strictly,
  the share ordered alike, pooled over every pair of its labelers), ties broken by the mean Kendall τ-b,
  lowest first (label/agreement.py); items that cannot be compared yet (one answer, demonstrations) follow in
  file order.
- Gold accuracy: a labeler's answers on gold items scored against the known ranking with the same pairwise
  agreement (a known tie is no evidence either way and is left out).
- Quality control: each labeler's gold accuracy and agreement with the others, shown only from enough data
  (`GOLD_MIN_ANSWERS` gold answers, `AGREEMENT_MIN_PAIRS` compared pairs) and flagged below the project's
  threshold.
"""

from __future__ import annotations

from collections import defaultdict
from itertools import combinations

from rlhfkit.label import agreement
from rlhfkit.label.answers import tiers_to_ranking

GOLD_MIN_ANSWERS = 5  # gold answers before a labeler's accuracy is shown (or flagged)
AGREEMENT_MIN_PAIRS = 20  # compared output pairs before a labeler's agreement is shown (or flagged)


def ranking_of(row: dict) -> list[list[int]] | None:
    """A rank or pairwise answer's tie groups (by candidate index); None for skips and demonstrations."""
    if row["kind"] not in ("rank", "pairwise") or not row.get("tiers"):
        return None
    return tiers_to_ranking({int(i): t for i, t in row["tiers"].items()})


def item_agreement(rows: list[dict]) -> dict:
    """Agreement among the answers to one item: pooled pairwise agreement, mean τ-b, pairs compared."""
    rankings = [r for r in map(ranking_of, rows) if r is not None]
    agree = total = 0
    taus = []
    for a, b in combinations(rankings, 2):
        ok, n = agreement.pair_agreement(a, b)
        agree, total = agree + ok, total + n
        tau = agreement.kendall_tau_b(a, b)
        if tau is not None:
            taus.append(tau)
    return {"pairwise_agreement": agree / total if total else None, "pairs_compared": total,
            "kendall_tau_b": sum(taus) / len(taus) if taus else None}


def review_queue(rows: list[dict]) -> list[dict]:
    """Items with their answers, most disputed first: [{id, prompt, completions, answers, agreement,
    disagreement}]; `rows` in file order (as `Store.submissions` gives them)."""
    items: dict[str, dict] = {}
    for r in rows:
        item = items.setdefault(r["id"], {"id": r["id"], "public_id": r.get("public_id"), "prompt": r["prompt"],
                                          "tools": r.get("tools"), "completions": r["completions"],
                                          "locked": r.get("item_locked", False), "answers": []})
        item["answers"].append(r)
    out = []
    for order, item in enumerate(items.values()):
        item["agreement"] = agr = item_agreement(item["answers"])
        pa, tau = agr["pairwise_agreement"], agr["kendall_tau_b"]
        item["disagreement"] = None if pa is None else 1 - pa
        item["_key"] = (pa is None, -(1 - pa) if pa is not None else 0, tau if tau is not None else 1, order)
        out.append(item)
    out.sort(key=lambda it: it.pop("_key"))
    return out


def gold_accuracy(rows: list[dict]) -> dict[str, dict]:
    """Per labeler: gold answers, output pairs scored, agreeing pairs, accuracy (None until
    `GOLD_MIN_ANSWERS`). `rows`: {labeler, kind, tiers, gold} with `gold` the known tie groups."""
    by: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for r in rows:
        ranking = ranking_of(r)
        if ranking is None:
            continue
        ok, n = agreement.pair_agreement(ranking, r["gold"])
        counts = by[r["labeler"]]
        counts[0] += 1
        counts[1] += n
        counts[2] += ok
    return {name: {"gold_answers": n, "gold_pairs": pairs,
                   "gold_accuracy": agree / pairs if n >= GOLD_MIN_ANSWERS and pairs else None}
            for name, (n, pairs, agree) in sorted(by.items())}


def quality(labelers: list[str], gold: dict[str, dict], per_labeler_agreement: dict[str, dict],
            threshold: float) -> dict[str, dict]:
    """Per labeler: gold accuracy and agreement with the others (each None until there is enough data) and
    whether either is below `threshold` (`flagged`, with the reasons)."""
    out = {}
    for name in labelers:
        g = gold.get(name, {"gold_answers": 0, "gold_pairs": 0, "gold_accuracy": None})
        a = per_labeler_agreement.get(name, {})
        pairs = a.get("pairs_compared", 0)
        agree = a.get("pairwise_agreement") if pairs >= AGREEMENT_MIN_PAIRS else None
        reasons = []
        if g["gold_accuracy"] is not None and g["gold_accuracy"] < threshold:
            reasons.append(f"gold accuracy {100 * g['gold_accuracy']:.0f}% < {100 * threshold:.0f}%")
        if agree is not None and agree < threshold:
            reasons.append(f"agreement {100 * agree:.0f}% < {100 * threshold:.0f}%")
        out[name] = {**g, "agreement": agree, "pairs_compared": pairs, "flagged": bool(reasons),
                     "reasons": reasons}
    return out


def ranking_text(tiers: dict | None, shown: list[int] | None = None) -> str:
    """Tiers by candidate index -> "2 > 1 = 3": outputs numbered from 1 as the labeler saw them (`shown`: the
    candidate indices in their shown order), else in their imported order."""
    if not tiers:
        return ""
    number = {i: n for n, i in enumerate(shown)} if shown else {}
    return " > ".join(" = ".join(str(n + 1) for n in sorted(number.get(i, i) for i in group))
                      for group in tiers_to_ranking({int(i): t for i, t in tiers.items()}))


def by_shown(values: list | None, shown: list[int]) -> list:
    """Per-output values stored by candidate index (Likert, flags, notes) in the labeler's shown order."""
    return [values[i] for i in shown if i < len(values)] if values else []


def flags_text(flags: list[dict] | None, shown: list[int] | None = None) -> list[str]:
    """Per output, the flags ticked: ["2: harmful_advice, moral_judgment", ...] (outputs from 1, numbered as the
    labeler saw them when `shown` is given)."""
    flags = by_shown(flags, shown) if shown else flags or []
    return [f"{n + 1}: {', '.join(name for name, on in f.items() if on)}"
            for n, f in enumerate(flags) if any(f.values())]


def turn_flags_text(turn_flags: list[list[dict] | None] | None, shown: list[int]) -> list[str]:
    """Per trajectory, the turns flagged: ["2, turn 0: calls the wrong city", ...] (outputs numbered from 1 as the
    labeler saw them, turns by their index in the trajectory, as exported)."""
    return [f"{n + 1}, turn {f['turn']}: {f['reason']}" for n, flags in enumerate(by_shown(turn_flags, shown))
            for f in flags or []]


def prefill_fields(mode: str, answer: dict) -> list[tuple[str, str]]:
    """An answer as the task form's fields (name, value), in the drafts' format (static/label.js): what the
    edit page fills in."""
    fields: list[tuple[str, str]] = []
    if mode == "rank":
        fields += [(f"tier_{i}", str(t + 1)) for i, t in (answer.get("tiers") or {}).items()]
        fields += [(f"likert_{i}", str(v)) for i, v in enumerate(answer.get("likert") or []) if v is not None]
        fields += [(f"flag_{i}", name) for i, f in enumerate(answer.get("flags") or []) for name, on in f.items() if on]
        fields += [(f"note_{i}", n) for i, n in enumerate(answer.get("output_notes") or []) if n]
        fields += [(f"turnflag_{i}_{f['turn']}", f["reason"]) for i, flags in enumerate(answer.get("turn_flags") or [])
                   for f in flags or []]
    elif mode == "pairwise":
        fields += [("choice", answer["choice"])] if answer.get("choice") else []
        fields += [("notes", answer["notes"])] if answer.get("notes") else []
    elif answer.get("text"):
        fields.append(("text", answer["text"]))
    return fields
