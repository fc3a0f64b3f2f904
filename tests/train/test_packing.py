"""--packing and --max-tokens-per-batch in the trainers: packed = padded and micro-batched = whole (losses, logged
stats and gradients to 1e-5) for PPO's update with every estimator and loss type, and for SFT, RM and DPO steps,
on tiny GPT-2, Llama and Qwen2 models; 2 processes on gloo, packed and micro-batched, against 1 padded process."""

import copy
import json
import math

import pytest
import torch

from rlhfkit.generation import Samples
from rlhfkit.models import packing as pk
from rlhfkit.models.lora import AdaptersOff, add_lora, has_lora
from rlhfkit.models.policy import response_logprobs, response_values, scored_responses
from rlhfkit.models.scalar import score_sequences
from rlhfkit.rewards import accuracy
from rlhfkit.train import dpo, reward, sft
from rlhfkit.train.configs import PPOConfig
from rlhfkit.train.distributed import Parallel
from rlhfkit.train.micro import accumulate, micro_parts
from rlhfkit.train.ppo import advantages, ppo_update
from rlhfkit.train.rollout import Rollout
from rlhfkit.train.sft import collate, sft_loss
from tests.conftest import run_cli
from tests.models.test_packing import VOCAB, _batch, _grads, _models, _same
from tests.train.test_distributed import TOLERANCE, _column, _metrics
from tests.train.test_ppo import _reward_dir
from tests.train.test_reward import _rankings

ESTIMATORS_AND_LOSSES = [(a, t) for a in ("gae", "rloo", "grpo") for t in ("bnpo", "grpo", "dr_grpo", "dapo", "cispo")]


def _rollout(policy, value, advantage: str, seed: int = 0) -> Rollout:
    """A rollout of 8 responses of uneven lengths (prompts of 1–5 tokens, responses of 1–7), measured padded."""
    ids, mask, width = _batch(rows=8, seed=seed)
    samples = Samples(ids[:, :width], mask[:, :width], ids[:, width:], mask[:, width:],
                      torch.ones(8, dtype=torch.bool), [""] * 8, [""] * 8)
    response = samples.response_mask
    with torch.no_grad():
        logp, _ = scored_responses(policy, ids, mask, width)
        values = response_values(value, ids, mask, width) if advantage == "gae" else torch.zeros_like(logp)
    g = torch.Generator().manual_seed(seed + 1)
    ref = logp + 0.3 * torch.randn(logp.shape, generator=g)
    score = torch.randn(8, generator=g)
    return Rollout(samples, logp * response, ref * response, values * response, score, score, 0.0)


def _named(policy, value) -> dict:
    return {f"policy.{n}": p for n, p in policy.named_parameters()} | (
        {f"value.{n}": p for n, p in value.named_parameters()} if value is not None else {})


def _update(policy, value, rollout, cfg):
    """(the logged stats, the gradients summed over the update's steps) of `ppo_update` on copies of the models."""
    policy, value = copy.deepcopy(policy), copy.deepcopy(value) if cfg.advantage == "gae" else None
    params = list(policy.parameters()) + (list(value.parameters()) if value is not None else [])
    optimizer = torch.optim.SGD(params, lr=0.05)  # the weights move by −0.05 × the gradients
    before = {name: p.detach().clone() for name, p in _named(policy, value).items()}
    _, adv, returns = advantages(rollout, cfg.kl_coef, cfg)
    stats = ppo_update(policy, value, optimizer, rollout, adv, returns, cfg, cfg.kl_coef,
                       torch.Generator().manual_seed(0))
    return stats, {name: (p.detach() - before[name]) / -0.05 for name, p in _named(policy, value).items()}


def _grid():
    """Every estimator × loss type on GPT-2, Llama and Qwen2: all of GPT-2's and alternate halves of Llama's and
    Qwen2's in `make test`, the other halves in `make test-all` (slow)."""
    for arch, default in (("gpt2", ESTIMATORS_AND_LOSSES), ("llama", ESTIMATORS_AND_LOSSES[::2]),
                          ("qwen2", ESTIMATORS_AND_LOSSES[1::2])):
        for advantage, loss_type in ESTIMATORS_AND_LOSSES:
            marks = () if (advantage, loss_type) in default else (pytest.mark.slow,)
            yield pytest.param(arch, advantage, loss_type, marks=marks)


@pytest.mark.parametrize("arch, advantage, loss_type", list(_grid()))
def test_ppo_update_packed_and_micro_batched_equals_padded(arch, advantage, loss_type):
    """Two epochs of two minibatches (the second sees a moved policy: ratios ≠ 1, clipping), with KL in the loss
    for GRPO: the logged stats and the gradients (summed over the SGD steps: the weights' moves / lr) of the padded
    update equal those packed, micro-batched by 20 real tokens (packed) or 30 padded ones."""
    policy, value = _models(arch)
    rollout = _rollout(policy, value, advantage)
    runs = {}
    for packing, budget in ((False, None), (True, None), (True, 20), (False, 30)):
        cfg = PPOConfig(policy="p", prompts="p", reward="r", advantage=advantage, loss_type=loss_type,
                        num_generations=4, batch_size=8, minibatch_size=4, ppo_epochs=2, kl_coef=0.1, vf_coef=0.5,
                        grad_clip=1e9, packing=packing, max_tokens_per_batch=budget)
        runs[packing, budget] = _update(policy, value, rollout, cfg)
    stats, weights = runs[False, None]
    assert len(stats) == 4 and stats[-1]["ratio_max"] != 1.0
    for key, (other_stats, other_weights) in runs.items():
        assert [s.keys() for s in other_stats] == [s.keys() for s in stats], key
        for a, b in zip(stats, other_stats):
            assert b == pytest.approx(a, rel=1e-5, abs=1e-5), key
        _same(weights, other_weights)


def test_micro_batches_really_split_the_update():
    """The micro-batched run above is not the whole one by accident: with 20 real tokens a minibatch of 4 responses
    (4–12 tokens each) takes several forward passes."""
    _, mask, _ = _batch(rows=8)
    lengths = mask.sum(-1).tolist()
    assert len(micro_parts(Parallel(torch.device("cpu")), lengths[:4], 20, True)) >= 2


def _step(parallel, rows, lengths, budget, packing, make, loss_of, model):
    loss, kept = accumulate(parallel, rows, lengths, budget, packing, make, loss_of)
    return loss.item(), kept, _grads(model)


def _compare(step):
    """`step(packing, budget)` → (loss, gradients): the padded whole step against packed and micro-batched ones."""
    loss, grads = step(False, None)
    for packing, budget in ((True, None), (True, 15), (False, 25)):
        other_loss, other_grads = step(packing, budget)
        assert other_loss == pytest.approx(loss, rel=1e-5, abs=1e-5), (packing, budget)
        _same(grads, other_grads)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_sft_step_packed_and_micro_batched_equals_padded(arch):
    policy, _ = _models(arch)
    g = torch.Generator().manual_seed(3)
    rows = []
    for n in (3, 9, 5, 12, 4, 7):  # (ids, loss mask): a prompt of 2 then the completion
        ids = torch.randint(1, VOCAB, (n,), generator=g).tolist()
        rows.append((ids, [0, 0] + [1] * (n - 2)))
    parallel = Parallel(torch.device("cpu"))

    def step(packing, budget):
        def make(part):
            batch = collate(part, 0, "cpu")
            return batch, batch["loss_mask"][:, 1:].sum()
        loss, _, grads = _step(parallel, rows, [len(r[0]) for r in rows], budget, packing, make,
                               lambda batch: (sft_loss(policy, batch, packing), None), policy)
        return loss, grads
    _compare(step)


def _groups(with_masks: bool, seed: int = 4):
    """Three rankings of 3, 2 and 3 outputs (all pairs, weighted 1/C(K,2)) of uneven lengths."""
    g = torch.Generator().manual_seed(seed)
    groups = []
    for k, lengths in ((3, (4, 9, 6)), (2, (11, 3)), (3, (5, 5, 8))):
        rows = [torch.randint(1, VOCAB, (n,), generator=g).tolist() for n in lengths]
        pairs = [(i, j) for i in range(k) for j in range(i + 1, k)]
        if with_masks:
            rows = [(r, [0, 0] + [1] * (len(r) - 2)) for r in rows]
        groups.append({"rows": rows, "pairs": pairs, "weight": 1 / len(pairs), "tiers": None, "ref_logp": None})
    return groups


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_rm_step_packed_and_micro_batched_equals_padded(arch):
    _, value = _models(arch)
    groups = _groups(with_masks=False)
    parallel = Parallel(torch.device("cpu"))

    def step(packing, budget):
        def make(part):
            batch = accuracy.make_batch(part, 0, "cpu")
            return batch, batch.n_rankings
        loss, margins, grads = _step(parallel, groups, [sum(map(len, g["rows"])) for g in groups], budget, packing,
                                     make, lambda batch: accuracy.batch_loss(value, batch, "pairwise", packing),
                                     value)
        return loss + torch.cat(margins).sum().item(), grads  # the margins too
    _compare(step)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_dpo_step_packed_and_micro_batched_equals_padded(arch):
    policy, _ = _models(arch)
    reference, _ = _models(arch)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.01 * torch.randn_like(p))
    groups = _groups(with_masks=True)
    dpo.attach_reference_logprobs(reference, groups, 0, "cpu", 2)
    parallel = Parallel(torch.device("cpu"))

    _compare(_dpo_step(parallel, groups, policy))
    packed = copy.deepcopy(groups)
    dpo.attach_reference_logprobs(reference, packed, 0, "cpu", 2, packing=True)  # π_ref's log-probs, packed
    for a, b in zip(groups, packed):
        torch.testing.assert_close(b["ref_logp"], a["ref_logp"], rtol=0, atol=1e-5)


def _dpo_step(parallel, groups: list[dict], policy):
    """step(packing, budget) → (the loss plus the margins, the gradients) of one DPO step on `groups` (β = 0.1,
    the pairwise loss), packed or padded, in micro-batches of at most `budget` tokens (`_step`)."""
    def step(packing, budget):
        def make(part):
            batch = dpo.make_batch(part, 0, "cpu")
            return batch, batch.n_rankings
        loss, margins, grads = _step(parallel, groups, [sum(len(r[0]) for r in g["rows"]) for g in groups], budget,
                                     packing, make, lambda batch: dpo.batch_loss(policy, batch, 0.1, "pairwise",
                                                                                 packing), policy)
        return loss + torch.cat(margins).sum().item(), grads
    return step


# ------------------------------------------------------------------------------------------ held-out evaluation

def _counting_packs(monkeypatch) -> list[int]:
    """Every `pk.pack` call (what `pk.pack_for`, so every packed forward pass, goes through) appends its row count."""
    calls, real = [], pk.pack

    def pack(*args, **kwargs):
        calls.append(len(args[0]))
        return real(*args, **kwargs)
    monkeypatch.setattr(pk, "pack", pack)
    return calls


def _packs_inside(monkeypatch, calls: list[int], owner, names) -> dict[str, list[int]]:
    """Wrap each `owner.NAME` (a function of a module, a method of a class) so that every call appends to
    `inside[NAME]` how many `pk.pack` calls (`calls`, from `_counting_packs`) it made."""
    inside: dict[str, list[int]] = {}

    def counted(name, function):
        def counting(*args, **kwargs):
            before = len(calls)
            try:
                return function(*args, **kwargs)
            finally:
                inside.setdefault(name, []).append(len(calls) - before)
        return counting
    for name in names:
        monkeypatch.setattr(owner, name, counted(name, getattr(owner, name)))
    return inside


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_heldout_evaluations_packed_equal_padded(arch, monkeypatch):
    """SFT's held-out loss, the RM's held-out accuracy and loss, DPO's held-out accuracy, margin and loss, and the
    RM's scores of token rows (`score_sequences`: its normalization and gold measurements): packed (every sequence
    of every batch through `pk.pack`) = padded (no packed call), on rows of uneven lengths."""
    policy, value = _models(arch)
    reference, _ = _models(arch)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.01 * torch.randn_like(p))
    g = torch.Generator().manual_seed(3)
    demos = [(torch.randint(1, VOCAB, (n,), generator=g).tolist(), [0, 0] + [1] * (n - 2))
             for n in (3, 9, 5, 12, 4, 7)]
    rankings, dpo_groups = _groups(with_masks=False), _groups(with_masks=True)
    dpo.attach_reference_logprobs(reference, dpo_groups, 0, "cpu", 2)
    assert pk.supports_packing(policy) and pk.supports_packing(value)  # probed before the count starts
    calls = _counting_packs(monkeypatch)
    measured = {}
    for packing in (False, True):
        measured[packing] = [sft.heldout_loss(policy, demos, 0, "cpu", batch_size=4, packing=packing),
                             accuracy.pairwise_accuracy(value, rankings, 0, batch_size=2, packing=packing),
                             dpo.heldout_metrics(policy, dpo_groups, 0, "cpu", 2, 0.1, packing=packing),
                             score_sequences(value, [ids for ids, _ in demos], 0, batch_size=4, packing=packing)]
        if not packing:
            assert calls == []
    # 6 demonstrations in batches of 4 and 2; 8 distinct outputs in 2 + 1 rankings; 8 outputs, 2 + 1 rankings
    assert calls == [4, 2, 5, 3, 5, 3, 4, 2]
    loss, rm, dpo_metrics, scores = measured[False]
    assert measured[True][0] == pytest.approx(loss, rel=1e-5, abs=1e-6)
    assert measured[True][1] == pytest.approx(rm, rel=1e-5, abs=1e-6) and rm["n_pairs"] == 7
    assert measured[True][2] == pytest.approx(dpo_metrics, rel=1e-5, abs=1e-6) and dpo_metrics["n_pairs"] == 7
    assert measured[True][3] == pytest.approx(scores, rel=1e-5, abs=1e-6) and len(set(scores)) == 6


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_dpo_policy_equal_to_its_packed_reference_has_margin_exactly_zero(arch):
    """π_ref's log-probs are taken packed (the default); held out, π_θ = π_ref must see the same packed batches:
    every margin exactly 0, accuracy ½, loss ln 2. Before the fix π_θ ran padded there and the margins were the
    rounding noise between packed and padded (held-out accuracy 0.64 with GPT-2, 0.43 with Llama)."""
    policy, _ = _models(arch)
    policy.eval()
    groups = _groups(with_masks=True)
    dpo.attach_reference_logprobs(policy, groups, 0, "cpu", 2, packing=True)
    measured = dpo.heldout_metrics(policy, groups, 0, "cpu", 2, 0.1, packing=True)
    assert measured["heldout_margin"] == 0.0 and measured["heldout_accuracy"] == 0.5
    assert measured["heldout_loss"] == pytest.approx(math.log(2), abs=1e-6)


def _uneven_rankings(path, n=16):
    """Rankings of 3 outputs of 1 to 12 words, two labelers per item."""
    words = "the cat a dog one cow the pig runs fast and slow".split()
    lines = [{"id": f"q{i // 2}", "prompt": f"say {i % 5} words .", "labeler": f"l{i % 2}",
              "completions": [" ".join(words[:1 + (i * 5 + 4 * k) % 12]) for k in range(3)],
              "ranking": [[0], [1], [2]]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


@pytest.mark.parametrize("kind", ["sft", "rm", "dpo"])
def test_trainers_evaluate_held_out_data_packed(kind, tiny_gpt2, tmp_path, capsys, monkeypatch, request):
    """`rlhf sft|rm|dpo` with --packing (the default) run their held-out evaluation packed — SFT's held-out loss;
    the RM's normalization, held-out accuracy and gold measurements; DPO's held-out metrics —: `pk.pack` is called
    inside each (before the fix they ran padded, whatever --packing said), and with --no-packing it is not; the
    held-out figures agree. DPO with a learning rate too small to move a weight: π_θ stays π_ref, so the held-out
    margin is exactly 0 and the accuracy ½ (this tiny GPT-2 gives them on the old code too: the test above shows
    the noise)."""
    module, names, keys = {
        "sft": (sft, ["heldout_loss"], ["eval_loss"]),
        "rm": (reward, ["normalization_offset", "pairwise_accuracy", "gold_measurements"],
               ["bias_shift", "heldout_accuracy", "heldout_loss", "spearman_gold"]),
        "dpo": (dpo, ["heldout_metrics"], ["heldout_accuracy", "heldout_margin", "heldout_loss"])}[kind]
    calls = _counting_packs(monkeypatch)
    inside = _packs_inside(monkeypatch, calls, module, names)
    if kind == "sft":
        args = ["sft", "--model", tiny_gpt2, "--data", _uneven_demos(tmp_path / "d.jsonl", n=16)]
    elif kind == "rm":  # rankings of the toy world's prompts: gold measurements too
        args = ["rm", "--model", tiny_gpt2, "--data", _rankings(tmp_path / "r.jsonl", n=16),
                "--world", request.getfixturevalue("micro_world")]
    else:
        args = ["dpo", "--lr", "1e-30", "--policy", tiny_gpt2, "--data", _uneven_rankings(tmp_path / "r.jsonl")]
    figures = {}
    for packing in ("--no-packing", "--packing"):
        inside.clear()
        code, _, err = run_cli([*args, "--eval-fraction", "0.3", "--batch-size", "4", "--threads", "1", packing,
                                "--out", tmp_path / packing], capsys)
        assert code == 0, err
        assert sorted(inside) == sorted(names), inside
        for name, counts in inside.items():
            assert all(n > 0 for n in counts) if packing == "--packing" else not any(counts), (packing, name)
        figures[packing] = [r for r in _metrics(tmp_path / packing) if keys[0] in r][-1]
    for key in keys:
        assert figures["--packing"][key] == pytest.approx(figures["--no-packing"][key], rel=1e-4, abs=1e-5), key
    if kind == "dpo":
        assert figures["--packing"]["heldout_margin"] == 0.0 and figures["--packing"]["heldout_accuracy"] == 0.5


# -------------------------------------------------------------------------------------------------- LoRA

def _lora_models(arch: str):
    """`_models` with LoRA adapters (r = 4, rlhfkit's default targets: `add_lora`) on the policy and on the value
    model's transformer, B drawn at random so that the adapters change every output."""
    policy, value = _models(arch)
    lora = type("Cfg", (), {"lora_r": 4, "lora_alpha": None, "lora_targets": []})()
    policy, value.backbone = add_lora(policy, lora), add_lora(value.backbone, lora)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in [*policy.named_parameters(), *value.named_parameters()]:
            if "lora_B" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    assert has_lora(policy) and has_lora(value.backbone)
    return policy, value


def _compare_packed(step, calls: list[int]):
    """`_compare`, and the packed steps really packed: `pk.pack` called in each of them, in no padded one."""
    def counted(packing, budget):
        before = len(calls)
        out = step(packing, budget)
        assert (len(calls) > before) == packing, (packing, budget)
        return out
    _compare(counted)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_lora_steps_packed_and_micro_batched_equal_padded(arch, monkeypatch):
    """A LoRA policy (peft's wrapper around the causal LM) and an RM whose transformer is one: packing reads the
    sequences through the adapter wrapper (`supports_packing` says yes, `pk.pack` runs), and the SFT, RM and DPO
    steps' losses and gradients — of the adapters (and the RM's head) only — equal the padded ones to 1e-5; so do
    DPO's π_ref log-probs, the policy with its adapters off (`AdaptersOff`)."""
    policy, value = _lora_models(arch)
    reference = AdaptersOff(policy)
    assert pk.supports_packing(policy) and pk.supports_packing(value) and pk.supports_packing(reference)
    calls = _counting_packs(monkeypatch)
    parallel = Parallel(torch.device("cpu"))
    g = torch.Generator().manual_seed(3)
    demos = [(torch.randint(1, VOCAB, (n,), generator=g).tolist(), [0, 0] + [1] * (n - 2))
             for n in (3, 9, 5, 12, 4, 7)]

    def sft_step(packing, budget):
        def make(part):
            batch = collate(part, 0, "cpu")
            return batch, batch["loss_mask"][:, 1:].sum()
        loss, _, grads = _step(parallel, demos, [len(r[0]) for r in demos], budget, packing, make,
                               lambda batch: (sft_loss(policy, batch, packing), None), policy)
        assert all("lora_" in name for name in grads)
        return loss, grads
    _compare_packed(sft_step, calls)

    rankings = _groups(with_masks=False)

    def rm_step(packing, budget):
        def make(part):
            batch = accuracy.make_batch(part, 0, "cpu")
            return batch, batch.n_rankings
        loss, margins, grads = _step(parallel, rankings, [sum(map(len, g["rows"])) for g in rankings], budget,
                                     packing, make, lambda batch: accuracy.batch_loss(value, batch, "pairwise",
                                                                                      packing), value)
        assert all("lora_" in name or name.startswith("head.") for name in grads)
        return loss + torch.cat(margins).sum().item(), grads
    _compare_packed(rm_step, calls)

    groups = _groups(with_masks=True)
    packed = copy.deepcopy(groups)
    dpo.attach_reference_logprobs(reference, groups, 0, "cpu", 2)
    dpo.attach_reference_logprobs(reference, packed, 0, "cpu", 2, packing=True)
    for a, b in zip(groups, packed):
        torch.testing.assert_close(b["ref_logp"], a["ref_logp"], rtol=0, atol=1e-5)

    _compare_packed(_dpo_step(parallel, groups, policy), calls)


@pytest.mark.parametrize("arch", ["gpt2", "llama", "qwen2"])
def test_lora_ppo_packed_equals_padded(arch, monkeypatch):
    """PPO with LoRA: the policy's log-probs (with their gradients), π_ref's (the policy with its adapters off, as a
    LoRA run has it) and the LoRA value model's values, packed = padded on rows of uneven lengths, `pk.pack`
    called; then a whole GAE update (two epochs of two minibatches): the same stats and adapter gradients."""
    policy, value = _lora_models(arch)
    reference = AdaptersOff(policy)
    ids, mask, width = _batch()
    response = mask[:, width:]
    calls = _counting_packs(monkeypatch)
    results = {}
    for packing in (False, True):
        before = len(calls)
        logp, _ = response_logprobs(policy, ids, mask, width, 1.3, packing)
        (-(logp * response).sum() / response.sum()).backward()
        v = response_values(value, ids, mask, width, packing)
        ((v * response).sum() / response.sum()).backward()
        with torch.no_grad():
            ref, _ = scored_responses(reference, ids, mask, width, 1.3, packing)
        assert (len(calls) - before == 3) == packing
        results[packing] = (logp * response, v * response, ref * response, _grads(policy), _grads(value))
    padded, packed = results[False], results[True]
    for a, b in zip(padded[:3], packed[:3]):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
    assert (padded[2] - padded[0]).abs().max() > 1e-3  # the adapters are on in the policy, off in π_ref
    _same(padded[3], packed[3])
    _same(padded[4], packed[4])

    rollout = _rollout(policy, value, "gae")
    runs = {}
    for packing in (False, True):
        cfg = PPOConfig(policy="p", prompts="p", reward="r", advantage="gae", batch_size=8, minibatch_size=4,
                        ppo_epochs=2, vf_coef=0.5, grad_clip=1e9, packing=packing)
        before = len(calls)
        runs[packing] = _update(policy, value, rollout, cfg)
        assert (len(calls) > before) == packing
    (stats, weights), (packed_stats, packed_weights) = runs[False], runs[True]
    assert stats[-1]["ratio_max"] != 1.0
    for a, b in zip(stats, packed_stats):
        assert b == pytest.approx(a, rel=1e-5, abs=1e-5)
    _same(weights, packed_weights)


# ------------------------------------------------------------------------------------- 2 processes on gloo

def _uneven_demos(path, n=48):
    """Demonstrations of very uneven lengths (1 to 24 words)."""
    words = "the cat a dog one cow the pig runs fast and slow".split()
    lines = [{"prompt": f"say {i % 5} words .", "completion": " ".join(words[j % len(words)]
                                                                     for j in range(1 + (i * 7) % 24))}
             for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


@pytest.mark.parametrize("kind", [pytest.param(k, marks=pytest.mark.slow) for k in ("sft", "rm", "dpo", "ppo-grpo")]
                         + ["ppo-gae"])  # 10-25 s each here, 1.5-3 min under load: by default PPO with GAE and ptx
def test_two_processes_packed_and_micro_batched_take_the_steps_of_one_padded(kind, micro_world, tmp_path, capsys):
    """1 process padded, whole batches; 2 processes packed with --max-tokens-per-batch: the same losses (and stats)
    step by step, the same saved weights."""
    if kind == "sft":
        args = ["sft", "--model", micro_world / "base", "--data", _uneven_demos(tmp_path / "d.jsonl"),
                "--epochs", "1", "--batch-size", "10", "--log-every", "1"]
        keys, budget = ("train_loss", "eval_loss"), "40"
    elif kind in ("rm", "dpo"):
        args = ["rm", "--model"] if kind == "rm" else ["dpo", "--policy"]
        args += [micro_world / "base", "--data", _rankings(tmp_path / "r.jsonl", n=40), "--batch-size", "5",
                 "--log-every", "1", "--lr", "1e-3"]  # 5 rankings: uneven shares of 3 and 2
        keys, budget = ("train_loss", "train_accuracy", "heldout_accuracy", "heldout_loss"), "30"
    else:
        rm = _reward_dir(tmp_path, micro_world / "base")
        args = ["ppo", "--policy", micro_world / "base", "--reward", rm, "--prompts",
                micro_world / "prompts/train.jsonl", "--ppo-steps", "2", "--batch-size", "8", "--minibatch-size", "4",
                "--ppo-epochs", "2", "--max-new-tokens", "12", "--lr", "1e-3"]
        args += (["--advantage", "grpo", "--num-generations", "2"] if kind == "ppo-grpo"
                 else ["--vf-coef", "0.5", "--ptx-data", micro_world / "demos.jsonl", "--ptx-coef", "0.5",
                       "--ptx-batch-size", "3"])
        keys = ("policy_loss", "clipfrac", "approx_kl", "entropy", "ratio_min", "ratio_max", "kl", "reward",
                *(("value_loss", "ptx_loss") if kind == "ppo-gae" else ()))
        budget = "30"
    args += ["--threads", "1"]
    code, _, err = run_cli([*args, "--out", tmp_path / "p1", "--no-packing"], capsys)
    assert code == 0, err
    code, _, err = run_cli([*args, "--out", tmp_path / "p2", "--num-processes", 2, "--packing",
                            "--max-tokens-per-batch", budget], capsys)
    assert code == 0, err
    one, two = _metrics(tmp_path / "p1"), _metrics(tmp_path / "p2")
    assert len(one) == len(two) >= 2
    for key in keys:
        assert _column(two, key) and _column(two, key) == pytest.approx(_column(one, key), **TOLERANCE), key



@pytest.mark.parametrize("command", ["sft", "ppo"])
def test_a_token_budget_below_one_is_a_one_line_error(command, tiny_gpt2, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": "list three animals .", "completion": "cat dog cow"}) + "\n")
    args = (["sft", "--model", tiny_gpt2, "--data", data] if command == "sft" else
            ["ppo", "--policy", tiny_gpt2, "--reward-fn", "length", "--prompts", data, "--advantage", "grpo"])
    code, _, err = run_cli([*args, "--out", tmp_path / "run", "--max-tokens-per-batch", "0", "--no-packing"], capsys)
    assert code == 2 and err.strip().splitlines()[-1] == (f"rlhf {command}: error: config key 'max_tokens_per_batch' "
                                                          "must be at least 1")
    assert not (tmp_path / "run").exists()
