"""Active selection (data/selection.py) and the judge's pure parts (data/prelabels.py), against numbers computed by
hand in each test."""

import math

import pytest

from rlhfkit.data import prelabels as P
from rlhfkit.data.selection import (
    CandidateSet,
    choose_candidates,
    heldout_ids,
    pair_disagreement,
    pair_uncertainty,
    select,
)
from rlhfkit.errors import UserError


def test_uncertainty_is_the_entropy_of_the_ensembles_mean_preference():
    # head 1: r = (0, 0) -> σ(0) = 0.5; head 2: r = (2, 0) -> σ(2) = 0.880797; p̄ = 0.690399
    # H = −0.690399·ln 0.690399 − 0.309601·ln 0.309601 = 0.255808 + 0.362974 = 0.618781
    c = CandidateSet(("a", "b", "a"), scores=((0.0, 0.0, 5.0), (2.0, 0.0, 5.0)))
    u = pair_uncertainty(c)
    assert u[0][1] == u[1][0] == pytest.approx(0.618781, abs=1e-6)
    assert u[0][2] == 0.0  # identical texts: a tie teaches nothing, whatever the scores say
    # (1, 2): head 1 σ(−5) = 0.006693, head 2 σ(−5) the same: H(0.006693) = 0.006693·5.006715 + 0.993307·0.006715
    assert u[1][2] == pytest.approx(0.006693 * 5.006715 + 0.993307 * 0.006715, abs=1e-5)
    assert max(map(max, u)) <= math.log(2)


def test_disagreement_needs_different_texts_from_different_sources():
    d = pair_disagreement(CandidateSet(("a", "b", "a"), ("p", "q", "q")))
    assert d == [[0, 1, 0], [1, 0, 0], [0, 0, 0]]  # (1, 2) differ but come from one source
    one = pair_disagreement(CandidateSet(("a", "b", "a"), ("p", "p", "p")))
    assert one[0][1] == one[1][2] == 1 and one[0][2] == 0  # one source alone: different texts count


def test_candidates_are_chosen_greedily_by_their_pair_scores():
    s = [[0, 1.0, 0.2, 0.9], [1.0, 0, 0.3, 0.1], [0.2, 0.3, 0, 0.5], [0.9, 0.1, 0.5, 0]]
    # best pair (0, 1) = 1.0; then 2 adds 0.2 + 0.3 = 0.5, 3 adds 0.9 + 0.1 = 1.0 -> 3; mean (1 + 0.9 + 0.1)/3
    chosen, score = choose_candidates(s, 3)
    assert chosen == (0, 1, 3) and score == pytest.approx(2.0 / 3)
    assert choose_candidates(s, 2) == ((0, 1), 1.0)
    assert choose_candidates(s, 4)[0] == (0, 1, 2, 3)


def _pool():
    """Four prompts of three candidates; prompt 2 has the most uncertain pair (equal scores, different texts),
    prompt 3 only identical texts."""
    return [CandidateSet(("a", "b", "c"), ("p", "p", "p"), ((0.0, 3.0, 6.0),)),
            CandidateSet(("a", "b", "c"), ("p", "q", "p"), ((0.0, 4.0, 8.0),)),
            CandidateSet(("a", "b", "c"), ("p", "p", "p"), ((1.0, 1.0, 9.0),)),
            CandidateSet(("a", "a", "a"), ("p", "q", "p"), ((0.0, 0.0, 0.0),))]


def test_the_random_share_is_what_random_selection_draws_and_the_rest_is_the_strategys_best():
    pool = _pool()
    picks = select(pool, 2, 2, "uncertain", 0.5, seed=3)
    assert [p.by for p in picks] == ["random", "uncertain"]  # ⌊0.5·2 + ½⌋ = 1 random
    assert picks[:1] == select(pool, 1, 2, "random", 0.0, seed=3)  # the same draw as --select random
    best = 2 if picks[0].index != 2 else 0  # prompt 2's pair (0, 1): margin 0 -> H = ln 2
    assert picks[1].index == best
    if best == 2:
        assert picks[1].candidates == (0, 1) and picks[1].score == pytest.approx(math.log(2), abs=1e-6)
    assert all(p.index != 3 for p in picks[1:])  # identical texts everywhere: score 0, never picked actively
    everything = select(pool, 4, 2, "random", 0.2, seed=0)
    assert sorted(p.index for p in everything) == [0, 1, 2, 3] and {p.by for p in everything} == {"random"}


def test_disagree_and_mixed_pick_each_prompt_once():
    pool = _pool()
    picks = select(pool, 3, 2, "disagree", 0.0, seed=0)
    assert {p.index for p in picks} == {0, 1, 2} and {p.by for p in picks} == {"disagree"}  # 3: all alike
    assert next(p for p in picks if p.index == 1).candidates in {(0, 1), (1, 2)}  # across the two sources
    mixed = select(pool, 2, 2, "mixed", 0.0, seed=0)
    assert [p.by for p in mixed] == ["uncertain", "disagree"] and mixed[0].index == 2 and mixed[1].index in {0, 1}
    assert len({p.index for p in select(pool, 4, 2, "mixed", 0.25, seed=1)}) == 4


def test_a_strategy_or_share_out_of_range_is_one_line():
    with pytest.raises(UserError, match="'select'"):
        select(_pool(), 1, 2, "greedy", 0.1, 0)
    with pytest.raises(UserError, match="'random_share'"):
        select(_pool(), 1, 2, "uncertain", 1.5, 0)


def test_only_random_share_items_are_held_out():
    records = [{"id": f"r{i}", "by": "random"} for i in range(200)] + [{"id": f"u{i}", "by": "uncertain"}
                                                                         for i in range(200)]
    held = heldout_ids(records, 0.5, seed=0)
    assert held and all(i.startswith("r") for i in held) and 60 < len(held) < 140
    assert heldout_ids(records[:50], 0.5, 0) == {i for i in held if int(i[1:]) < 50}  # per id, not per file


# ------------------------------------------------------------------------------------------- pre-labels

def test_the_judges_ranking_ties_identical_texts_and_equal_scores():
    assert P.judge_ranking([1.0, 3.0, 1.0, 2.0], ["a", "b", "c", "d"]) == [[1], [3], [0, 2]]
    assert P.judge_ranking([3.0, 2.0, 2.5], ["a", "b", "a"]) == [[0, 2], [1]]


def test_confidence_is_the_weakest_pairs_probability():
    # pairs |0 − 2| = 2, |0 − 2.5| = 2.5, |2 − 2.5| = 0.5: min σ = σ(0.5) = 0.622459
    assert P.confidence([0.0, 2.0, 2.5], ["a", "b", "c"]) == pytest.approx(0.622459, abs=1e-6)
    assert P.confidence([0.0, 2.0, 0.0], ["a", "b", "a"]) == pytest.approx(1 / (1 + math.exp(-2)))
    assert P.confidence([0.0, 9.0], ["a", "a"]) == 1.0


def test_people_label_the_random_share_and_the_items_the_judge_is_unsure_of():
    items = [{"id": "a", "by": "random", "confidence": 0.99}, {"id": "b", "by": "uncertain", "confidence": 0.5},
             {"id": "c", "by": "uncertain", "confidence": 0.95}]
    assert P.to_people(items, 0.8) == {"a", "b"}


def test_wilson_interval_by_hand():
    # 8 of 10, z = 1.96: centre 0.8 + 3.8416/20 = 0.99208; spread 1.96·√(0.016 + 3.8416/400) = 0.313620;
    # divided by 1 + 3.8416/10 = 1.38416: (0.490, 0.943)
    low, high = P.wilson(8, 10, 1.96)
    assert low == pytest.approx(0.49016, abs=1e-4) and high == pytest.approx(0.94331, abs=1e-4)
    assert P.wilson(0, 0) == (0.0, 1.0)


def test_agreement_counts_each_persons_strict_pairs_and_skips_judge_records():
    judge = {"x": [[0], [1], [2]]}
    people = [{"id": "x", "ranking": [[0], [2], [1]], "labeler": "ann"},   # (0,1) ✓ (0,2) ✓ (1,2) ✗
              {"id": "x", "ranking": [[1, 2], [0]], "labeler": "bob"},     # (0,1) ✗ (0,2) ✗; (1,2) tied
              {"id": "x", "ranking": [[0], [1], [2]], "labeler": "judge:rm"},
              {"id": "y", "ranking": [[0], [1]], "labeler": "ann"}]
    assert P.agreement(judge, people) == (2, 5, 1)


def test_the_judge_is_measured_on_the_answers_made_with_its_draft_hidden_when_some_saw_it():
    judge = {"x": [[0], [1], [2]]}
    ann = {"id": "x", "ranking": [[0], [2], [1]], "labeler": "ann", "judge_draft": "hidden"}  # 2 of 3 pairs agree
    bob = {"id": "x", "ranking": [[0], [1], [2]], "labeler": "bob", "judge_draft": "shown"}   # 3 of 3: anchored
    cy = {"id": "x", "ranking": [[2], [1], [0]], "labeler": "cy"}                             # 0 of 3, unknown
    others = [{"id": "x", "ranking": [[0], [1], [2]], "labeler": "judge:rm"},
              {"id": "y", "ranking": [[0], [1]], "labeler": "dee", "judge_draft": "shown"}]  # not judged
    measured, counts, seen = P.by_draft(judge, [ann, bob, cy, *others], unknown="unknown")
    assert (measured, counts, seen) == ([ann], {"hidden": 1, "shown": 1, "unknown": 1}, "hidden")
    assert P.agreement(judge, measured) == (2, 3, 1)  # all three: (5, 9, 1)
    assert P.by_draft(judge, [bob, cy], unknown="unknown") == ([bob, cy], {"hidden": 0, "shown": 1, "unknown": 1},
                                                               "shown")
    assert P.by_draft(judge, [cy], unknown="unknown")[2] == "unknown"
    assert P.by_draft(judge, [ann, cy], unknown="hidden") == ([ann, cy], {"hidden": 2, "shown": 0, "unknown": 0},
                                                              "hidden")  # nobody was given the judge's ranking
    split = P.JudgeCheck("j", "items both labeled", 2, 3, 1, 0.7, "hidden", counts)
    assert ("its ranking hidden: measured on the 1 answer made with it hidden (of 1 hidden, 1 shown as a draft, "
            "1 unknown: drafts bias people)") in split.line()
    mixed = P.JudgeCheck("j", "items both labeled", 3, 6, 1, 0.7, "shown", {"hidden": 0, "shown": 1, "unknown": 1})
    assert "people saw its ranking as a draft (anchored people agree more: an upper estimate; answers: 0 hidden, " \
           "1 shown as a draft, 1 unknown)" in mixed.line()
    alone = P.JudgeCheck("j", "items both labeled", 3, 6, 1, 0.7, "unknown", {"hidden": 0, "shown": 0, "unknown": 2})
    assert "whether people saw its ranking as a draft is unknown" in alone.line() and "answers:" not in alone.line()


def test_a_judge_is_used_only_when_its_intervals_lower_end_reaches_the_threshold():
    good = P.JudgeCheck("world:gold", "items both labeled", 90, 100, 40, 0.7)
    bad = P.JudgeCheck("rm-random", "items both labeled", 52, 100, 40, 0.7)
    assert good.used and "judge world:gold: used" in good.line() and "hidden" in good.line()
    assert not bad.used and "NOT used" in bad.line() and "< threshold 0.70" in bad.line()
    close = P.JudgeCheck("j", "items both labeled", 8, 10, 4, 0.7, draft="shown")  # 0.8, but its CI reaches 0.49
    assert not close.used and "as a draft" in close.line()
    assert not P.JudgeCheck("j", "items both labeled", 0, 0, 0, 0.7).used
