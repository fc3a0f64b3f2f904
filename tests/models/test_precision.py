"""bf16 on this machine: detection from /proc/cpuinfo text (fake text in each test: the answer must not depend on this
machine), and models run under bf16 autocast (`run_in_bf16`, the --bf16 of `rlhf sample` and `rlhf eval`)."""

import pytest
import torch

import rlhfkit.eval.commands
import rlhfkit.models.precision
import rlhfkit.recipes.sample
from rlhfkit.models.loading import load_causal_lm, load_tokenizer
from rlhfkit.models.precision import (
    AUTOCAST_MARK,
    bf16_support,
    cpu_bf16_flags,
    precision_line,
    run_in_bf16,
    warn_if_emulated,
)
from tests.conftest import run_cli

ZEN1 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse sse2 avx avx2 fma bmi2\n"
ZEN4 = ("processor\t: 0\nflags\t\t: fpu avx avx2 avx512f avx512bw avx512_bf16 avx512_vnni\n\n"
        "processor\t: 1\nflags\t\t: fpu\n")  # the first processor's flags are read
SAPPHIRE = "flags\t\t: avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve i8mm bf16 svebf16\nCPU implementer\t: 0x41\n"
GRAVITON2 = "processor\t: 0\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics\n"


def test_avx2_only_cpu_is_not_native_and_says_what_is_missing():
    support = bf16_support("cpu", cpuinfo=ZEN1)
    assert not support.native and support.found == "" and support.precision == "float32"
    assert "no avx512_bf16/amx_bf16" in support.reason


def test_avx512_bf16_and_amx_are_found_and_named():
    zen4 = bf16_support("cpu", cpuinfo=ZEN4)
    assert zen4.native and zen4.found == "avx512_bf16" and zen4.precision == "bfloat16"
    assert cpu_bf16_flags(SAPPHIRE) == ["avx512_bf16", "amx_bf16"]


def test_only_whole_flag_words_count():
    # avx512_bf16_x is not avx512_bf16; Arm's `svebf16` alone is not its `bf16` feature
    assert cpu_bf16_flags("flags : avx512_bf16_x avx2\n") == []
    assert cpu_bf16_flags("Features : fp svebf16\n") == []


def test_arm_bf16_feature_is_native_and_older_arm_is_not():
    assert bf16_support("cpu", cpuinfo=GRAVITON3).found == "bf16"
    assert not bf16_support("cpu", cpuinfo=GRAVITON2).native


def test_no_cpuinfo_is_unknown_and_not_native():
    support = bf16_support("cpu", cpuinfo="")
    assert not support.native and "unknown" in support.reason


def test_precision_line_names_the_mode_and_the_reason():
    zen1 = bf16_support("cpu", cpuinfo=ZEN1)
    assert precision_line(False, zen1) == ("precision: float32 (bf16 not native on this CPU: no avx512_bf16/amx_bf16 "
                                           "(x86) or bf16 (Arm) flag)")
    zen4 = bf16_support("cpu", cpuinfo=ZEN4)
    assert precision_line(True, zen4) == "precision: bfloat16 autocast (bf16 native on this CPU (avx512_bf16))"
    assert precision_line(False, zen4) == ("precision: float32 (bf16 native on this CPU (avx512_bf16); --bf16 yes to "
                                           "use it)")


def test_warning_only_when_bf16_is_asked_for_where_it_is_emulated(capsys):
    zen1, zen4 = bf16_support("cpu", cpuinfo=ZEN1), bf16_support("cpu", cpuinfo=ZEN4)
    warn_if_emulated(False, support=zen1)
    warn_if_emulated(True, support=zen4)
    assert capsys.readouterr().err == ""
    warn_if_emulated(True, support=zen1)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: --bf16: bf16 not native") and "slower" in err


def test_this_machine_gets_an_answer():
    support = bf16_support(torch.device("cpu"))
    assert support.reason and support.native == bool(support.found)


def test_run_in_bf16_runs_the_forward_in_bf16_returns_float32_and_wraps_once(tiny_gpt2):
    model = load_causal_lm(tiny_gpt2, load_tokenizer(tiny_gpt2)).eval()
    seen = []
    model.transformer.h[0].mlp.c_fc.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    ids = torch.tensor([[5, 6, 7, 8]])
    fp32 = model(ids).logits
    run_in_bf16(False, model)
    model(ids)
    run_in_bf16(True, model)
    forward = model.forward
    run_in_bf16(True, model)  # a second call leaves the wrapped forward as it is
    assert model.forward is forward
    bf16 = model(ids).logits
    assert seen == [torch.float32, torch.float32, torch.bfloat16]
    assert bf16.dtype == torch.float32 and not torch.equal(bf16, fp32)
    assert torch.allclose(bf16, fp32, atol=0.05)  # bf16 rounding of a tiny model's logits, nothing else


@pytest.mark.parametrize("command", ["sample", "eval gold", "eval bon"])
def test_sample_and_eval_bf16_flag_reaches_the_policy(command, micro_world, tmp_path, capsys, monkeypatch):
    """--bf16 of the commands that only run models: the policy they sample runs under bf16 autocast."""
    wrapped = []

    def spy(bf16, *models):
        real_run_in_bf16(bf16, *models)
        wrapped.extend(getattr(m, AUTOCAST_MARK, False) for m in models)
    real_run_in_bf16 = rlhfkit.models.precision.run_in_bf16
    monkeypatch.setattr(rlhfkit.recipes.sample, "run_in_bf16", spy)
    monkeypatch.setattr(rlhfkit.eval.commands, "run_in_bf16", spy)
    base = micro_world / "base"
    args = {"sample": ["sample", "--models", base, "--prompts", micro_world / "prompts" / "train.jsonl",
                       "--k", "2", "--limit", "3", "--max-new-tokens", "6", "--out", tmp_path / "c.jsonl"],
            "eval gold": ["eval", "gold", "--model", base, "--world", micro_world, "--limit", "3"],
            "eval bon": ["eval", "bon", "--policy", base, "--world", micro_world, "--limit", "3", "--n", "2",
                         "--reward-fn", "rlhfkit.world.verify:verify"]}[command]
    code, _, err = run_cli([*args, "--bf16"], capsys)
    assert code == 0, err
    assert wrapped == [True]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    assert wrapped == [True, False]
