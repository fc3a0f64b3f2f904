import pytest

from rlhfkit.label.stats import format_stats, project_stats, throughput, win_rates


def pair_row(labeler, tiers, sources=("sft", "ppo"), kind="pairwise", elapsed=2000):
    return {"id": "q1", "prompt": "p", "kind": kind, "labeler": labeler, "elapsed_ms": elapsed, "tiers": tiers,
            "completions": [{"text": "a", "source": sources[0]}, {"text": "b", "source": sources[1]}],
            "likert": None}


def test_win_rates_count_equal_as_half():
    rows = [pair_row("ann", {0: 1, 1: 0}), pair_row("bob", {0: 0, 1: 0}), pair_row("cat", {0: 1, 1: 0})]
    w = win_rates(rows)
    assert w["per_source"]["ppo"] == {"wins": 2.5, "comparisons": 3, "win_rate": pytest.approx(2.5 / 3)}
    assert w["head_to_head"] == [{"a": "ppo", "b": "sft", "a_wins": 2.5, "comparisons": 3,
                                  "a_win_rate": pytest.approx(2.5 / 3)}]


def test_throughput_uses_the_client_timer():
    rows = [pair_row("ann", {0: 0, 1: 1}, elapsed=100_000) for _ in range(9)]
    rows.append(pair_row("ann", None, kind="skip", elapsed=20_000))
    t = throughput(rows)["ann"]
    assert (t["answers"], t["skips"], t["median_seconds"]) == (9, 1, 100.0)
    assert t["per_hour"] == pytest.approx(10 * 3600 / 920)


def test_no_rate_from_too_little_data():
    """One 1.3-second answer is not "2,769 per hour": a rate needs 10 answers and 10 minutes of work."""
    assert throughput([pair_row("ann", {0: 0, 1: 1}, elapsed=1_300)])["ann"]["per_hour"] is None
    nine = [pair_row("bob", {0: 0, 1: 1}, elapsed=100_000) for _ in range(9)]  # 900 s, but 9 answers
    assert throughput(nine)["bob"]["per_hour"] is None
    quick = [pair_row("cat", {0: 0, 1: 1}, elapsed=5_000) for _ in range(50)]  # 50 answers in 250 s
    assert throughput(quick)["cat"]["per_hour"] is None


def test_report_mentions_win_rates_for_pairwise_projects():
    progress = {"project": "ab", "mode": "pairwise", "overlap": 3, "items": 1, "complete": 1, "live_leases": 0,
                "answers": {"pairwise": 2}, "people": []}
    st = project_stats(progress, [pair_row("ann", {0: 1, 1: 0}), pair_row("bob", {0: 1, 1: 0})])
    text = format_stats(st)
    assert "ppo" in text and "100.0%" in text
