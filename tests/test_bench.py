"""`rlhf bench ppo|rm|sft` run the real trainers on tiny random models and print one JSON line (no timing asserted)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from rlhfkit.models.loading import fuse_activations
from rlhfkit.recipes import bench as bench_module
from rlhfkit.recipes.bench import dtype_matmul_gflops, model_matmul_shapes
from rlhfkit.recipes.configs import ModelShape
from rlhfkit.train import ppo as ppo_module
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
    for phase in ("generation", "scoring", "update"):  # each phase's FLOPs and rates, to set beside `bench matmul`
        assert result[f"{phase}_gflop"] > 0 and result[f"{phase}_gflops_per_s"] > 0
        assert result[f"{phase}_gflop_per_cpu_s"] > 0 and result[f"{phase}_cpu_s"] > 0
    # update = 3 (fwd + bwd) x 2 epochs x (policy with head + value backbone); scoring = 2 with head + 2 backbones
    assert result["update_gflop"] == pytest.approx(3 * 2 / 2 * result["scoring_gflop"], rel=0.01)
    assert result["episodes"] == 8 and result["resp"] == 3
    assert result["rollout_engine"] == "hf" and result["gen_tokens_per_s"] > 0 and result["sync_s"] == 0


def test_bench_ppo_times_the_iteration_rlhf_ppo_runs(capsys, monkeypatch):
    """No copy of the PPO loop body in bench.py: each iteration it times is train.ppo.ppo_iteration, with β."""
    calls, iteration = [], bench_module.ppo_iteration

    def watched(models, prompts, cfg, kl_coef, *args, **kwargs):
        calls.append(kl_coef)
        return iteration(models, prompts, cfg, kl_coef, *args, **kwargs)

    monkeypatch.setattr(bench_module, "ppo_iteration", watched)
    code, _, err = run_cli(["bench", "ppo", *TINY, "--prompt", "4", "--resp", "3", "--batch", "4", "--episodes", "8",
                            "--warmup", "1"], capsys)
    assert code == 0, err
    assert iteration is ppo_module.ppo_iteration and calls == [0.05] * 3  # 1 warm-up + 2 timed; --kl-coef's default


def test_bench_ppo_qwen2_shape_with_the_static_cache_engine_and_minibatches(capsys):
    """The layout of bench/gpu_rollout.sh's 0.5B run (Qwen2, grouped KV heads, tied head), tiny."""
    code, out, err = run_cli(["bench", "ppo", "--arch", "qwen2", "--layers", "2", "--dim", "32", "--heads", "4",
                              "--kv-heads", "2", "--prompt", "4", "--resp", "3", "--batch", "4", "--minibatch", "2",
                              "--episodes", "4", "--epochs", "1", "--rollout-engine", "hf-static", "--json"], capsys)
    assert code == 0, err
    result = _json_line(out)
    assert result["rollout_engine"] == "hf-static" and result["arch"] == "qwen2" and result["minibatch"] == 2


@pytest.mark.parametrize("args", [["rm"], ["rm", "--k", "3"], ["sft"], ["sft", "--bf16"]])
def test_bench_rm_and_sft_print_tokens_per_second(args, capsys):
    code, out, err = run_cli(["bench", *args, *TINY, "--prompt", "3", "--completion", "4", "--examples", "12",
                              "--batch", "4"], capsys)
    assert code == 0, err
    result = _json_line(out)
    assert result["timed_steps"] == 2 and result["tokens_per_s"] > 0 and result["seq"] == 8
    assert result["bf16"] is ("--bf16" in args)
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


def test_model_matmul_shapes_are_the_layers_weights_forward_and_backward():
    shapes = model_matmul_shapes(ModelShape(layers=2, dim=8, heads=2, vocab=20), rows=5)
    # x·W, dY·Wᵀ, Xᵀ·dY for QKV (8→24), attention out (8→8), MLP up (8→32) and down (32→8), the head (8→20)
    assert shapes[:3] == [(5, 8, 24), (5, 24, 8), (8, 5, 24)] and shapes[-3:] == [(5, 8, 20), (5, 20, 8), (8, 5, 20)]
    per_row = sum(2 * m * k * n for m, k, n in shapes) / 5
    assert per_row == 3 * 2 * (8 * 24 + 8 * 8 + 8 * 32 + 32 * 8 + 8 * 20)  # 3 × forward's 2·(12d² + dV) per token


def test_bench_matmul_reports_both_dtypes_at_each_row_count(capsys):
    code, out, err = run_cli(["bench", "matmul", *TINY, "--rows", "4,32", "--seconds", "0.01"], capsys)
    assert code == 0, err
    result = _json_line(out)
    assert [r["rows"] for r in result["rates"]] == [4, 32] and isinstance(result["bf16_native"], bool)
    for rate in result["rates"]:
        for dtype in ("float32", "bfloat16"):
            assert rate[dtype]["gflops"] > 0 and rate[dtype]["gflop_per_cpu_s"] > 0
    assert set(dtype_matmul_gflops([(2, 3, 4)], torch.bfloat16, 0.001)) == {"gflops", "gflop_per_cpu_s"}


def bench_script(name: str):
    """A script of bench/ as a module."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_bench_reads_each_phase_against_the_rate_of_its_dtype_and_rows():
    run_all = bench_script("run_all")
    matmul = {"rates": [{"rows": 64, "float32": {"gflops": 100, "gflop_per_cpu_s": 200},
                         "bfloat16": {"gflops": 20, "gflop_per_cpu_s": 40}},
                        {"rows": 5120, "float32": {"gflops": 1000, "gflop_per_cpu_s": 2000},
                         "bfloat16": {"gflops": 100, "gflop_per_cpu_s": 200}}]}
    ours = {"bf16": True, "generation_gflops_per_s": 10, "generation_gflop_per_cpu_s": 20,
            "scoring_gflops_per_s": 30, "scoring_gflop_per_cpu_s": 40, "update_gflops_per_s": 50,
            "update_gflop_per_cpu_s": 100}
    f = run_all.phase_fractions(ours, matmul)
    # bf16: generation 10/20 and 20/40 (64 rows), scoring 30/100 and 40/200, update 50/100 and 100/200 (5120 rows)
    assert f == {"generation": {"wall": 0.5, "cpu": 0.5, "dtype": "bfloat16"},
                 "scoring": {"wall": 0.3, "cpu": 0.2, "dtype": "bfloat16"},
                 "update": {"wall": 0.5, "cpu": 0.5, "dtype": "bfloat16"}}
    assert run_all.phase_fractions(ours | {"bf16": False}, matmul)["update"] == {"wall": 0.05, "cpu": 0.05,
                                                                                 "dtype": "float32"}

    # matmul seconds: fp32 gen 50/100 + (200 + 800)/1000 = 1.5 s; bf16 50/20 + 1000/100 = 12.5 s
    gflop = {"generation_gflop": 50, "scoring_gflop": 200, "update_gflop": 800, "episodes": 128}
    fp32 = gflop | {"bf16": False, "total_s": 4.0, "episodes_per_s": 32.0}
    half = gflop | {"bf16": True, "total_s": 16.0, "episodes_per_s": 8.0}
    assert run_all.bf16_limits(fp32, half, {"episodes_per_s": 16.0}, matmul) == {
        "matmul_s_fp32": 1.5, "matmul_s_bf16": 12.5, "rest_s_fp32": 2.5, "rest_s_bf16": 3.5,
        "ceiling_vs_ours_fp32": 0.12,  # 1.5 / 12.5
        "rest_s_bf16_allowed_for_2x_ours_fp32": -10.5,  # 128 / 64 − 12.5: out of reach
        "rest_s_bf16_allowed_for_3x_trl_fp32": -9.83}  # 128 / 48 − 12.5


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_bench_ppo_on_cuda_without_cuda_is_a_one_line_error(capsys):
    code, _, err = run_cli(["bench", "ppo", *TINY, "--device", "cuda"], capsys)
    assert code == 2 and "CUDA is not available" in err


def test_cpu_levers_sigmoid_gelu_is_the_tanh_gelu_and_its_gradient():
    """bench/cpu_levers.py times x·σ(u) against torch's tanh GELU: the same function, value and derivative."""
    levers = bench_script("cpu_levers")
    x = torch.linspace(-8, 8, 4001, dtype=torch.float64, requires_grad=True)
    ours = levers.SigmoidGELU.apply(x)
    (ours_grad,) = torch.autograd.grad(ours.sum(), x)
    theirs = torch.nn.functional.gelu(x, approximate="tanh")
    (theirs_grad,) = torch.autograd.grad(theirs.sum(), x)
    assert torch.allclose(ours, theirs, atol=1e-12) and torch.allclose(ours_grad, theirs_grad, atol=1e-12)
    assert torch.autograd.gradcheck(levers.SigmoidGELU.apply, (x[::200].detach().clone().requires_grad_(),))


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
