import pytest

from rlhfkit.label.agreement import kendall_tau_b, krippendorff_alpha, pair_agreement, summarize

# Krippendorff (2011), "Computing Krippendorff's alpha-reliability", the 4 observers x 12 units example
# (None = missing); published: nominal 0.743, ordinal 0.815, interval 0.849.
RELIABILITY_DATA = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}
UNITS = [{c: v[u] for c, v in RELIABILITY_DATA.items() if v[u] is not None} for u in range(12)]


@pytest.mark.parametrize("metric, expected", [("nominal", 0.743), ("ordinal", 0.815), ("interval", 0.849)])
def test_krippendorff_alpha_matches_the_published_example(metric, expected):
    assert krippendorff_alpha(UNITS, metric) == pytest.approx(expected, abs=5e-4)


def test_alpha_is_one_for_perfect_agreement_and_none_without_variation():
    assert krippendorff_alpha([{"a": 1, "b": 1}, {"a": 2, "b": 2}]) == pytest.approx(1.0)
    assert krippendorff_alpha([{"a": 1, "b": 1}, {"a": 1, "b": 1}]) is None
    assert krippendorff_alpha([{"a": 1}]) is None


def test_kendall_tau_b_by_hand():
    # one swap among 3: n_c = 2, n_d = 1 -> (2 - 1) / 3
    assert kendall_tau_b([[0], [1], [2]], [[0], [2], [1]]) == pytest.approx(1 / 3)
    # a tie on one side: n_c = 2, n_d = 0, n_0 = 3, t_1 = 1 -> 2 / sqrt(2 * 3)
    assert kendall_tau_b([[0, 1], [2]], [[0], [1], [2]]) == pytest.approx(2 / 6 ** 0.5)
    assert kendall_tau_b([[0, 1, 2]], [[0], [1], [2]]) is None
    assert kendall_tau_b([[0], [1]], [[1], [0]]) == -1


def test_pair_agreement_leaves_ties_out():
    # pairs (0,1): tie on the left, skipped; (0,2) agree; (1,2) disagree
    assert pair_agreement([[0, 1], [2]], [[0], [2], [1]]) == (1, 2)


def test_summary_per_labeler_counts_only_their_pairs():
    by_item = {"x": {"ann": [[0], [1], [2]], "bob": [[0], [1], [2]], "cat": [[2], [1], [0]]}}
    s = summarize(by_item)
    assert s["pairwise_agreement"] == pytest.approx(3 / 9)
    assert s["per_labeler"]["ann"]["pairwise_agreement"] == pytest.approx(3 / 6)
    assert s["per_labeler"]["cat"]["pairwise_agreement"] == 0
    assert s["per_labeler"]["cat"]["kendall_tau_b"] == -1
    assert s["krippendorff_alpha_likert"] is None
