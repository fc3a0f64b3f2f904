"""Data-parallel training through accelerate (`--num-processes N`, DDP on gloo here) and bf16 autocast.

With the same global batch, N processes follow the one-process run: each scales its share of the loss so
that DDP's gradient average is the one-process gradient (train/distributed.py). On CPU the two agree to
float rounding: measured max |Δ train_loss| ≤ 1e-6 (the 6 decimals metrics.jsonl keeps) over 24–48 steps.
"""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlhfkit.generation import next_token
from rlhfkit.models.scalar import ScalarModel
from rlhfkit.runtime.options import RunOptions
from rlhfkit.train.distributed import DistributedParallel, Parallel
from tests.conftest import run_cli
from tests.train.test_ppo import _reward_dir
from tests.train.test_reward import _rankings

TOLERANCE = dict(rel=1e-4, abs=1e-5)  # asserted; what we measure is ~1e-6 (see the module docstring)


def _metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _column(rows, key):
    return [r[key] for r in rows if key in r]


@pytest.mark.parametrize("kind", ["sft", "rm", "dpo", "sft-fsdp", "rm-fsdp", "dpo-fsdp"])
def test_two_processes_reach_the_losses_of_one_with_the_same_global_batch(kind, micro_world, tmp_path, capsys):
    if kind.startswith("sft"):
        args = ["sft", "--model", micro_world / "base", "--data", micro_world / "demos.jsonl", "--epochs", "1",
                "--batch-size", "16", "--log-every", "1"]
        keys = ("train_loss", "eval_loss")
    elif kind.startswith("rm"):
        args = ["rm", "--model", micro_world / "base", "--data", _rankings(tmp_path / "r.jsonl", n=64),
                "--batch-size", "5", "--log-every", "1", "--lr", "1e-3"]  # 5 rankings: uneven shares of 3 and 2
        keys = ("train_loss", "train_accuracy", "heldout_accuracy", "heldout_loss")  # held out: after gathering
    else:
        args = ["dpo", "--policy", micro_world / "base", "--data", _rankings(tmp_path / "r.jsonl", n=64),
                "--batch-size", "5", "--log-every", "1", "--lr", "1e-3", "--epochs", "2", "--save-every", "10"]
        keys = ("train_loss", "train_accuracy", "train_margin", "heldout_accuracy", "heldout_margin", "heldout_loss")
    args += ["--threads", "1"]
    for n in (1, 2):
        fsdp = ["--fsdp"] if n == 2 and kind.endswith("fsdp") else []  # parameters sharded across the 2 processes
        code, _, err = run_cli([*args, "--out", tmp_path / f"p{n}", "--num-processes", n, *fsdp], capsys)
        assert code == 0, err
    one, two = _metrics(tmp_path / "p1"), _metrics(tmp_path / "p2")
    assert len(one) == len(two) > 10  # process 0 alone writes: one line per step, not N
    for key in keys:
        assert _column(two, key) == pytest.approx(_column(one, key), **TOLERANCE), key
    load = ScalarModel.from_pretrained if kind.startswith("rm") else AutoModelForCausalLM.from_pretrained
    saved = [load(tmp_path / f"p{n}").state_dict() for n in (1, 2)]  # with --fsdp: gathered from the shards
    for name, weight in saved[0].items():  # measured: max |Δ| 5e-4 (Adam's steps on near-zero gradients)
        torch.testing.assert_close(saved[1][name], weight, rtol=0, atol=2e-3, msg=lambda m, name=name: f"{name}: {m}")
    if kind.startswith("dpo"):  # a --save-every snapshot, gathered mid-run with --fsdp
        snapshots = [AutoModelForCausalLM.from_pretrained(tmp_path / f"p{n}" / "checkpoints" / "step-10").state_dict()
                     for n in (1, 2)]
        for name, weight in snapshots[0].items():
            torch.testing.assert_close(snapshots[1][name], weight, rtol=0, atol=2e-3,
                                       msg=lambda m, name=name: f"{name}: {m}")


def test_ppo_runs_with_two_processes_and_process_0_alone_writes(micro_world, tmp_path, capsys):
    out = tmp_path / "ppo"
    rm = _reward_dir(tmp_path, micro_world / "base")
    code, _, err = run_cli(["ppo", "--policy", micro_world / "base", "--reward", rm,
                            "--prompts", micro_world / "prompts/train.jsonl", "--world", micro_world, "--out", out,
                            "--ppo-steps", "2", "--batch-size", "8", "--minibatch-size", "4", "--max-new-tokens", "8",
                            "--num-processes", "2", "--threads", "1"], capsys)
    assert code == 0, err
    rows = _metrics(out)
    assert [r["step"] for r in rows] == [1, 2] and rows[-1]["episodes"] == 16
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at the first rollout, in each process
    assert (out / "model.safetensors").exists() and (out / "value" / "model.safetensors").exists()


@pytest.mark.parametrize("loss_type", ["bnpo", "grpo", "dr_grpo"])
def test_ppo_with_two_processes_takes_the_steps_of_one_process(loss_type, micro_world, tmp_path, capsys):
    """Same seed, same global batch: the two processes sample the one-process run's rows (the global batch's
    sampling noise, train/ppo.py), gather the rollout, split each minibatch and weigh each term of a share's loss
    by what it is a mean over — the policy term by its tokens (bnpo) or responses (grpo, dr_grpo), the value term
    (--vf-coef > 0) by its tokens, PPO-ptx's by its text tokens — so they take the one-process run's steps up to
    float rounding, and log its losses."""
    rm = _reward_dir(tmp_path, micro_world / "base")
    args = ["ppo", "--policy", micro_world / "base", "--reward", rm, "--prompts", micro_world / "prompts/train.jsonl",
            "--world", micro_world, "--ppo-steps", "3", "--batch-size", "4", "--minibatch-size", "2",
            "--ppo-epochs", "2", "--max-new-tokens", "12", "--lr", "1e-3", "--loss-type", loss_type, "--vf-coef", "0.5",
            "--threads", "1"]
    if loss_type == "bnpo":
        args += ["--ptx-data", micro_world / "demos.jsonl", "--ptx-coef", "0.5",
                 "--ptx-batch-size", "3"]  # 3 ptx sequences: uneven shares of 1 and 2
    for n in (1, 2):
        code, _, err = run_cli([*args, "--out", tmp_path / f"p{n}", "--num-processes", n], capsys)
        assert code == 0, err
    one, two = _metrics(tmp_path / "p1"), _metrics(tmp_path / "p2")
    assert [r["step"] for r in two] == [1, 2, 3]
    assert len({r["response_length"] for r in one}) > 1 and any(0 < r["eos_rate"] < 1 for r in one)  # uneven ends
    for key in ("rm_score", "score", "kl", "kl_k3", "reward", "gold", "response_length", "eos_rate", "value_mean",
                "rollout_entropy", "policy_loss", "value_loss", "clipfrac", "approx_kl", "entropy", "ratio_min",
                "ratio_max", *(["ptx_loss"] if loss_type == "bnpo" else [])):
        assert _column(two, key) == pytest.approx(_column(one, key), **TOLERANCE), key
    for sub, load in ((".", AutoModelForCausalLM.from_pretrained), ("value", ScalarModel.from_pretrained)):
        saved = [load(tmp_path / f"p{n}" / sub).state_dict() for n in (1, 2)]
        for name, weight in saved[0].items():
            torch.testing.assert_close(saved[1][name], weight, rtol=0, atol=2e-3,
                                       msg=lambda m, name=name, sub=sub: f"{sub} {name}: {m}")


def test_grpo_with_two_processes_logs_the_loss_of_one_process(micro_world, tmp_path, capsys):
    """GRPO's loss is a mean over responses, not tokens: the logged policy loss of two processes, each holding
    responses of different lengths, is the one-process run's (before: averaged by tokens, 3.9e-2 off). dr_grpo's
    logged loss: the test above."""
    rm = _reward_dir(tmp_path, micro_world / "base")
    args = ["ppo", "--policy", micro_world / "base", "--reward", rm, "--prompts", micro_world / "prompts/train.jsonl",
            "--advantage", "grpo", "--num-generations", "2", "--ppo-steps", "2", "--batch-size", "8",
            "--minibatch-size", "4", "--ppo-epochs", "1", "--max-new-tokens", "12", "--lr", "1e-3", "--threads", "1"]
    for n in (1, 2):
        code, _, err = run_cli([*args, "--out", tmp_path / f"p{n}", "--num-processes", n], capsys)
        assert code == 0, err
    one, two = _metrics(tmp_path / "p1"), _metrics(tmp_path / "p2")
    assert any(0 < r["eos_rate"] < 1 for r in one)  # uneven ends
    for key in ("rm_score", "kl", "kl_k3", "response_length", "policy_loss", "clipfrac", "approx_kl", "entropy"):
        assert _column(two, key) == pytest.approx(_column(one, key), **TOLERANCE), key
    saved = [AutoModelForCausalLM.from_pretrained(tmp_path / f"p{n}").state_dict() for n in (1, 2)]
    for name, weight in saved[0].items():
        torch.testing.assert_close(saved[1][name], weight, rtol=0, atol=2e-3, msg=lambda m, name=name: f"{name}: {m}")


def test_multinomial_is_the_argmax_of_probs_over_exponential_noise():
    """What PPO's global-batch sampling rests on (generation.py `next_token`), checked bit for bit on CPU: the
    same tokens, and the generator left in the same state; rows of a global draw are the one-batch draw's rows."""
    probs = torch.softmax(torch.randn(6, 50, generator=torch.Generator().manual_seed(3)) * 3, -1)
    drawn = torch.multinomial(probs, 1, generator=(g1 := torch.Generator().manual_seed(1))).squeeze(-1)
    noise = torch.empty_like(probs).exponential_(1, generator=(g2 := torch.Generator().manual_seed(1)))
    assert torch.equal(drawn, (probs / noise).argmax(-1)) and torch.equal(g1.get_state(), g2.get_state())
    logits = probs.log()
    whole = next_token(logits, 1.0, 1.0, False, torch.Generator().manual_seed(5))
    parts = torch.cat([next_token(logits[a:b], 1.0, 1.0, False, torch.Generator().manual_seed(5), (a, 6))
                       for a, b in ((0, 2), (2, 6))])
    assert torch.equal(whole, parts)


def test_ppo_with_fsdp_takes_the_steps_of_ppo_with_ddp(micro_world, tmp_path, capsys):
    """The four models sharded across two processes (--fsdp) against whole copies in each (DDP): every process
    draws from the same seed either way, so the rollouts, scores and updates are the same up to float rounding."""
    rm = _reward_dir(tmp_path, micro_world / "base")
    args = ["ppo", "--policy", micro_world / "base", "--reward", rm, "--prompts", micro_world / "prompts/train.jsonl",
            "--world", micro_world, "--ppo-steps", "4", "--batch-size", "2", "--minibatch-size", "2",
            "--max-new-tokens", "32", "--save-every", "2", "--num-processes", "2", "--threads", "1"]
    for name, sharding in (("ddp", []), ("fsdp", ["--fsdp"])):
        code, _, err = run_cli([*args, "--out", tmp_path / name, *sharding], capsys)
        assert code == 0, err
    ddp, fsdp = _metrics(tmp_path / "ddp"), _metrics(tmp_path / "fsdp")
    assert [r["step"] for r in fsdp] == [1, 2, 3, 4]  # process 0 alone writes
    # One response per process, some ending with EOS: the processes' decoding loops end at different tokens, so
    # the policy must be gathered whole for them (Parallel.whole). Measured: with a gather per forward pass instead,
    # the collectives of the two processes no longer match and the FSDP run fails.
    assert any(0 < r["eos_rate"] for r in ddp)
    for key in ("rm_score", "kl", "gold", "response_length", "policy_loss", "value_loss", "clipfrac", "value_mean"):
        assert _column(fsdp, key) == pytest.approx(_column(ddp, key), rel=1e-3, abs=1e-4), key
    saved = {(run, part): load(tmp_path / run / sub).state_dict()  # with --fsdp: gathered from the shards
             for run in ("ddp", "fsdp")
             for part, sub, load in (("policy", ".", AutoModelForCausalLM.from_pretrained),
                                     ("value", "value", ScalarModel.from_pretrained),
                                     ("snapshot", "checkpoints/step-2", AutoModelForCausalLM.from_pretrained))}
    for part in ("policy", "value", "snapshot"):
        for name, weight in saved["ddp", part].items():
            torch.testing.assert_close(saved["fsdp", part][name], weight, rtol=0, atol=2e-3,
                                       msg=lambda m, name=name, part=part: f"{part} {name}: {m}")


def test_an_error_inside_the_workers_is_one_line_and_exit_2(tiny_gpt2, tmp_path, capsys):
    (tmp_path / "d.jsonl").write_text('{"prompt": "a b", "completion": "c"}\n')
    args = ["sft", "--model", tiny_gpt2, "--data", tmp_path / "d.jsonl", "--out", tmp_path / "run", "--device", "cpu",
            "--num-processes", "2"]
    code, _, err = run_cli([*args, "--lora-r", "4", "--lora-targets", "no_such_layer"], capsys)  # found in the workers
    assert code == 2 and len(err.strip().splitlines()) == 1 and "lora_targets" in err and "Traceback" not in err
    code, _, err = run_cli([*args, "--fsdp", "--lora-r", "4"], capsys)  # found before any process starts
    assert code == 2 and len(err.strip().splitlines()) == 1 and "fsdp" in err


@pytest.mark.parametrize("args, expected", [
    (["--num-processes", "3"], "multiples of --num-processes 3"),
    (["--num-processes", "2", "--value-warmup", "2"], "value_warmup"),
])
def test_ppo_process_counts_that_cannot_split_the_batch_are_refused(args, expected, tiny_gpt2, tmp_path, capsys):
    (tmp_path / "p.jsonl").write_text('{"prompt": "a b"}\n')
    code, _, err = run_cli(["ppo", "--policy", tiny_gpt2, "--reward", tiny_gpt2, "--prompts", tmp_path / "p.jsonl",
                            "--out", tmp_path / "run", "--batch-size", "8", "--minibatch-size", "4", *args], capsys)
    assert code == 2 and expected in err


def _parallel(rank, world):
    parallel = DistributedParallel.__new__(DistributedParallel)  # the sharding rule alone, no process group
    parallel.rank, parallel.world_size = rank, world
    return parallel


@pytest.mark.parametrize("n, world", [(16, 2), (5, 2), (7, 3), (1, 2)])
def test_shards_of_a_global_batch_cover_it_once_in_order(n, world):
    items = list(range(n))
    shards = [_parallel(r, world).shard(items) for r in range(world)]
    if n >= world:
        assert sum(shards, []) == items and max(map(len, shards)) - min(map(len, shards)) <= 1
    else:  # too small to split: every process takes all of it (and weighs it 1/N in backward)
        assert all(s == items for s in shards)


def test_one_process_is_plain_pytorch(tiny_gpt2):
    from transformers import AutoModelForCausalLM

    parallel = Parallel.create(RunOptions(out="unused", device="cpu"))
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    assert type(parallel) is Parallel and parallel.wrap(model) is model and "forward" not in vars(model)
    assert not torch.distributed.is_initialized()
    loss = torch.tensor(2.0, requires_grad=True) * 1.5
    assert parallel.backward(loss, units=7).item() == 3.0 and parallel.shard([1, 2, 3]) == [1, 2, 3]


def test_bf16_runs_the_forward_under_autocast_and_returns_float32(tiny_gpt2):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    ids = torch.tensor([[5, 6, 7, 8]])
    full = model(input_ids=ids).logits
    seen = []
    model.transformer.h[0].mlp.c_fc.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    Parallel(torch.device("cpu"), bf16=True).wrap(model)
    half = model(input_ids=ids).logits
    assert seen == [torch.bfloat16] and half.dtype == torch.float32
    assert not torch.equal(half, full) and torch.allclose(half, full, atol=0.1)


def test_bf16_on_cpu_keeps_float32_weights_grads_and_adam_and_runs_eager_attention(tiny_gpt2):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    ids, mask = torch.tensor([[0, 0, 5, 6, 7], [4, 5, 6, 7, 8]]), torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    full = model(input_ids=ids, attention_mask=mask).logits
    Parallel(torch.device("cpu"), bf16=True).wrap(model)
    assert model.config._attn_implementation == "eager"  # torch's fused attention is slow in bf16 on CPUs
    half = model(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    assert half.dtype == torch.float32 and torch.allclose(half[real], full[real], atol=0.1)  # left padding too
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    half.log_softmax(-1)[real].mean().backward()
    optimizer.step()
    assert {p.dtype for p in model.parameters()} == {p.grad.dtype for p in model.parameters()} == {torch.float32}
    assert {s["exp_avg"].dtype for s in optimizer.state.values()} == {torch.float32}


def test_bf16_flag_trains_and_the_same_seed_gives_the_same_run(micro_world, tmp_path, capsys):
    args = ["sft", "--model", micro_world / "base", "--data", micro_world / "demos.jsonl", "--epochs", "1",
            "--batch-size", "64", "--log-every", "1"]
    assert run_cli([*args, "--out", tmp_path / "fp32"], capsys)[0] == 0
    assert run_cli([*args, "--out", tmp_path / "bf16", "--bf16"], capsys)[0] == 0
    assert run_cli([*args, "--out", tmp_path / "again", "--bf16"], capsys)[0] == 0
    fp32, bf16 = _column(_metrics(tmp_path / "fp32"), "train_loss"), _column(_metrics(tmp_path / "bf16"), "train_loss")
    assert bf16 != fp32 and bf16 == pytest.approx(fp32, rel=0.05)
    assert _column(_metrics(tmp_path / "again"), "train_loss") == bf16
