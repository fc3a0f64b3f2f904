"""Rankings -> comparison pairs.

A labeler ranks K outputs best first, ties sharing a group. Every output in an earlier group beats every
output in a later one, which gives up to C(K,2) ordered pairs (InstructGPT §3.5: "A>B>C>D results in 6
ranked pairs"). Pairs inside a tie group carry no preference and are dropped; a ranking that is one tie group
gives no pair at all and is left out of training and evaluation in every layout (`ordered_groups`).
"""

from __future__ import annotations

from math import comb

from rlhfkit.data.configs import PairsConfig
from rlhfkit.data.formats import read_preferences as read_any_preferences
from rlhfkit.data.jsonl import check_writable, read_jsonl, write_jsonl
from rlhfkit.data.schemas import ranking_record, tools_field
from rlhfkit.errors import UserError


def ranking_to_pairs(ranking: list[list[int]]) -> list[tuple[int, int]]:
    """All strictly ordered (winner, loser) index pairs of a tie-grouped ranking, best group first.

    >>> ranking_to_pairs([[2], [0, 3], [1]])
    [(2, 0), (2, 3), (2, 1), (0, 1), (3, 1)]
    """
    pairs = []
    for g, better in enumerate(ranking):
        for worse in ranking[g + 1:]:
            pairs += [(w, l) for w in better for l in worse]
    return pairs


def pair_weight(k: int) -> float:
    """InstructGPT weights each ranking's pairs by 1/C(K,2), so a ranking counts once, however large K."""
    return 1.0 / comb(k, 2)


def ranking_tiers(ranking: list[list[int]], k: int) -> list[int]:
    """The tier of each of the K outputs, 0 for the best group (the form `losses.plackett_luce_loss` reads).

    >>> ranking_tiers([[2], [0, 3], [1]], 4)
    [1, 2, 0, 1]
    """
    tiers = [0] * k
    for t, group in enumerate(ranking):
        for i in group:
            tiers[i] = t
    return tiers


def pairs_to_tiers(pairs: list[tuple[int, int]], k: int) -> list[int] | None:
    """The tiers of K outputs whose (winner, loser) pairs are exactly those of one tie-grouped ranking (as
    `rlhf data pairs` writes a ranking's pairs), else None (a cycle, a missing or a repeated pair).

    An output's tier is fixed by the set of outputs that beat it: tie-mates share it, and a later tier is beaten
    by strictly more. Each pair alone, [(w, l)], is the ranking [[w], [l]].
    """
    above: list[set[int]] = [set() for _ in range(k)]
    for w, l in pairs:
        above[l].add(w)
    sets = sorted({frozenset(a) for a in above}, key=len)
    ranking = [[i for i in range(k) if above[i] == s] for s in sets]
    if len(set(pairs)) != len(pairs) or sorted(ranking_to_pairs(ranking)) != sorted(pairs):
        return None
    return ranking_tiers(ranking, k)


def rankings_to_pair_records(rankings: list[dict]) -> list[dict]:
    """TRL preference records, each tagged with the ranking (`group`) it came from; the turns a labeler flagged in
    a trajectory go with it (`chosen_turn_flags`, `rejected_turn_flags`), and a conversation's `tools` with it."""
    out = []
    for r in rankings:
        group = f"{r['id']}/{r.get('labeler', 'unknown')}"
        flags = r.get("turn_flags") or [[] for _ in r["completions"]]
        for w, l in ranking_to_pairs(r["ranking"]):
            pair = {"prompt": r["prompt"], "chosen": r["completions"][w],
                    "rejected": r["completions"][l], "group": group, **tools_field(r["prompt"])}
            for name, i in (("chosen", w), ("rejected", l)):
                if flags[i]:
                    pair[f"{name}_turn_flags"] = flags[i]
            out.append(pair)
    return out


def read_preference_records(path, opts=None, *, command: str = "rm") -> tuple[str, list[dict]]:
    """("rankings" or "pairs", the validated records) from any preference format (data/formats.py); `opts`: a
    config with the DataOptions fields (`--split`, `--field`)."""
    return read_any_preferences(path, opts, command=command)


def preference_groups(kind: str, records: list[dict]) -> list[dict]:
    """Records as a list of *groups* {"prompt", "completions", "finished", "pairs": [(winner, loser), ...],
    "group", "id", "tiers"}.

    A ranking keeps its C(K,2) pairs together; consecutive pairs that share a `group` tag are merged back into
    one (pairs without a tag are each their own group). `tiers`: each completion's tier, 0 best (`ranking_tiers`);
    for pairs, the ranking they are the pairs of, or None when they are not one (`pairs_to_tiers`).
    """
    if kind == "rankings":
        return [{"prompt": r["prompt"], "completions": r["completions"], "pairs": ranking_to_pairs(r["ranking"]),
                 "group": f"{r['id']}/{r['labeler']}", "id": r["id"],
                 "finished": r.get("finished", [True] * len(r["completions"])),
                 "tiers": ranking_tiers(r["ranking"], len(r["completions"]))}
                for r in records]
    groups: list[dict] = []
    for n, p in enumerate(records):
        tag = p.get("group", f"row {n + 1}")  # an untagged pair is its own group, named by its row
        if not groups or groups[-1]["group"] != tag or groups[-1]["prompt"] != p["prompt"]:
            groups.append({"prompt": p["prompt"], "completions": [], "pairs": [], "group": tag, "id": tag,
                           "finished": []})
        g = groups[-1]
        idx = []
        for text in (p["chosen"], p["rejected"]):
            if text not in g["completions"]:
                g["completions"].append(text)
                g["finished"].append(True)
            idx.append(g["completions"].index(text))
        g["pairs"].append((idx[0], idx[1]))
    for g in groups:
        g["tiers"] = pairs_to_tiers(g["pairs"], len(g["completions"]))
    return groups


def ordered_groups(groups: list[dict]) -> list[dict]:
    """The groups that give at least one strictly ordered pair: what the preference losses train and evaluate on.

    A ranking that is one tie group carries no preference: it is left out of the batches and of the number of
    rankings the loss averages over (losses.preference_loss), as `rlhf data pairs` writes no pair for it, so a
    file of rankings and the pairs exported from it give the same loss."""
    return [g for g in groups if g["pairs"]]


def check_tiers(groups: list[dict], path) -> None:
    """--loss plackett-luce reads each ranking whole: one line naming the first group of pairs that is not one."""
    for g in groups:
        if g["tiers"] is None:
            raise UserError(f"{path}: the pairs of group {g['group']!r} are not those of one ranking (a cycle, or a "
                            "missing or repeated pair); --loss plackett-luce needs whole rankings (use --loss "
                            "pairwise)")


def read_preferences(path, opts=None) -> list[dict]:
    """Rankings or pairs from a file, as groups (see `preference_groups`)."""
    return preference_groups(*read_preference_records(path, opts))


def export_pairs(cfg: PairsConfig) -> int:
    cfg.check()
    check_writable(cfg.out)
    rankings = read_jsonl(cfg.rankings, ranking_record)
    n = write_jsonl(cfg.out, rankings_to_pair_records(rankings))
    print(f"{n} pairs from {len(rankings)} rankings -> {cfg.out}")
    return n
