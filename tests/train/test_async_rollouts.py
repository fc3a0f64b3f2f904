"""`rlhf ppo --async-rollouts K` (train/async_rollouts.py): batch j is sampled, in a thread of its own, by a snapshot of
the policy after v(j) = max(0, j − 1 − K) updates; the snapshot's log-probs fill Samples.engine_logp; the run is
deterministic for a seed and K, resumes exactly, and with two processes takes the steps of one."""

import copy
import json
import random

import pytest
import torch

from rlhfkit.models.policy import scored_responses
from rlhfkit.recipes import bench as bench_module
from rlhfkit.train.async_rollouts import AsyncRollouts, behaviour_version
from rlhfkit.train.configs import PPOConfig
from rlhfkit.train.distributed import Parallel
from rlhfkit.train.ppo import collect
from rlhfkit.train.ppo_setup import load_models
from tests.conftest import run_cli
from tests.train.test_checkpoint import _cli, _finish, _kill_when
from tests.train.test_ppo import PROMPTS, _reward_dir

ASYNC_TIMES = {"time_s", "generation_s", "scoring_s", "update_s", "rollout_wait_s", "weight_wait_s", "rollout_s"}


def _metrics(out, drop=ASYNC_TIMES):
    return [{k: v for k, v in json.loads(line).items() if k not in drop}
            for line in (out / "metrics.jsonl").read_text().splitlines()]


def _ppo_args(world, tmp_path, *more):
    rm = _reward_dir(tmp_path, world / "base")
    return ["ppo", "--policy", world / "base", "--reward", rm, "--prompts", world / "prompts/train.jsonl",
            "--world", world, "--ppo-steps", "4", "--batch-size", "8", "--minibatch-size", "4", "--max-new-tokens",
            "8", "--lr", "3e-3", "--threads", "1", *more]


def test_behaviour_version_is_at_most_k_updates_old():
    # K = 1: batches 1, 2 by the start (v = 0), batch 3 by the policy after update 1, batch 4 after update 2 …
    assert [behaviour_version(j, 1) for j in range(1, 6)] == [0, 0, 1, 2, 3]
    assert [behaviour_version(j, 2) for j in range(1, 6)] == [0, 0, 0, 1, 2]
    assert [j - 1 - behaviour_version(j, 2) for j in range(1, 6)] == [0, 1, 2, 2, 2]  # the staleness s(j)


@pytest.mark.parametrize("k", [1, 2])
def test_each_batch_is_sampled_by_the_snapshot_the_staleness_bound_names(k, tmp_path, tiny_gpt2):
    """The trainer "updates" the policy (a fixed perturbation) after each batch and keeps a copy of every version;
    each batch's engine log-probs are exactly those of version v(j) = max(0, j − 1 − K) on its sampled tokens — not
    the current policy's — and the logged staleness is j − 1 − v(j)."""
    cfg = PPOConfig(out=str(tmp_path / "run"), policy=str(tiny_gpt2), reward=str(_reward_dir(tmp_path, tiny_gpt2)),
                    prompts="unused", batch_size=4, max_new_tokens=6, async_rollouts=k, temperature=0.7)
    tokenizer, policy, *_ = load_models(cfg, torch.device("cpu"))
    batches = iter([PROMPTS[i:i + 4] for i in (0, 4, 1, 3, 2)])
    rollouts = AsyncRollouts(policy, tokenizer, cfg, Parallel(torch.device("cpu")), collect, lambda: next(batches),
                             list, steps=5)
    versions, noise = [copy.deepcopy(policy)], torch.Generator().manual_seed(0)
    for j in range(1, 6):
        prompts = rollouts.next_batch()
        samples = rollouts.generate(prompts)
        s, width = samples, samples.prompt_ids.shape[1]
        behaviour = versions[behaviour_version(j, k)]
        expected = scored_responses(behaviour, s.input_ids, s.attention_mask, width, 0.7, cfg.packing)[0]
        assert torch.equal(s.engine_logp, expected * s.response_mask), j
        current = scored_responses(policy, s.input_ids, s.attention_mask, width, 0.7, cfg.packing)[0] * s.response_mask
        assert torch.equal(s.engine_logp, current) == (behaviour_version(j, k) == j - 1)
        assert rollouts.metrics()["staleness"] == j - 1 - behaviour_version(j, k) == min(j - 1, k)
        with torch.no_grad():  # the update of batch j
            for p in policy.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=noise))
        versions.append(copy.deepcopy(policy))
        rollouts.sync(policy)
    rollouts.close()


def test_same_seed_and_k_give_the_same_run_which_logs_staleness_and_waits(micro_world, tmp_path, capsys):
    """Two runs with the same seed and K log the same metrics (timings aside), whatever the threads' timing. Batch 1
    is the synchronous run's (version 0, the same sampler seed); batch 2 is not (sampled before update 1)."""
    for name, k in (("a", 1), ("b", 1), ("sync", 0)):
        code, _, err = run_cli([*_ppo_args(micro_world, tmp_path), "--async-rollouts", k, "--out", tmp_path / name],
                               capsys)
        assert code == 0, err
    a, b, sync = _metrics(tmp_path / "a"), _metrics(tmp_path / "b"), _metrics(tmp_path / "sync")
    assert a == b
    assert [r["staleness"] for r in a] == [0, 1, 1, 1]
    raw = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    for key in ("rollout_wait_s", "weight_wait_s", "rollout_s"):
        assert all(r[key] >= 0 for r in raw), key
    assert not any(key in sync[0] for key in ("staleness", "rollout_wait_s", "weight_wait_s", "engine_kl"))  # K = 0:
    #                                                                                                today's loop
    assert {k: v for k, v in a[0].items() if k != "staleness" and not k.startswith("engine_")} == sync[0]
    assert a[1]["rm_score"] != sync[1]["rm_score"] and a[1]["kl"] != sync[1]["kl"]
    # the importance correction (--engine-is, default tis with async): batch 1's snapshot is the trained policy itself
    # (weight exactly 1, no gap); later batches come from the policy one update older
    assert a[0]["engine_kl"] == 0.0 and a[0]["engine_is_weight"] == 1.0
    assert all(r["engine_kl"] != 0.0 and "engine_is_capped" in r for r in a[1:])


def test_resume_of_an_async_run_killed_at_a_random_step_equals_the_uninterrupted_run(micro_world, tmp_path):
    """A checkpoint lets the thread finish the batches already drawn and saves them with its sampler: the resumed
    run logs what the uninterrupted one logs."""
    args = [*_ppo_args(micro_world, tmp_path, "--async-rollouts", "1", "--checkpoint-every", "1"), "--ppo-steps", "5"]
    _finish(_cli([*args, "--out", tmp_path / "whole"]))
    out = tmp_path / "killed"
    _kill_when(_cli([*args, "--out", out]), out / "metrics.jsonl", random.Random().randint(2, 3))
    _finish(_cli([*args, "--out", out, "--resume"]))
    assert _metrics(out) == _metrics(tmp_path / "whole")
    assert [r["staleness"] for r in _metrics(out)] == [0, 1, 1, 1, 1]


def test_async_rollouts_with_two_processes_take_the_steps_of_one_process(micro_world, tmp_path, capsys):
    """Each process's thread samples its rows of the global batch as `rollout.generate_share` does (the threads agree
    on the decoding steps over a process group of their own): two processes log the one-process run's metrics, with
    responses of uneven lengths."""
    args = _ppo_args(micro_world, tmp_path, "--async-rollouts", "1", "--max-new-tokens", "12", "--ppo-steps", "3")
    for n in (1, 2):
        code, _, err = run_cli([*args, "--out", tmp_path / f"p{n}", "--num-processes", n], capsys)
        assert code == 0, err
    one, two = _metrics(tmp_path / "p1"), _metrics(tmp_path / "p2")
    assert len({r["response_length"] for r in one}) > 1 and any(0 < r["eos_rate"] < 1 for r in one)  # uneven ends
    assert [r["staleness"] for r in two] == [0, 1, 1]
    for key in ("rm_score", "kl", "gold", "response_length", "eos_rate", "policy_loss", "value_loss", "ratio_min"):
        assert [r[key] for r in two] == pytest.approx([r[key] for r in one], rel=1e-4, abs=1e-5), key


@pytest.mark.parametrize("more, message", [
    (["--rollout-engine", "vllm"], "--async-rollouts runs with --rollout-engine hf or hf-static"),
    (["--rollout-engine", "server", "--rollout-server", "127.0.0.1:1"], "with server it is not supported yet"),
    (["--environment", "tools.py:Calculator"], "with --environment (multi-turn trajectories) it is not supported"),
    (["--num-processes", "2", "--fsdp"], "--async-rollouts needs the whole policy in every process"),
    (["--num-processes", "2", "--checkpoint-every", "1"], "--async-rollouts with several processes writes no "
                                                          "checkpoints"),
    (["--async-rollouts", "-1"], "config key 'async_rollouts'"),
])
def test_what_async_rollouts_cannot_run_with_is_one_line_and_nothing_written(more, message, micro_world, tmp_path,
                                                                             capsys):
    code, _, err = run_cli([*_ppo_args(micro_world, tmp_path, "--async-rollouts", "1", *more), "--out",
                            tmp_path / "run"], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_bench_ppo_with_async_rollouts_reports_iteration_time_and_waits_and_samples_one_batch_ahead(capsys,
                                                                                                   monkeypatch):
    """`rlhf bench ppo --async-rollouts 1` (bench/run_all.py's overlap): every PPO iteration is timed with the sampling
    thread busy, so the thread samples one batch beyond the last timed one (1 warm-up + 2 timed + 1 batches drawn)."""
    drawn, random_text = [], bench_module.random_text
    monkeypatch.setattr(bench_module, "random_text", lambda *a: drawn.append(1) or random_text(*a))
    code, out, err = run_cli(["bench", "ppo", "--layers", "1", "--dim", "16", "--heads", "2", "--vocab", "32", "--json",
                              "--prompt", "4", "--resp", "3", "--batch", "4", "--episodes", "8", "--warmup", "1",
                              "--async-rollouts", "1"], capsys)
    assert code == 0, err
    result = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    assert result["async_rollouts"] == 1 and result["iteration_s"] > 0
    assert result["rollout_wait_s"] >= 0 and result["weight_wait_s"] >= 0
    assert len(drawn) == (1 + 2 + 1) * 4
