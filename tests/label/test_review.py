"""label/review.py: the review queue's order, gold accuracy and quality flags, with the numbers worked by hand."""

import math

import pytest

from rlhfkit.label import assign
from rlhfkit.label.review import (
    AGREEMENT_MIN_PAIRS,
    GOLD_MIN_ANSWERS,
    gold_accuracy,
    prefill_fields,
    quality,
    ranking_text,
    review_queue,
)


def row(item: str, labeler: str, ranking, kind: str = "rank", **extra) -> dict:
    tiers = None if ranking is None else {str(i): t for t, g in enumerate(ranking) for i in g}
    return {"id": item, "prompt": f"prompt {item}", "completions": [{"text": "x"}] * 3, "kind": kind,
            "labeler": labeler, "tiers": tiers, **extra}


def test_the_queue_puts_the_most_disputed_item_first():
    rows = [row("a", "ann", [[0], [1], [2]]), row("a", "bob", [[0], [1], [2]]),  # agree 3/3, tau 1
            row("b", "ann", [[0], [1], [2]]), row("b", "bob", [[2], [1], [0]]),  # agree 0/3, tau -1
            row("c", "ann", [[0], [1], [2]]), row("c", "bob", [[1], [0], [2]]),  # agree 2/3, tau (2-1)/3
            row("d", "ann", [[0], [1], [2]]),  # one answer: nothing to compare
            # the tie leaves (0, 1) out: 2/2 agree; tau-b = 2 / sqrt((3 - 0)(3 - 1)) = 0.816
            row("e", "ann", [[0], [1], [2]]), row("e", "bob", [[0, 1], [2]]),
            row("e", "cy", None, kind="skip", skip_reason="unclear")]
    q = review_queue(rows)
    assert [it["id"] for it in q] == ["b", "c", "e", "a", "d"]
    b, c, e = q[0], q[1], q[2]
    assert b["disagreement"] == 1 and b["agreement"]["kendall_tau_b"] == -1
    assert c["disagreement"] == pytest.approx(1 / 3) and c["agreement"]["kendall_tau_b"] == pytest.approx(1 / 3)
    assert e["disagreement"] == 0 and e["agreement"]["kendall_tau_b"] == pytest.approx(2 / math.sqrt(6))
    assert [a["labeler"] for a in e["answers"]] == ["ann", "bob", "cy"]  # the skip is shown with its reason
    assert q[-1]["disagreement"] is None and q[-1]["agreement"]["pairs_compared"] == 0


def test_gold_accuracy_scores_pairs_against_the_known_answer_from_enough_answers():
    gold = [[0], [1], [2]]
    rows = [{"labeler": "ann", "kind": "rank", "tiers": {"0": 0, "1": 1, "2": 2}, "gold": gold} for _ in range(4)]
    rows.append({"labeler": "ann", "kind": "rank", "tiers": {"0": 2, "1": 1, "2": 0}, "gold": gold})  # 0 of 3
    rows += [{"labeler": "bob", "kind": "rank", "tiers": {"0": 0, "1": 1, "2": 2}, "gold": [[0, 1], [2]]}]
    rows += [{"labeler": "bob", "kind": "skip", "tiers": None, "gold": gold}]  # a skip is no gold answer
    acc = gold_accuracy(rows)
    assert acc["ann"] == {"gold_answers": 5, "gold_pairs": 15, "gold_accuracy": 12 / 15}
    # the known tie (0, 1) is no evidence: 2 pairs scored; one answer is too few to show a rate
    assert acc["bob"] == {"gold_answers": 1, "gold_pairs": 2, "gold_accuracy": None}
    assert GOLD_MIN_ANSWERS == 5


def test_labelers_below_the_threshold_are_flagged_once_there_is_enough_data():
    gold = {"ann": {"gold_answers": 5, "gold_pairs": 15, "gold_accuracy": 0.8},
            "bob": {"gold_answers": 2, "gold_pairs": 6, "gold_accuracy": None}}
    agree = {"ann": {"pairs_compared": 40, "pairwise_agreement": 0.9},
             "bob": {"pairs_compared": AGREEMENT_MIN_PAIRS - 1, "pairwise_agreement": 0.1},
             "cy": {"pairs_compared": AGREEMENT_MIN_PAIRS, "pairwise_agreement": 0.5}}
    q = quality(["ann", "bob", "cy"], gold, agree, threshold=0.85)
    assert q["ann"]["flagged"] and q["ann"]["reasons"] == ["gold accuracy 80% < 85%"]
    assert q["ann"]["agreement"] == 0.9
    assert not q["bob"]["flagged"] and q["bob"]["agreement"] is None  # 19 pairs: too few to judge
    assert q["cy"]["flagged"] and q["cy"]["reasons"] == ["agreement 50% < 85%"] and q["cy"]["gold_answers"] == 0
    assert not quality(["ann"], gold, agree, threshold=0.8)["ann"]["flagged"]  # 80% is not below 80%


def test_gold_comes_at_the_rate():
    draws = [assign.wants_gold(7, n, 0.1) for n in range(4000)]
    assert 0.08 < sum(draws) / len(draws) < 0.12
    assert draws == [assign.wants_gold(7, n, 0.1) for n in range(4000)]  # the same on a replay
    assert not any(assign.wants_gold(7, n, 0.0) for n in range(100))
    # the ids labelers see: tests/label/test_store.py::test_a_labeler_cannot_tell_gold_items_apart


def test_ranking_text_and_the_edit_forms_fields():
    assert ranking_text({"0": 1, "1": 0, "2": 1}) == "2 > 1 = 3" and ranking_text(None) == ""
    answer = {"tiers": {"0": 1, "1": 0}, "likert": [3, 6], "output_notes": ["", "ok"],
              "flags": [{"harmful_advice": True, "moral_judgment": False}, {"harmful_advice": False}]}
    assert prefill_fields("rank", answer) == [("tier_0", "2"), ("tier_1", "1"), ("likert_0", "3"), ("likert_1", "6"),
                                              ("flag_0", "harmful_advice"), ("note_1", "ok")]
    assert prefill_fields("pairwise", {"choice": "B", "notes": "n"}) == [("choice", "B"), ("notes", "n")]
    assert prefill_fields("demo", {"text": "hi"}) == [("text", "hi")]
