import pytest

from rlhfkit.train.kl_control import KLController


def test_adaptive_controller_raises_beta_above_target_and_lowers_it_below():
    high = KLController(0.1, target=6.0, horizon=10000)
    high.update(kl=12.0, n_episodes=64)          # error clipped to +0.2
    assert high.value == pytest.approx(0.1 * (1 + 0.2 * 64 / 10000))
    low = KLController(0.1, target=6.0, horizon=10000)
    low.update(kl=3.0, n_episodes=64)            # error = 3/6 − 1 = −0.5, clipped to −0.2
    assert low.value == pytest.approx(0.1 * (1 - 0.2 * 64 / 10000))
    fixed = KLController(0.1)
    fixed.update(kl=100.0, n_episodes=64)
    assert fixed.value == 0.1
