import random

from rlhfkit.stats import pair_agreement
from rlhfkit.world.build import _tasks
from rlhfkit.world.corpus import expert_response, web_response
from rlhfkit.world.labelers import (
    TARGET_AGREEMENT,
    calibrate_temperature,
    make_labelers,
    score_items,
    simulated_agreement,
)


def _items(seed: int, n: int):
    rng = random.Random(seed)
    items = []
    for task in _tasks(rng, n, lambda p: True):
        cands, done = [], []
        for _ in range(4):
            if rng.random() < 0.85:
                cands.append(expert_response(task, rng)), done.append(True)
            else:
                words, ended = web_response(task, rng, 32)
                cands.append(" ".join(words[:32])), done.append(ended)
        items.append((task.prompt, cands, done))
    return items


def test_calibrated_labelers_agree_on_73_percent_of_fresh_pairs():
    tau = calibrate_temperature(score_items(_items(0, 1200)), seed=0)
    # Fresh items and fresh labeler noise: agreement generalizes, 0.73 ± 0.05 over thousands of pairs.
    agreement = simulated_agreement(score_items(_items(1, 1500)), tau, seed=123)
    assert abs(agreement - TARGET_AGREEMENT) <= 0.05


def test_less_noise_means_more_agreement():
    scored = score_items(_items(2, 300))
    assert simulated_agreement(scored, 0.05) > simulated_agreement(scored, 0.5) > simulated_agreement(scored, 5.0)


def test_identical_outputs_are_tied_and_better_outputs_usually_win():
    labeler = make_labelers(1, temperature=0.3, seed=0)[0]
    prompt = "list three animals ."
    wins = 0
    for _ in range(200):
        ranking = labeler.rank(prompt, ["cat dog horse", "shut up , idiot .", "cat dog horse"])
        assert [0, 2] in ranking  # the two identical texts share a group
        wins += ranking[0] == [0, 2]
    assert wins > 190


def test_label_record_has_likert_and_eight_flags():
    labeler = make_labelers(3, temperature=0.5, seed=0)[2]
    rec = labeler.label("x1", "list two fruits .", ["apple pear", "you should fight them ."])
    assert len(rec["likert"]) == 2 and all(1 <= v <= 7 for v in rec["likert"])
    assert len(rec["flags"]) == 2 and len(rec["flags"][1]) == 8
    assert labeler.length_bias < 0  # the last labelers of a group prefer short answers


def test_pair_agreement_counts_only_strict_pairs():
    assert pair_agreement([[0], [1], [2]], [[0], [2], [1]]) == (2, 3)
    assert pair_agreement([[0, 1], [2]], [[1], [0], [2]]) == (2, 2)  # the tied pair (0,1) is left out
