"""bf16 detection from /proc/cpuinfo text (fake text in each test: the answer must not depend on this machine)."""

import torch

from rlhfkit.models.precision import bf16_support, cpu_bf16_flags, precision_line, warn_if_emulated

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
