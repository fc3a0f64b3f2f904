"""Reward-model measurements against hand-computed values: noise ceiling, labeler agreement, and the
breakdown of accuracy by the gold component that decides each pair."""

import pytest

from rlhfkit.rewards.accuracy import accuracy_breakdown, deciding_component, labeler_agreement, noise_ceiling
from rlhfkit.world.gold import GoldReward


def gold(total, correctness=0.0, concision=0.0, termination=0.0, harmlessness=0.0, family="count"):
    return GoldReward(total, correctness, concision, termination, harmlessness, family)


def test_noise_ceiling_counts_gold_ties_as_half():
    groups = [{"pairs": [(0, 1), (1, 2), (0, 2)]}]
    totals = [1.0, 1.0, 0.0]  # pair (0,1) a gold tie; (1,2) and (0,2) ordered as labeled
    assert noise_ceiling(groups, lambda g, i: totals[i]) == pytest.approx((0.5 + 1 + 1) / 3)
    groups = [{"pairs": [(2, 0)]}]  # the labeler preferred the gold-worse output
    assert noise_ceiling(groups, lambda g, i: totals[i]) == 0.0


def test_labeler_agreement_over_pairs_both_ordered_strictly():
    a = {"id": "x", "completions": ["p", "q", "r"], "pairs": [(0, 1), (0, 2), (1, 2)]}
    b = {"id": "x", "completions": ["p", "q", "r"], "pairs": [(1, 0), (0, 2)]}  # 1 and 2 tied for b
    result = labeler_agreement([a, b])
    assert result == {"labeler_agreement": 0.5, "agreement_pairs": 2, "agreement_items": 1}


def test_deciding_component_weighs_correctness_as_the_gold_reward_does():
    # correctness 0.4 apart counts 0.8 in r*, more than a 0.5 concision gap
    assert deciding_component(gold(0, correctness=1.0, concision=-0.5), gold(0, correctness=0.6)) == "correctness"
    # correctness 0.2 apart counts 0.4, less than the same 0.5 concision gap
    assert deciding_component(gold(0, correctness=0.8), gold(0, correctness=0.6, concision=-0.5)) == "concision"
    assert deciding_component(gold(0, termination=0.0), gold(0, termination=-1.0)) == "termination"
    assert deciding_component(gold(0.3), gold(0.3)) == "none"


def test_accuracy_breakdown_by_component_and_family():
    golds = [gold(2.0, correctness=1.0, family="color"), gold(0.0, family="color"),
             gold(1.0, correctness=1.0, concision=-1.0, family="color")]
    rm = [0.5, 0.9, 0.1]
    groups = [{"pairs": [(0, 1), (0, 2), (2, 1)]}]
    out = accuracy_breakdown(groups, lambda g, i: rm[i], lambda g, i: golds[i])
    # (0,1): correctness decides, the RM gets it wrong, gold right; (2,1): correctness too, both as labeled
    # except the RM (0.1 < 0.9); (0,2): concision decides, RM right (0.5 > 0.1), gold right (2 > 1)
    assert out["by_component"] == {
        "concision": {"n_pairs": 1, "rm_accuracy": 1.0, "noise_ceiling": 1.0},
        "correctness": {"n_pairs": 2, "rm_accuracy": 0.0, "noise_ceiling": 1.0}}
    assert out["by_family"] == {"color": {"n_pairs": 3, "rm_accuracy": pytest.approx(1 / 3, abs=1e-4),
                                          "noise_ceiling": 1.0}}
