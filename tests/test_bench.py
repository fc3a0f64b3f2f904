"""`rlhf bench ppo|rm|sft` run the real trainers on tiny random models and print one JSON line (no timing asserted)."""

import json

import pytest
import torch

from rlhfkit.models.loading import fuse_activations
from tests.conftest import run_cli

TINY = ["--layers", "1", "--dim", "16", "--heads", "2", "--vocab", "32", "--json"]


def _json_line(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert lines, stdout
    return json.loads(lines[-1])


def test_bench_ppo_prints_throughput_and_phase_seconds(capsys):
    code, out, err = run_cli(["bench", "ppo", *TINY, "--prompt", "4", "--resp", "3", "--batch", "4",
                              "--episodes", "8", "--epochs", "2"], capsys)
    assert code == 0, err
    result = _json_line(out)
    for key in ("episodes_per_s", "resp_tokens_per_s", "peak_rss_mb", "generation_s", "scoring_s", "update_s"):
        assert result[key] > 0, key
    assert result["episodes"] == 8 and result["resp"] == 3
    assert result["rollout_engine"] == "hf" and result["gen_tokens_per_s"] > 0 and result["sync_s"] == 0


def test_bench_ppo_qwen2_shape_with_the_static_cache_engine_and_minibatches(capsys):
    """The layout of bench/gpu_rollout.sh's 0.5B run (Qwen2, grouped KV heads, tied head), tiny."""
    code, out, err = run_cli(["bench", "ppo", "--arch", "qwen2", "--layers", "2", "--dim", "32", "--heads", "4",
                              "--kv-heads", "2", "--prompt", "4", "--resp", "3", "--batch", "4", "--minibatch", "2",
                              "--episodes", "4", "--epochs", "1", "--rollout-engine", "hf-static", "--json"], capsys)
    assert code == 0, err
    result = _json_line(out)
    assert result["rollout_engine"] == "hf-static" and result["arch"] == "qwen2" and result["minibatch"] == 2


@pytest.mark.parametrize("args", [["rm"], ["rm", "--k", "3"], ["sft"]])
def test_bench_rm_and_sft_print_tokens_per_second(args, capsys):
    code, out, err = run_cli(["bench", *args, *TINY, "--prompt", "3", "--completion", "4", "--examples", "12",
                              "--batch", "4"], capsys)
    assert code == 0, err
    result = _json_line(out)
    assert result["timed_steps"] == 2 and result["tokens_per_s"] > 0 and result["seq"] == 8
    if args[0] == "rm":
        assert result["pairs_per_s"] > 0


def test_bench_ppo_bf16_runs_the_forward_passes_under_autocast(capsys):
    seen = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: seen.append(torch.is_autocast_enabled("cpu")))
    try:
        code, out, err = run_cli(["bench", "ppo", *TINY, "--prompt", "4", "--resp", "3", "--batch", "4",
                                  "--episodes", "4", "--epochs", "1", "--bf16"], capsys)
    finally:
        hook.remove()
    assert code == 0, err
    result = _json_line(out)
    assert result["bf16"] is True and result["device"] == "cpu"
    assert any(seen)  # generation, scoring and the update all go through the autocast-wrapped forwards


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_bench_ppo_on_cuda_without_cuda_is_a_one_line_error(capsys):
    code, _, err = run_cli(["bench", "ppo", *TINY, "--device", "cuda"], capsys)
    assert code == 2 and "CUDA is not available" in err


def test_bench_rejects_episodes_that_are_not_whole_batches(capsys):
    code, _, err = run_cli(["bench", "ppo", *TINY, "--batch", "4", "--episodes", "6"], capsys)
    assert code == 2 and "multiple of 'batch'" in err


def test_fused_gelu_computes_what_gpt2s_gelu_new_computes():
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformers.activations import GELUTanh, NewGELUActivation

    x = torch.linspace(-8, 8, 10001)
    assert torch.allclose(GELUTanh()(x), NewGELUActivation()(x), atol=1e-6, rtol=1e-6)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=2, n_head=2, vocab_size=32, n_positions=16)).eval()
    ids = torch.randint(0, 32, (3, 10))
    before = model(input_ids=ids).logits
    fuse_activations(model)
    assert not any(isinstance(m, NewGELUActivation) for m in model.modules())
    assert torch.allclose(model(input_ids=ids).logits, before, atol=1e-5)
    assert model.config.activation_function == "gelu_new"  # what is saved does not change
