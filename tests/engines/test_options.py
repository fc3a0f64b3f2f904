"""--rollout-engine and --vllm-gpu-memory: a wrong value is one line, exit 2, before any run directory exists."""

import importlib.util

import pytest

from tests.conftest import run_cli

HAS_VLLM = importlib.util.find_spec("vllm") is not None


def _ppo(tiny_gpt2, tmp_path, *extra):
    return ["ppo", "--policy", tiny_gpt2, "--reward", tiny_gpt2, "--prompts", tmp_path / "p.jsonl", "--out",
            tmp_path / "run", *extra]


@pytest.mark.parametrize("extra, expected", [
    (["--rollout-engine", "tgi"], "unknown engine 'tgi' (hf, hf-static, vllm, server)"),
    (["--vllm-gpu-memory", "1.5"], "'vllm_gpu_memory' must be in (0, 1)"),
])
def test_bad_engine_options_are_one_line(extra, expected, tiny_gpt2, tmp_path, capsys):
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n')
    code, _, err = run_cli(_ppo(tiny_gpt2, tmp_path, *extra), capsys)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here")
@pytest.mark.parametrize("command", ["ppo", "sample", "eval gold"])
def test_vllm_engine_without_vllm_names_the_install(command, tiny_gpt2, micro_world, tmp_path, capsys):
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n')
    args = {"ppo": _ppo(tiny_gpt2, tmp_path),
            "sample": ["sample", "--models", tiny_gpt2, "--prompts", tmp_path / "p.jsonl", "--out", tmp_path / "c"],
            "eval gold": ["eval", "gold", "--model", tiny_gpt2, "--world", micro_world]}[command]
    code, _, err = run_cli([*args, "--rollout-engine", "vllm"], capsys)
    assert code == 2 and "vLLM is not installed" in err and "README 'Rollout engines'" in err
    assert not (tmp_path / "run").exists() and not (tmp_path / "c").exists()
