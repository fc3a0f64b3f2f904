"""Each equation of losses.py against numbers computed by hand (the arithmetic is in the comments)."""

import math

import pytest
import torch

from rlhfkit import losses as L


def test_gae_and_returns_hand_computed_with_padding():
    rewards = torch.tensor([[0.1, 0.2, 1.0, 0.0], [0.0, 0.5, 0.0, 0.0]])
    values = torch.tensor([[0.5, 0.4, 0.3, 9.9], [0.2, 0.1, 7.0, 7.0]])  # 9.9 and 7.0 sit on padding
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    adv, ret = L.gae(rewards, values, mask, gamma=1.0, lam=0.95)
    # row 0: δ2 = 1.0 + 0 − 0.3 = 0.7; δ1 = 0.2 + 0.3 − 0.4 = 0.1; δ0 = 0.1 + 0.4 − 0.5 = 0.0
    #        A2 = 0.7; A1 = 0.1 + 0.95·0.7 = 0.765; A0 = 0.0 + 0.95·0.765 = 0.72675
    # row 1: δ1 = 0.5 + 0 − 0.1 = 0.4; δ0 = 0.0 + 0.1 − 0.2 = −0.1; A1 = 0.4; A0 = −0.1 + 0.95·0.4 = 0.28
    assert torch.allclose(adv, torch.tensor([[0.72675, 0.765, 0.7, 0.0], [0.28, 0.4, 0.0, 0.0]]))
    assert torch.allclose(ret, torch.tensor([[1.22675, 1.165, 1.0, 0.0], [0.48, 0.5, 0.0, 0.0]]))


def test_gae_matches_the_backward_recursion_for_any_gamma_lambda():
    torch.manual_seed(0)
    rewards, values = torch.randn(3, 6), torch.randn(3, 6)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] + [0] * 5])
    gamma, lam = 0.9, 0.8
    adv, _ = L.gae(rewards, values, mask, gamma, lam)
    for b in range(3):
        n, running = int(mask[b].sum()), 0.0
        for t in reversed(range(n)):
            next_value = values[b, t + 1] if t + 1 < n else 0.0
            running = rewards[b, t] + gamma * next_value - values[b, t] + gamma * lam * running
            assert adv[b, t].item() == pytest.approx(float(running), abs=1e-5)
        assert (adv[b, n:] == 0).all()


def test_kl_penalty_on_every_response_token_and_score_on_the_last_only():
    logp = torch.tensor([[-1.0, -2.0, -0.5, -9.0], [-1.0, -1.0, -1.0, -1.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5, -1.0], [-2.0, -2.0, -2.0, -2.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    rewards = L.per_token_rewards(torch.tensor([2.0, -1.0]), logp, ref, mask, kl_coef=0.1)
    # row 0: −0.1·(0.5, −1.0, 0.0) + (0, 0, 2.0); padding stays 0 whatever log π says there
    # row 1: −0.1·(1, 1, 1, 1) + (0, 0, 0, −1.0)
    assert torch.allclose(rewards, torch.tensor([[-0.05, 0.1, 2.0, 0.0], [-0.1, -0.1, -0.1, -1.1]]))


def test_k1_and_k3_estimators():
    logp, ref = torch.tensor([math.log(0.5)]), torch.tensor([math.log(0.25)])
    assert L.kl_k1(logp, ref).item() == pytest.approx(math.log(2))
    # ρ = π_SFT/π = 0.5: k3 = (0.5 − 1) − log 0.5 = 0.19315
    assert L.kl_k3(logp, ref).item() == pytest.approx(-0.5 + math.log(2))
    torch.manual_seed(0)
    a, b = torch.randn(100), torch.randn(100)
    assert (L.kl_k3(a, b) >= 0).all()


def test_k3_with_a_mask_is_zero_on_padding_whatever_its_log_probs():
    # A fresh forward pass at a low temperature gives padding log π far below −88 while the rollout stores 0 there:
    # unmasked, exp(0 − (−200)) overflows float32 and the masked sum's 0·inf is NaN.
    logp = torch.tensor([[math.log(0.5), -200.0]], requires_grad=True)
    ref, mask = torch.tensor([[math.log(0.25), 0.0]]), torch.tensor([[1, 0]])
    assert torch.isinf(L.kl_k3(logp, ref)[0, 1])  # what the mask prevents
    k3 = L.kl_k3(logp, ref, mask)
    assert k3[0].tolist() == pytest.approx([-0.5 + math.log(2), 0.0])  # ρ = 0.5 on the valid token, 0 on padding
    L.masked_mean(k3, mask).backward()
    # d k3 / d log π = 1 − ρ = 0.5 on the valid token; nothing reaches the padding
    assert logp.grad[0].tolist() == pytest.approx([0.5, 0.0])


def test_k2_is_half_the_squared_log_ratio():
    # log π = log 0.5, log π_old = log 0.25: log ratio = log 2 = 0.693147 -> k2 = ½·0.693147² = 0.240227
    logp, old = torch.tensor([math.log(0.5), -1.0]), torch.tensor([math.log(0.25), -1.0])
    assert L.kl_k2(logp, old).tolist() == pytest.approx([0.5 * math.log(2) ** 2, 0.0])
    assert L.kl_k2(logp, old)[0].item() == pytest.approx(0.240227, abs=1e-6)
    assert torch.equal(L.kl_k2(logp, old), L.kl_k2(old, logp))  # symmetric in its arguments, never negative


def ppo_g(eps: float, advantages: torch.Tensor) -> torch.Tensor:
    """The lecture's (docs/design.md §0) g(ε, A) = (1+ε)A if A ≥ 0 else (1−ε)A, so that L = min(ρA, g(ε, A)): the
    same objective as the trainer's `losses.clipped_surrogate_terms`, written as the slide writes it."""
    return torch.where(advantages >= 0, (1 + eps) * advantages, (1 - eps) * advantages)


def test_clipped_surrogate_hand_computed():
    old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1, 0.7]]))
    adv = torch.tensor([[1.0, -1.0, 2.0, 3.0]])
    # min(ρA, clip(ρ)A): min(1.5, 1.2) = 1.2; min(−0.5, −0.8) = −0.8; min(2.2, 2.2) = 2.2; min(2.1, 2.4) = 2.1
    terms = L.clipped_surrogate_terms(logp, old, adv, eps=0.2)
    assert terms[0].tolist() == pytest.approx([-1.2, 0.8, -2.2, -2.1])
    # PPO's loss (bnpo, what train/ppo.py surrogate_loss takes by default): the token mean
    assert L.aggregate_loss(terms, torch.ones(1, 4), "bnpo").item() == pytest.approx(-(1.2 - 0.8 + 2.2 + 2.1) / 4)
    assert L.clip_fraction(logp, old, torch.ones(1, 4), 0.2).item() == pytest.approx(3 / 4)  # 1.5, 0.5, 0.7


def test_lecture_g_form_equals_the_min_clip_form():
    torch.manual_seed(0)
    ratio, adv = torch.rand(1000) * 2, torch.randn(1000)
    eps = 0.2
    g_form = -torch.min(ratio * adv, ppo_g(eps, adv))
    assert torch.allclose(L.clipped_surrogate_terms(ratio.log(), torch.zeros(1000), adv, eps), g_form)


def test_surrogate_ignores_padding():
    logp, old, adv = torch.tensor([[0.1, 5.0]]), torch.zeros(1, 2), torch.tensor([[1.0, 100.0]])
    loss = L.aggregate_loss(L.clipped_surrogate_terms(logp, old, adv), torch.tensor([[1, 0]]), "bnpo")
    assert loss.item() == pytest.approx(-math.exp(0.1))


def test_value_loss_is_clipped_around_the_old_values():
    values, old, ret = torch.tensor([[1.0, 0.6]]), torch.tensor([[0.5, 0.5]]), torch.tensor([[2.0, 0.0]])
    # token 0: clip(1.0, 0.5 ± 0.2) = 0.7: max((1 − 2)², (0.7 − 2)²) = 1.69
    # token 1: inside the clip range: max(0.36, 0.36) = 0.36;   ½·mean = ½·(1.69 + 0.36)/2
    loss = L.clipped_value_loss(values, old, ret, torch.ones(1, 2), clip=0.2)
    assert loss.item() == pytest.approx(0.5 * (1.69 + 0.36) / 2)


def test_whitening_ignores_padding():
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    w = L.whiten(x, mask)
    assert w[0, 3] == 0
    assert torch.allclose(w[0, :3], torch.tensor([-1.0, 0.0, 1.0]) / math.sqrt(2 / 3), atol=1e-4)
    x[0, 3] = -5000.0  # whatever sits on the padding
    assert torch.allclose(L.whiten(x, mask), w)


def test_entropy_of_uniform_logits_is_log_vocab():
    assert L.entropy(torch.zeros(2, 3, 8), torch.ones(2, 3)).item() == pytest.approx(math.log(8))


def test_grpo_advantages_hand_computed_per_group_batch_and_none():
    rewards = torch.tensor([1.0, 2.0, 3.0, 6.0, 0.0, 0.0, 0.0, 0.0])  # two prompts, k = 4
    # group 1: mean 3, centred (−2, −1, 0, 3), sample variance (4 + 1 + 0 + 9)/3 = 14/3; group 2: all equal -> 0
    std1 = math.sqrt(14 / 3)
    expected = [-2 / (std1 + 1e-4), -1 / (std1 + 1e-4), 0.0, 3 / (std1 + 1e-4), 0.0, 0.0, 0.0, 0.0]
    assert L.grpo_advantages(rewards, 4).tolist() == pytest.approx(expected, abs=1e-6)
    # Dr. GRPO: no division by the std
    assert L.grpo_advantages(rewards, 4, scale="none").tolist() == [-2.0, -1.0, 0.0, 3.0, 0.0, 0.0, 0.0, 0.0]
    # batch std: mean 1.5, squared deviations 0.25 + 0.25 + 2.25 + 20.25 + 4·2.25 = 32, variance 32/7
    std_batch = math.sqrt(32 / 7)
    assert L.grpo_advantages(rewards, 4, scale="batch").tolist() == pytest.approx(
        [c / (std_batch + 1e-4) for c in (-2, -1, 0, 3, 0, 0, 0, 0)], abs=1e-6)


def test_loss_aggregations_hand_computed():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert L.aggregate_loss(per_token, mask, "bnpo").item() == pytest.approx((1 + 2 + 3 + 4) / 4)  # 2.5
    assert L.aggregate_loss(per_token, mask, "grpo").item() == pytest.approx((6 / 3 + 4 / 1) / 2)  # 3.0
    assert L.aggregate_loss(per_token, mask, "dr_grpo", max_length=4).item() == pytest.approx(10 / (2 * 4))
