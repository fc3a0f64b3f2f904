"""AI pre-labels checked against people (docs/design.md §10): a judge ranks every candidate set first; the items
where it is confident go to training with its ranking, flagged as such (labeler `judge:NAME`); the rest go to
people. The judge is trusted only after it is measured against people. Pure functions; the judges themselves
(a reward model, a reward function, a causal LM asked to rank) are in recipes/judges.py.

- Ranking: candidates sorted by the judge's score s_i, best first; identical texts, and equal scores, tie.
- Confidence of an item: its weakest pair, min over pairs of different texts of σ(|s_i − s_j|) — the
  Bradley–Terry probability the judge gives its own order (a reward model's and an LM judge's log-odds are on
  this scale; a reward function's may need `scale`). An item of identical texts is certain (1).
- Routing: people label every item of the random share (the audit: uniform, so the agreement measured on it is
  unbiased) and every item whose confidence is below `--judge-confidence`; the judge labels the rest.
- Agreement: over the pairs that both the judge and a person order strictly, the share where they agree; each
  person's ranking of an item counts (two people on one item: two comparisons), with a 95% Wilson interval
      (p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n),  z = 1.96.
- The gate: a judge is used only when the interval's lower end is at least its threshold (`--judge-threshold`,
  default 0.7: about how often two toy-world labelers agree, 0.73 — a judge must agree with a person as well as
  another person does, and show it with the interval). Below it, its rankings are dropped and one line says why.
- Drafts: the labeling app can show people the judge's ranking as a starting draft, and records per answer whether
  it did (`judge_draft`: shown, hidden, or unknown). Anchored people agree with the judge more, so when some of the
  compared answers were made with the draft hidden, the agreement is measured on those alone (`by_draft`); the
  check says how many answers were made each way, and which ones it measured.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from rlhfkit.data.selection import sigmoid
from rlhfkit.stats import Z_95, pair_agreement, wilson_interval

DRAFT_STATES = ("hidden", "shown", "unknown")  # an answer's `judge_draft` as the agreement counts it
JUDGE_PREFIX = "judge:"   # the labeler field of a judge's ranking: "judge:NAME" (people never have this prefix)
DEFAULT_THRESHOLD = 0.7
DEFAULT_CONFIDENCE = 0.8


def judge_ranking(scores: list[float], texts: list[str]) -> list[list[int]]:
    """Tie groups, best first: by score, identical texts (and equal scores) in one group."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    groups: list[list[int]] = []
    for i in order:
        g = groups[-1] if groups else None
        if g and (scores[g[0]] == scores[i] or any(texts[j] == texts[i] for j in g)):
            g.append(i)
        else:
            groups.append([i])
    return [sorted(g) for g in groups]


def confidence(scores: list[float], texts: list[str], scale: float = 1.0) -> float:
    """min over pairs of different texts of σ(|s_i − s_j| / scale); 1 when every text is the same, 0 when the
    judge could not score one of them (NaN: the item goes to people)."""
    if any(math.isnan(s) for s in scores):
        return 0.0
    values = [sigmoid(abs(scores[i] - scores[j]) / scale) for i in range(len(texts))
              for j in range(i + 1, len(texts)) if texts[i] != texts[j]]
    return min(values, default=1.0)


def is_judge(labeler: str) -> bool:
    return str(labeler).startswith(JUDGE_PREFIX)


def to_people(items: list[dict], threshold: float) -> set[str]:
    """Ids of the items people label: the random share (`by == "random"`) and those below the confidence
    threshold. `items`: {id, by, confidence}."""
    return {it["id"] for it in items if it.get("by") == "random" or it["confidence"] < threshold}


def agreement(judge: dict[str, list[list[int]]], people: list[dict]) -> tuple[int, int, int]:
    """(agreeing pairs, compared pairs, items) of the judge's rankings (id -> tie groups) against people's
    rankings records (id, ranking, labeler) of the same items; judge-labeled records are skipped."""
    agree = total = 0
    items = set()
    for rec in people:
        if rec["id"] in judge and not is_judge(rec.get("labeler", "")):
            a, t = pair_agreement(judge[rec["id"]], rec["ranking"])
            agree, total = agree + a, total + t
            items.add(rec["id"])
    return agree, total, len(items)


def by_draft(judge: dict[str, list[list[int]]], people: list[dict], unknown: str = "hidden"
             ) -> tuple[list[dict], dict[str, int], str]:
    """(the records to measure the judge on, answers per draft state, what those answers saw) of people's rankings
    records of the judged items: each record's `judge_draft` ("shown" or "hidden"; a record without it counts as
    `unknown`, "hidden" or "unknown"). When some answers had the draft hidden and others did not (shown, or
    unknown), only the hidden ones are measured (drafts bias people towards the judge); otherwise all of them,
    and what they saw is "hidden", else "shown" if any saw the draft, else "unknown"."""
    return split_by_draft([rec for rec in people if rec["id"] in judge and not is_judge(rec.get("labeler", ""))],
                          unknown)


def split_by_draft(records: list[dict], unknown: str = "hidden") -> tuple[list[dict], dict[str, int], str]:
    """`by_draft` of people's rankings records already chosen (the hidden ones when others exist, the counts, what
    the kept ones saw)."""
    state = [rec.get("judge_draft") or unknown for rec in records]
    counts = {s: state.count(s) for s in DRAFT_STATES}
    if counts["hidden"] and counts["hidden"] < len(records):
        return [rec for rec, s in zip(records, state) if s == "hidden"], counts, "hidden"
    seen = "hidden" if counts["hidden"] or not records else "shown" if counts["shown"] else "unknown"
    return records, counts, seen


def wilson(agree: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of the proportion agree/total (`stats.wilson_interval`); (0, 1) when nothing was
    compared."""
    return wilson_interval(agree, total, z) if total else (0.0, 1.0)


@dataclass
class JudgeCheck:
    """A judge measured against people: agreement on `pairs` compared pairs of `items` items, its interval, the
    threshold, whether it is used, whether the measured answers were made seeing its ranking as a draft ("hidden",
    "shown" or "unknown"), and `drafts`: people's answers of the compared items per draft state (`by_draft`: when
    they differ, the measured ones are the hidden ones)."""
    judge: str
    where: str            # "items both labeled" or "gold items"
    agree: int
    pairs: int
    items: int
    threshold: float
    draft: str = "hidden"
    drafts: dict[str, int] | None = None

    @property
    def rate(self) -> float | None:
        return self.agree / self.pairs if self.pairs else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.agree, self.pairs)

    @property
    def used(self) -> bool:
        return self.pairs > 0 and self.interval[0] >= self.threshold

    def seen(self) -> str:
        """What the measured answers saw, and how many answers were made each way when that differs."""
        counts = self.drafts or {}
        made = ", ".join(f"{counts.get(s, 0)} {s}" + (" as a draft" if s == "shown" else "") for s in DRAFT_STATES)
        split = sum(n > 0 for n in counts.values()) > 1
        if self.draft == "hidden":
            if not split:
                return "its ranking hidden from people"
            n = counts["hidden"]
            return (f"its ranking hidden: measured on the {n} answer{'s' * (n != 1)} made with it hidden (of {made}: "
                    "drafts bias people)")
        if self.draft == "shown":
            return ("people saw its ranking as a draft (anchored people agree more: an upper estimate"
                    + (f"; answers: {made})" if split else ")"))
        return "whether people saw its ranking as a draft is unknown (answers stored before the app recorded it)"

    def line(self) -> str:
        seen = self.seen()
        if not self.pairs:
            return (f"judge {self.judge}: not used: no pair both it and people ordered on {self.items} "
                    f"{self.where} ({seen})")
        low, high = self.interval
        verdict = "used" if self.used else "NOT used"
        cmp_ = ">=" if self.used else "<"
        return (f"judge {self.judge}: {verdict}: agreement with people {self.rate:.3f} (95% CI {low:.3f}–"
                f"{high:.3f}) on {self.pairs} pairs of {self.items} {self.where}, {seen}; lower end {cmp_} "
                f"threshold {self.threshold:.2f}")

    def summary(self) -> dict:
        low, high = self.interval
        return {**asdict(self), "rate": self.rate, "ci_low": round(low, 4), "ci_high": round(high, 4),
                "used": self.used}
