"""The equations of RLHF as pure tensor functions.

Every function takes tensors and masks and returns a tensor; nothing here logs, saves or knows about
models (its one rlhfkit import, `last_token_index`, is a mask helper of `data/collate.py`).
Shapes: B = batch, T = tokens. Masks are 1 on the tokens that count and 0 on padding.
Sources: Ouyang et al. 2022 (InstructGPT), Stiennon et al. 2020 (summarize from feedback),
Schulman et al. 2017 (PPO), Ziegler et al. 2019 (KL control), Rafailov et al. 2023 (DPO),
Ahmadian et al. 2024 (RLOO), Shao et al. 2024 (GRPO), Liu et al. 2025 (Dr. GRPO), Yu et al. 2025 (DAPO),
Zheng et al. 2025 (GSPO), MiniMax 2025 (MiniMax-M1: CISPO), Yao et al. 2025 (TIS), Liu, Li et al. 2025 (MIS).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from rlhfkit.data.collate import last_token_index


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    return (x * mask).sum() if dim is None else (x * mask).sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim=None) -> torch.Tensor:
    """Σ m·x / Σ m over `dim` (all elements when None); padding contributes nothing."""
    mask = mask.to(x.dtype)
    return masked_sum(x, mask, dim) / mask.sum(dim).clamp(min=1.0)


def token_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log π(x_t | x_<t) of each target under softmax(logits / T); logits[:, t] predicts targets[:, t]."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    return -F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")


def lm_loss(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy on the masked targets: −(1/N) Σ_t m_t log π(x_t | x_<t).

    SFT passes a mask that is 1 only on completion tokens (and EOS); pretraining passes the attention mask.
    """
    logp = token_logprobs(logits[:, :-1], input_ids[:, 1:])
    return -masked_mean(logp, loss_mask[:, 1:])


# ------------------------------------------------------------------------------------------ PPO (step 3)

def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k1 = log π(y_t) − log π_SFT(y_t): the per-token log ratio; its sum is the KL penalty's estimate."""
    return logp - ref_logp


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """k3 = (ρ − 1) − log ρ with ρ = π_SFT/π: unbiased for KL(π‖π_SFT) and never negative (Schulman 2020).

    With `mask`, log ρ is 0 on padding before the exponential, so k3 is 0 there whatever the log-probs say: a
    fresh forward pass gives padding log π far below −88 at a low temperature while the stored π_SFT is 0 there,
    and exp(88.7) overflows float32; the masked sum's 0·inf would then be NaN (and its gradient too).
    """
    log_ratio = ref_logp - logp
    if mask is not None:
        log_ratio = torch.where(mask.bool(), log_ratio, torch.zeros_like(log_ratio))
    return torch.expm1(log_ratio) - log_ratio


def kl_k2(logp: torch.Tensor, old_logp: torch.Tensor) -> torch.Tensor:
    """k2 = ½·(log π(y_t) − log π_old(y_t))² on samples y ~ π_old: PPO's logged approx-KL, the estimator TRL logs
    (0.5·mean(logratio²)); low-bias for KL(π_old‖π) when the two are close (Schulman 2020, "Approximating KL
    divergence"). Never negative."""
    return 0.5 * (logp - old_logp) ** 2


def per_token_rewards(score: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
                      kl_coef: float) -> torch.Tensor:
    """R_t = −β·(log π(y_t) − log π_SFT(y_t)) on every response token, plus r(x, y) on the last one.

    Summed over t this is InstructGPT's objective R(x, y) = r(x, y) − β·log[π_RL(y|x) / π_SFT(y|x)].
    """
    rewards = -kl_coef * kl_k1(logp, ref_logp) * mask
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    return rewards.index_put((rows, last_token_index(mask)), score.to(rewards.dtype), accumulate=True)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over valid tokens (Schulman et al. 2016; γ=1, λ=0.95: Stiennon et al.).

        δ_t = R_t + γ·V_{t+1} − V_t        (V after the last real token is 0: the episode has ended)
        A_t = δ_t + γλ·A_{t+1} = Σ_{k≥t} (γλ)^{k−t} δ_k          returns  Ĝ_t = A_t + V_t

    Responses are right-padded, so valid tokens come first; padding gets A = Ĝ = 0. The backward recursion is
    written as one matrix product with the discount matrix Γ[k, t] = (γλ)^{k−t} for k ≥ t.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    next_values = torch.cat([values[:, 1:], torch.zeros_like(values[:, :1])], dim=1)
    deltas = (rewards + gamma * next_values - values) * mask
    steps = torch.arange(values.shape[1], device=values.device)
    exponent = (steps[:, None] - steps[None, :]).to(values.dtype)            # k − t
    discount = torch.where(exponent >= 0, (gamma * lam) ** exponent.clamp(min=0), torch.zeros_like(exponent))
    advantages = (deltas @ discount) * mask
    return advantages, (advantages + values) * mask


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x − mean) / std over the valid tokens of the batch only; padding stays 0."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def clipped_surrogate_terms(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                            eps: float = 0.2) -> torch.Tensor:
    """PPO-Clip's per-token terms −min(ρ_t A_t, clip(ρ_t, 1−ε, 1+ε) A_t), ρ_t = π_θ(y_t)/π_θk(y_t) (Schulman et al.
    2017, eq. 7), before any mean: the loss is `aggregate_loss` of them (PPO: the token mean over the minibatch)."""
    ratio = torch.exp(logp - old_logp)
    return -torch.min(ratio * advantages, ratio.clamp(1 - eps, 1 + eps) * advantages)


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                       clip: float = 0.2) -> torch.Tensor:
    """½·E_t[max((V_t − Ĝ_t)², (clip(V_t, V_old ± c) − Ĝ_t)²)]: the value fit of PPO with a trust region."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)
    return 0.5 * masked_mean(torch.max((values - returns) ** 2, (clipped - returns) ** 2), mask)


def clip_fraction(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor, eps: float = 0.2) -> torch.Tensor:
    """Share of valid tokens whose ratio left [1−ε, 1+ε]."""
    ratio = torch.exp(logp - old_logp)
    return masked_mean(((ratio - 1).abs() > eps).to(logp.dtype), mask)


def token_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy −Σ_v π(v) log π(v) of softmax(logits / T) at each position."""
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def entropy(logits: torch.Tensor, mask: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean entropy of softmax(logits / T) over valid positions."""
    return masked_mean(token_entropy(logits, temperature), mask)


def rloo_baseline(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """REINFORCE leave-one-out baseline (Kool et al. 2019; Ahmadian et al. 2024, RLOO):

        b_i = 1/(k−1) · Σ_{j≠i} R(x, y_j)          A_i = R(x, y_i) − b_i

    for the k samples y_1 … y_k of one prompt x: each sample is judged against the mean reward of the *other*
    k−1, so the baseline never contains the sample's own reward and the estimate stays unbiased, with no value
    model. `rewards` [B] holds B/k prompts' k samples side by side (rows g·k … g·k+k−1 share a prompt).
    """
    grouped = rewards.reshape(-1, k)
    return ((grouped.sum(-1, keepdim=True) - grouped) / (k - 1)).reshape(rewards.shape)


# GRPO's std of a group is the sample standard deviation (Bessel's correction), plus this ε (TRL's GRPOTrainer).
GRPO_STD_EPS = 1e-4


def grpo_advantages(rewards: torch.Tensor, k: int, scale: str = "group", eps: float = GRPO_STD_EPS) -> torch.Tensor:
    """GRPO's group-relative advantage (Shao et al. 2024, DeepSeekMath §4.1.2, outcome supervision):

        Â_i = (r_i − mean(r_1 … r_k)) / (std(r_1 … r_k) + ε)        on every token of response i

    for the k samples of one prompt (rows g·k … g·k+k−1, as `rloo_baseline`). `scale`: "group" divides by the
    group's std (the paper), "batch" by the whole batch's std (Hu et al. 2025, REINFORCE++ / PPO Lite), "none" not
    at all (Dr. GRPO, Liu et al. 2025 §3: the std favours questions that are too easy or too hard). [B] -> [B].
    """
    grouped = rewards.reshape(-1, k)
    centred = (grouped - grouped.mean(-1, keepdim=True)).reshape(rewards.shape)
    if scale == "none":
        return centred
    std = grouped.std(-1, keepdim=True).expand_as(grouped).reshape(rewards.shape) if scale == "group" else rewards.std()
    return centred / (std + eps)


def aggregate_loss(per_token: torch.Tensor, mask: torch.Tensor, loss_type: str = "bnpo",
                   max_length: int | None = None) -> torch.Tensor:
    """A per-token loss [B, T] to one number, as the estimators' papers average it (TRL's `loss_type` names):

        "bnpo"     Σ_{i,t} m·ℓ / Σ_{i,t} m            the token mean over the minibatch (our PPO and RLOO)
        "grpo"     1/B Σ_i (Σ_t m·ℓ / Σ_t m)           each response's token mean, then the mean over responses
                                                        (Shao et al. 2024, eq. 3: the 1/|o_i| inside the sum)
        "dr_grpo"  Σ_{i,t} m·ℓ / (B · L_max)           a constant normalizer: no length bias (Liu et al. 2025, §3)
        "dapo"     Σ_{i,t} m·ℓ / Σ_{i,t} m over the global batch (Yu et al. 2025, §3.3; CISPO's too): bnpo's token
                   mean, as the trainer weighs each process's share by its tokens (see "loss variants" below)
    """
    if loss_type == "grpo":
        return masked_mean(per_token, mask, dim=-1).mean()
    if loss_type == "dr_grpo":
        return masked_sum(per_token, mask.to(per_token.dtype)) / (per_token.shape[0] * max_length)
    return masked_mean(per_token, mask)


# ------------------------------------------------------------------------------------- reward model (step 2)

def preference_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, weight: torch.Tensor,
                    n_rankings: int) -> torch.Tensor:
    """InstructGPT eq. 1: loss(θ) = −1/C(K,2) · E_{(x, y_w, y_l)}[log σ(r_θ(x, y_w) − r_θ(x, y_l))].

    `weight` is 1/C(K,2) for each pair of a ranking of K outputs, so that each ranking counts once however many
    pairs it gives; the sum runs over the pairs of `n_rankings` rankings and is averaged over rankings. The
    rankings counted are those that give at least one strictly ordered pair (data/pairs.py `ordered_groups`): a
    ranking that is one tie group is in neither the sum nor n_rankings, whether read as rankings or as pairs
    (ties inside a ranking with other groups only drop its tied pairs: its C(K,2) stays the normalizer).
    (The lecture's slide, docs/design.md §0, writes loss = log σ(r_j − r_k) without the minus sign: that would be
    maximized.)
    """
    return (weight * -F.logsigmoid(r_chosen - r_rejected)).sum() / max(1, n_rankings)


# ------------------------------------------------------------------------------------------ DPO (step 2+3)

def dpo_margin(logp_chosen: torch.Tensor, logp_rejected: torch.Tensor, ref_chosen: torch.Tensor,
               ref_rejected: torch.Tensor, beta: float = 0.1) -> torch.Tensor:
    """DPO's implicit reward margin r̂(x, y_w) − r̂(x, y_l), with r̂(x, y) = β·log(π_θ(y|x) / π_ref(y|x)).

    Rafailov et al. 2023, eq. 5 without its β·log Z(x) term, which both outputs of a prompt share.
    Arguments are sequence log-probs log π(y|x) = Σ_t log π(y_t | x, y_<t), one per pair.
    """
    return beta * ((logp_chosen - ref_chosen) - (logp_rejected - ref_rejected))


def dpo_loss(logp_chosen: torch.Tensor, logp_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, weight: torch.Tensor, n_rankings: int, beta: float = 0.1) -> torch.Tensor:
    """DPO (Rafailov et al. 2023, eq. 7):

        L = −E_{(x, y_w, y_l)} [ log σ( β·[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))] ) ]

    i.e. InstructGPT's reward-model loss (`preference_loss`) on the implicit reward r̂ = β·log(π/π_ref). Pairs are
    weighted 1/C(K,2) per ranking of K outputs and averaged over `n_rankings`, as for the reward model.
    """
    margin = dpo_margin(logp_chosen, logp_rejected, ref_chosen, ref_rejected, beta)
    return (weight * -F.logsigmoid(margin)).sum() / max(1, n_rankings)


# ------------------------------------------------------------------- K-wise rankings: Plackett–Luce (step 2)

def plackett_luce_loss(rewards: torch.Tensor, tiers: torch.Tensor, n_rankings: int) -> torch.Tensor:
    """Plackett–Luce negative log-likelihood of rankings in tiers (Luce 1959; Plackett 1975; for RLHF's K-wise
    comparisons, Zhu, Jordan & Jiao 2023, "Principled RLHF from pairwise or K-wise comparisons", §4).

    A ranking y_τ1 ≻ … ≻ y_τK is K−1 successive choices, each from the outputs not yet chosen:

        P(τ | x) = Π_{k=1}^{K−1} exp(r(x, y_τk)) / Σ_{j=k}^{K} exp(r(x, y_τj))

    Ties (tiers T_1 ≻ T_2 ≻ … ≻ T_m, best first): each member of a tier is chosen against every output not above
    its tier, its tie-mates included — the tier is an unordered set (Breslow 1974's rule for tied event times):

        L = −Σ_{t=1}^{m−1} Σ_{i ∈ T_t} [ r_i − log Σ_{j ∈ T_t ∪ T_{t+1} ∪ … ∪ T_m} exp(r_j) ]

    The last tier is what is left: nothing is chosen from it, so it has no term (a ranking that is one tie group
    gives L = 0 and no gradient, as it gives no pair to the pairwise loss; the trainers leave such rankings out
    of n_rankings too, `preference_loss`'s rule). With K = 2 and no tie,
    L = −log σ(r_w − r_l): InstructGPT's pairwise loss (`preference_loss`).

    `rewards`, `tiers`: [R, K], R rankings of up to K outputs; `tiers` is 0 for the best tier, −1 on the padding of
    a ranking shorter than K. A ranking's L is its whole log-likelihood (a sum over its K−1 choices, not divided by
    them), summed over rankings and divided by `n_rankings` — where `preference_loss` gives a ranking the mean of
    its C(K,2) pair terms (weight 1/C(K,2)). For K = 2 the two agree.
    """
    valid = tiers >= 0
    last = tiers.amax(-1, keepdim=True)                                       # each ranking's last tier
    in_pool = (tiers[:, None, :] >= tiers[:, :, None]) & valid[:, None, :]   # [R, i, j]: j not above i's tier
    log_pool = torch.logsumexp(rewards[:, None, :].masked_fill(~in_pool, float("-inf")), dim=-1)
    chosen = valid & (tiers < last)
    return -torch.where(chosen, rewards - log_pool, torch.zeros_like(rewards)).sum() / max(1, n_rankings)


def dpo_plackett_luce_loss(logp: torch.Tensor, ref_logp: torch.Tensor, tiers: torch.Tensor, n_rankings: int,
                           beta: float = 0.1) -> torch.Tensor:
    """DPO's listwise form (Rafailov et al. 2023, App. A.3): the Plackett–Luce loss on the implicit reward

        L = −E_{τ, y_1…y_K, x} [ log Π_{k=1}^{K−1} exp(r̂(x, y_τk)) / Σ_{j=k}^{K} exp(r̂(x, y_τj)) ],
        r̂(x, y) = β·log(π_θ(y|x) / π_ref(y|x))

    (β·log Z(x) is shared by every output of a prompt and cancels); ties and the last tier as `plackett_luce_loss`.
    `logp`, `ref_logp`, `tiers`: [R, K] sequence log-probs of each ranking's outputs and their tiers.
    """
    return plackett_luce_loss(beta * (logp - ref_logp), tiers, n_rankings)


# ------------------------------------------------------------------- loss variants: DAPO, GSPO, CISPO (step 3)
# TRL 1.16's GRPOTrainer names them loss_type="dapo" (its default), importance_sampling_level="sequence" and
# loss_type="cispo"; `rlhf ppo` has them as --loss-type dapo|cispo, --importance-level sequence, --clip-range-high and
# --overlong-cache (train/ppo.py `surrogate_loss`). tests/train/test_loss_variants.py checks them by hand and against
# TRL 1.16 on identical tensors. DAPO's aggregation, Σ_{i,t} ℓ_{i,t} / Σ_i |o_i| over the global batch, is
# `aggregate_loss`'s token mean over the minibatch: every process's share is weighed by its tokens
# (train/distributed.py `Parallel.backward`), so the normalizer is the global minibatch's token count.

def importance_log_ratio(logp: torch.Tensor, old_logp: torch.Tensor, mask: torch.Tensor,
                         level: str = "token") -> torch.Tensor:
    """log of the importance ratio each token's loss is weighted by, [B, T]:

        token     log ρ_t = log π_θ(y_t) − log π_θk(y_t)                                   (PPO)
        sequence  log s_i = 1/|y_i| · Σ_t log ρ_t,   s_i = (π_θ(y_i|x) / π_θk(y_i|x))^{1/|y_i|}  (GSPO)

    GSPO (Zheng et al. 2025, "Group Sequence Policy Optimization", arXiv 2507.18071) clips the length-normalized
    sequence ratio s_i; this is the paper's GSPO-token form, s_{i,t} = sg[s_i] · π_θ(y_t) / sg[π_θ(y_t)] on every token:
    its value is s_i and its gradient s_i·∇log π_θ(y_t), so with one Â_i per response the mean over a response's
    tokens has GSPO's value s_i·Â_i and gradient s_i·Â_i·(1/|y_i|)·Σ_t ∇log π_θ(y_t); per-token advantages (GAE's)
    are allowed too. sg: stop-gradient. TRL's importance_sampling_level="sequence" gives the same values and
    gradients with s_i as one [B, 1] column.
    """
    log_ratio = logp - old_logp
    if level == "token":
        return log_ratio
    sequence = masked_mean(log_ratio, mask, dim=-1).unsqueeze(-1)
    return sequence.detach() + logp - logp.detach()


def clip_higher_terms(log_ratio: torch.Tensor, advantages: torch.Tensor, eps_low: float = 0.2,
                      eps_high: float = 0.2) -> torch.Tensor:
    """PPO-Clip's per-token terms with DAPO's asymmetric clip (Yu et al. 2025, "DAPO", arXiv 2503.14476, §3.1
    Clip-Higher):

        −min(ρ_t Â_t, clip(ρ_t, 1 − ε_low, 1 + ε_high) Â_t)         ρ_t = exp(log_ratio)

    A higher ε_high (DAPO: 0.28, with ε_low = 0.2) lets unlikely tokens with Â > 0 gain more probability per update,
    against entropy collapse. ε_high = ε_low is `clipped_surrogate_terms`; a sequence-level log ratio is GSPO.
    """
    ratio = torch.exp(log_ratio)
    return -torch.min(ratio * advantages, ratio.clamp(1 - eps_low, 1 + eps_high) * advantages)


def cispo_terms(log_ratio: torch.Tensor, logp: torch.Tensor, advantages: torch.Tensor,
                eps_high: float = 0.2) -> torch.Tensor:
    """CISPO's per-token terms (MiniMax 2025, "MiniMax-M1", arXiv 2506.13585): REINFORCE weighted by a clipped,
    stopped importance weight,

        −sg[r̂_t] · Â_t · log π_θ(y_t)        r̂_t = min(ρ_t, 1 + ε_high)

    The weight is clipped, not the update: unlike PPO-Clip every token keeps its gradient r̂_t·Â_t·∇log π_θ(y_t)
    (PPO-Clip zeroes it outside the clip range, and with it the rare "fork" tokens). As MiniMax-M1 and TRL's
    loss_type="cispo", no lower bound; TRL's epsilon_high is the bound itself, 1 + ε_high (ScaleRL, as TRL cites it,
    suggests a bound of 5: ε_high = 4).
    """
    weight = torch.exp(log_ratio).clamp(max=1 + eps_high).detach()
    return -weight * advantages * logp


def soft_overlong_punishment(lengths: torch.Tensor, max_length: int, cache: int) -> torch.Tensor:
    """DAPO's soft overlong punishment (Yu et al. 2025, §3.4, eq. 13), a reward added to r(x, y), [B] -> [B]:

        R_length(y) = 0                                  |y| ≤ L_max − L_cache
                      ((L_max − L_cache) − |y|) / L_cache    L_max − L_cache < |y| ≤ L_max
                      −1                                 L_max < |y|

    so responses are pushed below L_max − L_cache tokens gradually rather than by a cliff at truncation.
    """
    lengths = lengths.to(torch.get_default_dtype())
    graded = ((max_length - cache - lengths) / cache).clamp(max=0.0)
    return torch.where(lengths > max_length, torch.full_like(lengths, -1.0), graded)


# ------------------------------------------------------------- multi-turn trajectories: turn-level GAE (step 3)
# A trajectory is one token sequence: the policy's turns with the environment's replies (tool messages) between them
# (engines/multiturn.py). `model_mask` is 1 on the policy's tokens only: the losses read it, and GAE walks it.

def turn_gae(rewards: torch.Tensor, values: torch.Tensor, model_mask: torch.Tensor, gamma: float = 1.0,
             lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE over the policy's tokens of multi-turn trajectories, the environment's tokens skipped:

        δ_t = R_t + γ·V_{n(t)} − V_t        n(t): the next model token after t — in the same turn, or the first
                                              token of the next turn, after the tool reply (V = 0 after the last)
        A_t = δ_t + γλ·A_{n(t)}             returns  Ĝ_t = A_t + V_t

    so the value read at a turn's first token, which has seen the tool's answer, bootstraps the turn before it, and
    discounting runs across turns as within one. Environment tokens and padding get A = Ĝ = 0, and their values
    and rewards are never read. With one turn (model_mask = the response mask) this is `gae`. The backward loop of
    CleanRL's GAE, one column at a time, carrying V and A of the next model token over environment tokens.
    """
    mask = model_mask.bool()
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])
    next_advantage = torch.zeros_like(values[:, 0])
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = torch.where(mask[:, t], advantage, torch.zeros_like(advantage))
        next_value = torch.where(mask[:, t], values[:, t], next_value)
        next_advantage = torch.where(mask[:, t], advantage, next_advantage)
    return advantages, (advantages + values) * mask


# ---------------------------------------------------------------------- engine importance weights (step 3)
# The rollout engine samples y ~ π_engine, which is not always the trained model's π_θk: vLLM's kernels compute a
# slightly different distribution from the same weights (worse in bf16), and async rollouts sample from a stale copy
# of the policy. PPO's ratio π_θ/π_θk then corrects for the update but not for that gap, so each token's policy term
# is weighted by the behaviour ratio r_t = π_θk(y_t) / π_engine(y_t) of the rollout, truncated (TIS) or masked by
# sequence (MIS), a constant of the update (train/ppo.py `surrogate_loss`; the KL loss term is not weighted, as in
# TRL 1.16's GRPOTrainer). Where the trained model sampled itself there is no engine log-prob and no weight: the loss
# is the unweighted one (`Samples.engine_logp` is None). tests/train/test_engine_is.py checks them by hand.

def engine_log_ratio(old_logp: torch.Tensor, engine_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log r_t = log π_θk(y_t) − log π_engine(y_t) on valid tokens, 0 on padding [B, T]. A token the engine gave no
    log-prob for (NaN) gets 0, a ratio of 1: no correction there (TRL 1.16's rule for tokens vLLM could not score)."""
    log_ratio = torch.nan_to_num(old_logp - engine_logp, nan=0.0)
    return torch.where(mask.bool(), log_ratio, torch.zeros_like(log_ratio))


def tis_weights(old_logp: torch.Tensor, engine_logp: torch.Tensor, mask: torch.Tensor, cap: float) -> torch.Tensor:
    """Truncated importance sampling (TIS; Yao et al. 2025, "Your efficient RL framework secretly brings you
    off-policy RL training"), one weight per token [B, T]:

        w_t = min(r_t, C),        r_t = π_θk(y_t) / π_engine(y_t)

    Truncating from above only bounds the variance a token the engine under-sampled would bring (TRL 1.16:
    vllm_importance_sampling_mode="token_truncate" with clip_max C and no clip_min; verl's rollout_is="token").
    1 on padding."""
    return torch.exp(engine_log_ratio(old_logp, engine_logp, mask)).clamp(max=cap)


def mis_weights(old_logp: torch.Tensor, engine_logp: torch.Tensor, mask: torch.Tensor, cap: float) -> torch.Tensor:
    """Masked importance sampling by sequence (MIS; Liu, Li et al. 2025, "When Speed Kills Stability: Demystifying
    RL Collapse from the Training-Inference Mismatch"), one weight per response, on each of its tokens [B, T]:

        ρ_i = π_θk(y_i|x) / π_engine(y_i|x) = Π_t r_t = exp(Σ_t log r_t)
        w_i = ρ_i   if 1/C ≤ ρ_i ≤ C,   else 0 (the response leaves the loss's numerator)

    The sequence ratio is the product of the token ratios — the ratio of the two sequence probabilities, as TRL
    1.16's vllm_importance_sampling_mode="sequence_mask" and verl's rollout_is="sequence" take it, not their
    geometric mean (verl's "geometric" level, a rejection test with bounds ~1.001). The band is verl's [1/C, C]
    (its rollout_rs_threshold_lower defaults to 1/upper); TRL's default has no lower bound (clip_min None), its
    clip_min=1/C gives this band."""
    log_rho = engine_log_ratio(old_logp, engine_logp, mask).sum(-1, keepdim=True)
    inside = log_rho.abs() <= math.log(cap)
    return torch.where(inside, torch.exp(log_rho.clamp(max=math.log(cap))), torch.zeros_like(log_rho)).expand_as(mask)


def tis_capped_fraction(old_logp: torch.Tensor, engine_logp: torch.Tensor, mask: torch.Tensor,
                        cap: float) -> torch.Tensor:
    """Share of valid tokens whose ratio r_t exceeded C (TIS truncated them)."""
    capped = torch.exp(engine_log_ratio(old_logp, engine_logp, mask)) > cap
    return masked_mean(capped.to(old_logp.dtype), mask)


def mis_masked_fraction(old_logp: torch.Tensor, engine_logp: torch.Tensor, mask: torch.Tensor,
                        cap: float) -> torch.Tensor:
    """Share of responses whose ρ_i left [1/C, C] (MIS masked them)."""
    log_rho = engine_log_ratio(old_logp, engine_logp, mask).sum(-1)
    return (log_rho.abs() > math.log(cap)).to(old_logp.dtype).mean()


def engine_mismatch(old_logp: torch.Tensor, engine_logp: torch.Tensor,
                    mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The engine–trainer mismatch: KL(π_engine ‖ π_θk) per token, estimated on the sampled y_t ~ π_engine and
    averaged over valid tokens (Schulman 2020's estimators, as `kl_k1`/`kl_k3`), (k1, k3):

        k1 = mean_t [log π_engine(y_t) − log π_θk(y_t)] = mean_t [−log r_t]
        k3 = mean_t [(r_t − 1) − log r_t]                                    (never negative)

    0 when the engine samples exactly the trained model's distribution."""
    log_ratio = engine_log_ratio(old_logp, engine_logp, mask)
    return masked_mean(-log_ratio, mask), masked_mean(torch.expm1(log_ratio) - log_ratio, mask)
