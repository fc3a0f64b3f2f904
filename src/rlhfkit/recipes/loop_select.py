"""What `rlhf loop --select` and `--judge` add to a round (the decisions are pure functions in data/selection.py
and data/prelabels.py; this module reads and writes the round's files):

    1. sample a pool (--pool-factor times the prompts, and times K candidates each) into round-r/pool.jsonl;
       choose the round's items and their K candidates into round-r/candidates.jsonl, each with `selected`
       {by, score}: the random share first, then the strategy's best (scored by bootstrap heads on the previous
       round's reward model, fitted on every ranking so far);
    2. with --judge: the judge ranks every item (round-r/judge.jsonl: ranking, confidence, scores); people get the
       random share and the items it is unsure of (round-r/people.jsonl); after people label, the judge is
       measured against them on the random share's items (the audit: agreement, 95% Wilson interval) and its
       rankings of the other items join the round's rankings, labeler `judge:NAME`, only when it passes;
    3. the reward model holds out half of the random share's items that people labeled (every round's), never an
       actively chosen or judge-labeled one: its held-out accuracy estimates the accuracy on uniformly drawn
       items, as with --select random.
"""

from __future__ import annotations

from pathlib import Path

from rlhfkit.data import prelabels as P
from rlhfkit.data.jsonl import read_jsonl, write_jsonl
from rlhfkit.data.selection import heldout_ids
from rlhfkit.recipes.judges import load_scorer, score_sets
from rlhfkit.recipes.pipeline import agreement
from rlhfkit.recipes.sample import rm_scores, select_candidates

HELDOUT_OF_RANDOM = 0.5  # of the random share (0.2 by default): 10% of the items, the RM's default eval_fraction


def choose(pool_path: Path, out: Path, *, n: int, k: int, strategy: str, random_share: float, seed: int,
           rm: Path | None, tokenizer_dir: Path, rankings: list[dict], heads: int, say) -> list[dict]:
    """The round's items from its pool (module docstring, step 1)."""
    pool = read_jsonl(pool_path)
    scores = None
    if strategy in ("uncertain", "mixed"):
        if rm is None:
            say(f"   no reward model yet: --select {strategy} chooses by disagree this round")
            strategy = "disagree"
        else:
            scores = rm_scores(str(rm), str(tokenizer_dir), pool, rankings, heads, seed)
    chosen = select_candidates(pool, n, k, strategy, random_share, seed, scores)
    write_jsonl(out, chosen)
    return chosen


def prelabel(candidates: Path, judge_spec: str, tokenizer_dir: Path, confidence: float, judge_out: Path,
             people_out: Path) -> dict:
    """Step 2's first half: the judge's rankings of every item, and the items that go to people."""
    items = read_jsonl(candidates)
    name, score = load_scorer(judge_spec, tokenizer_dir)
    scored = score_sets(score, items)
    rows = []
    for it, s in zip(items, scored):
        texts = [str(c["text"]) for c in it["completions"]]
        rows.append({"id": it["id"], "by": it.get("selected", {}).get("by"), "scores": s,
                     "ranking": P.judge_ranking(s, texts), "confidence": round(P.confidence(s, texts), 6)})
    write_jsonl(judge_out, rows)
    people = P.to_people(rows, confidence)
    write_jsonl(people_out, [it for it in items if it["id"] in people])
    return {"judge": name, "items": len(items), "to_people": len(people)}


def measure(judge_path: Path, people: list[dict], name: str, threshold: float,
            gold: tuple[int, int, int] = (0, 0, 0), *, unknown: str = "hidden") -> P.JudgeCheck:
    """The judge against people on the random share's items both labeled, pooled with its agreement on the app's
    gold items (`measure_gold`) when there are some. Each answer's `judge_draft` says whether the app showed the
    person the judge's ranking as a draft: when some were made with it hidden and others not, only the hidden ones
    are measured (`prelabels.by_draft`). `unknown`: what an answer without it counts as ("hidden" when the judge's
    rankings went to no app, "unknown" for the app's answers stored before it recorded drafts)."""
    rows = read_jsonl(judge_path)
    audit = {r["id"]: r["ranking"] for r in rows if r["by"] == "random" and r["confidence"] > 0}
    measured, drafts, draft = P.by_draft(audit, people, unknown)
    agree, pairs, items = P.agreement(audit, measured)
    where = "items both labeled" + (f" and {gold[2]} gold items" if gold[2] else "")
    return P.JudgeCheck(name, where, agree + gold[0], pairs + gold[1], items, threshold, draft, drafts)


def measure_gold(gold_items: list[dict], judge_spec: str, tokenizer_dir: Path) -> tuple[int, int, int]:
    """(agreeing pairs, compared pairs, items) of the judge's rankings of the app's gold items against their
    known rankings."""
    if not gold_items:
        return 0, 0, 0
    _, score = load_scorer(judge_spec, tokenizer_dir)
    judged = {}
    for it, s in zip(gold_items, score_sets(score, gold_items)):
        texts = [str(c["text"]) for c in it["completions"]]
        if P.confidence(s, texts) > 0:
            judged[it["id"]] = P.judge_ranking(s, texts)
    return P.agreement(judged, [{"id": it["id"], "ranking": it["ranking"], "labeler": "gold"} for it in gold_items])


def store_drafts(app, judge_path: Path, people: Path, name: str, show: bool) -> int:
    """Put the judge's rankings of the items people label into the app (shown as drafts only while the project's
    judge_draft is on; `show` sets it)."""
    ids = {it["id"] for it in read_jsonl(people)}
    rankings = {r["id"]: r["ranking"] for r in read_jsonl(judge_path) if r["id"] in ids and r["confidence"] > 0}
    if show:
        app.store.set_judge_draft(app.project, True)
    return app.store.set_judge_rankings(app.project, name, rankings)


def judge_rankings(judge_path: Path, candidates: Path, people_ids: set[str], name: str) -> list[dict]:
    """The judge's rankings records of the items people did not get, flagged by labeler `judge:NAME`."""
    items = {it["id"]: it for it in read_jsonl(candidates)}
    out = []
    for r in read_jsonl(judge_path):
        if r["id"] in people_ids:
            continue
        it = items[r["id"]]
        out.append({"id": r["id"], "prompt": it["prompt"], "completions": [c["text"] for c in it["completions"]],
                    "ranking": r["ranking"], "labeler": P.JUDGE_PREFIX + name,
                    "finished": [bool(c.get("finished", True)) for c in it["completions"]]})
    return out


def split_heldout(rankings: list[dict], round_candidates: list[Path], seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held out) of every ranking so far (step 3): held out are people's rankings of items of the random
    share whose hash falls in HELDOUT_OF_RANDOM."""
    by = [{"id": it["id"], "by": it.get("selected", {}).get("by")} for path in round_candidates
          for it in read_jsonl(path)]
    held = heldout_ids(by, HELDOUT_OF_RANDOM, seed)
    out = [r["id"] in held and not P.is_judge(r["labeler"]) for r in rankings]
    return [r for r, o in zip(rankings, out) if not o], [r for r, o in zip(rankings, out) if o]


def random_share_agreement(candidates: Path, rankings: Path, out: Path, *, unknown: str = "hidden"
                           ) -> tuple[float | None, dict[str, int]]:
    """People's pairwise agreement on the round's random-share items (the rankings it is measured on are written to
    `out`): actively chosen items are the hard ones, where people agree less; the random share estimates it for
    uniformly drawn items. People shown the judge's draft agree with each other more: when some answers were made
    with it hidden and others not, only the hidden ones are measured (`prelabels.split_by_draft`; `unknown` as in
    `measure`). Also: the answers per draft state."""
    ids = {it["id"] for it in read_jsonl(candidates) if it.get("selected", {}).get("by") == "random"}
    chosen, drafts, _ = P.split_by_draft([r for r in read_jsonl(rankings) if r["id"] in ids
                                          and not P.is_judge(r["labeler"])], unknown)
    if not chosen:
        return None, drafts
    write_jsonl(out, chosen)
    return agreement(out), drafts
