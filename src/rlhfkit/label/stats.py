"""Project statistics: progress, per-labeler throughput, agreement, and blind A/B win rates per source.

Pure functions over `Store.submissions` rows (plus the store's progress counts in `project_stats`).
"""

from __future__ import annotations

import statistics
from collections import defaultdict

from rlhfkit.label import agreement, blind, review
from rlhfkit.label.answers import tiers_to_ranking

# A rate is shown only from enough data: one 1.3-second answer is not "2,742 per hour". Below either
# bound, `per_hour` is None (the page shows "–").
RATE_MIN_ANSWERS = 10  # answers and skips
RATE_MIN_SECONDS = 600.0  # of work on the client timer


def throughput(rows: list[dict]) -> dict[str, dict]:
    """Per labeler: answers, skips, median seconds per answer (client timer), answers per hour of work
    (only from `RATE_MIN_ANSWERS` answers over `RATE_MIN_SECONDS` of work, else None)."""
    by: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by[r["labeler"]].append(r)
    out = {}
    for name, mine in sorted(by.items()):
        seconds = [r["elapsed_ms"] / 1000 for r in mine]
        busy = sum(seconds)
        out[name] = {"answers": sum(r["kind"] != "skip" for r in mine), "skips": sum(r["kind"] == "skip" for r in mine),
                     "median_seconds": statistics.median(seconds) if seconds else None,
                     "per_hour": len(mine) * 3600 / busy if enough_for_a_rate(len(mine), busy) else None}
    return out


def enough_for_a_rate(answers: int, seconds: float) -> bool:
    return answers >= RATE_MIN_ANSWERS and seconds >= RATE_MIN_SECONDS


def win_rates(rows: list[dict]) -> dict:
    """Blind A/B evaluation: per source, wins / comparisons (an 'equal' is half a win for each side),
    and per pair of sources, how often the first beats the second."""
    score: dict[str, float] = defaultdict(float)
    games: dict[str, int] = defaultdict(int)
    head: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0])
    for r in rows:
        if r["kind"] != "pairwise" or not r["tiers"]:
            continue
        tiers = {int(i): t for i, t in r["tiers"].items()}
        (a, ta), (b, tb) = sorted(tiers.items())
        sa, sb = r["completions"][a]["source"], r["completions"][b]["source"]
        points_a = 0.5 if ta == tb else float(ta < tb)
        for src, pts in ((sa, points_a), (sb, 1 - points_a)):
            score[src] += pts
            games[src] += 1
        if sa != sb:
            key, pts = ((sa, sb), points_a) if sa < sb else ((sb, sa), 1 - points_a)
            head[key][0] += pts
            head[key][1] += 1
    return {"per_source": {s: {"wins": score[s], "comparisons": games[s], "win_rate": score[s] / games[s]}
                           for s in sorted(games)},
            "head_to_head": [{"a": a, "b": b, "a_wins": w, "comparisons": n, "a_win_rate": w / n}
                             for (a, b), (w, n) in sorted(head.items())]}


def agreement_summary(rows: list[dict]) -> dict:
    rankings: dict[str, dict[str, list[list[int]]]] = defaultdict(dict)
    likert: dict[str, dict[str, list[int]]] = defaultdict(dict)
    for r in rows:
        if r["kind"] in ("rank", "pairwise") and r["tiers"]:
            rankings[r["id"]][r["labeler"]] = tiers_to_ranking({int(i): t for i, t in r["tiers"].items()})
            if r["likert"] and None not in r["likert"]:
                likert[r["id"]][r["labeler"]] = r["likert"]
    return agreement.summarize(rankings, likert)


def project_stats(progress: dict, rows: list[dict], gold_rows: list[dict] = ()) -> dict:
    stats = {**progress, "throughput": throughput(rows), "agreement": agreement_summary(rows)}
    labelers = sorted(set(stats["throughput"]) | {r["labeler"] for r in gold_rows})
    stats["quality"] = review.quality(labelers, review.gold_accuracy(list(gold_rows)),
                                      stats["agreement"]["per_labeler"], progress.get("qc_threshold", 0.7))
    if progress["mode"] == "pairwise":
        stats["win_rates"] = win_rates(rows)
        evaluation = blind.win_rate_b_over_a(rows)
        if evaluation is not None:
            stats["blind_eval"] = evaluation
    return stats


def _fmt(value, pct: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}%" if pct else f"{value:.3f}" if isinstance(value, float) else str(value)


def format_stats(st: dict) -> str:
    """The stats as a short plain-text report (what `rlhf label stats` prints)."""
    a = st["agreement"]
    lines = [f"project {st['project']} ({st['mode']}, {st['overlap']} labelers per item)",
             f"items {st['items']}, complete {st['complete']}, live leases {st['live_leases']}",
             "answers " + ", ".join(f"{k} {v}" for k, v in st["answers"].items()),
             f"agreement: pairwise {_fmt(a['pairwise_agreement'], True)} over {a['pairs_compared']} pairs, "
             f"Kendall tau-b {_fmt(a['kendall_tau_b'])}, Krippendorff alpha (ordinal) ranks "
             f"{_fmt(a['krippendorff_alpha_rank'])}, Likert {_fmt(a['krippendorff_alpha_likert'])}",
             "", f"{'labeler':<20} {'answers':>7} {'skips':>5} {'med s':>7} {'per h':>7} {'agree':>7} {'tau-b':>7}"]
    for name, t in st["throughput"].items():
        g = a["per_labeler"].get(name, {})
        lines.append(f"{name:<20} {t['answers']:>7} {t['skips']:>5} {_fmt(t['median_seconds']):>7} "
                     f"{_fmt(t['per_hour']):>7} {_fmt(g.get('pairwise_agreement'), True):>7} "
                     f"{_fmt(g.get('kendall_tau_b')):>7}")
    q = st.get("quality", {})
    if q:
        lines += ["", f"quality control (gold rate {100 * st.get('gold_rate', 0):.0f}%, {st.get('gold_items', 0)} gold "
                  f"items; flagged below {_fmt(st.get('qc_threshold'), True)}; '-' until there is enough data):",
                  f"{'labeler':<20} {'gold':>5} {'accuracy':>8} {'agree':>7}  flag"]
        lines += [f"{name:<20} {g['gold_answers']:>5} {_fmt(g['gold_accuracy'], True):>8} "
                  f"{_fmt(g['agreement'], True):>7}  {'; '.join(g['reasons']) if g['flagged'] else ''}".rstrip()
                  for name, g in q.items()]
    if "win_rates" in st:
        lines += ["", "blind A/B win rates (equal = half a win):"]
        lines += [f"  {src:<24} {_fmt(w['win_rate'], True):>7} of {w['comparisons']}"
                  for src, w in st["win_rates"]["per_source"].items()]
    if "blind_eval" in st:
        lines += ["", *format_blind_eval(st["blind_eval"], st.get("reference_win_rates") or {})]
    return "\n".join(lines)


def format_interval(w: dict) -> str:
    return f"{w['rate']:.3f} (95% CI {w['ci_low']:.3f}-{w['ci_high']:.3f}, n={w.get('n', '?')})"


def format_blind_eval(e: dict, reference: dict[str, dict]) -> list[str]:
    """The people's win rate of B over A, and the reference win rates of a report beside it."""
    lines = [f"blind evaluation, B = {', '.join(e['b'])} over A = {', '.join(e['a'])} (ties half):"]
    if e["n"]:
        lines.append(f"  people (Wilson)          {format_interval(e)}, {e['ties']} ties")
    else:
        lines.append("  people                   no answers yet")
    lines += [f"  {name:<24} {format_interval(w)}" for name, w in reference.items()]
    return lines
