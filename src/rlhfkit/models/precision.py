"""Does this machine multiply bfloat16 matrices in hardware (`bf16_support`), and running a model under bf16
autocast (`autocast_model`, `cast_once`, `run_in_bf16`). `--bf16` on a CPU: docs/design.md §7.

`--bf16` runs forward passes under bfloat16 autocast; the weights, the optimizer and the losses (log-softmax
included) stay float32. On a GPU that is the usual mixed precision. On a CPU it pays only where the cores have
bf16 dot-product instructions — AVX512-BF16 or AMX on x86, the BF16 extension on Arm: there torch's bf16
matmuls run ~2.4–4× the fp32 rate. Elsewhere oneDNN emulates them by converting to fp32 and back, and
`--bf16` makes every matmul several times *slower* than fp32. So the flag asks
for bf16 and `bf16_support` says whether it will help; `warn_if_emulated` prints one line when it will not.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

# set on a model whose forward runs under bf16 autocast (`autocast_model`; trainers: Parallel.autocast)
AUTOCAST_MARK = "_rlhfkit_autocast"

# /proc/cpuinfo flags of bf16 dot products: x86 (Cooper Lake, Sapphire Rapids, Zen 4 and later), Arm (v8.6 BF16).
X86_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
ARM_BF16_FLAGS = ("bf16",)
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class BF16Support:
    native: bool   # bf16 matmuls run in hardware on this device
    found: str     # what was found: the cpuinfo flags, or the GPU
    reason: str    # one line for headers and warnings

    @property
    def precision(self) -> str:
        """The precision a run should use when it may choose (`auto`): bfloat16 only where native."""
        return "bfloat16" if self.native else "float32"


def run_in_bf16(bf16: bool, *models: torch.nn.Module) -> None:
    """--bf16 of `PrecisionOptions`: each model's forward under bf16 autocast (`autocast_model`), with one warning
    where bf16 is emulated. Without it: nothing."""
    if not bf16 or not models:
        return
    device = next(models[0].parameters()).device
    warn_if_emulated(True, device)
    for model in models:
        autocast_model(model, device.type)


def cpu_bf16_flags(cpuinfo: str) -> list[str]:
    """The bf16 flags of the first `flags` (x86) or `Features` (Arm) line of /proc/cpuinfo text."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            words = set(value.split())
            return [f for f in (*X86_BF16_FLAGS, *ARM_BF16_FLAGS) if f in words]
    return []


def bf16_support(device: torch.device | str = "cpu", cpuinfo: str | None = None) -> BF16Support:
    """Whether bf16 matmuls are native on `device`: a CUDA GPU's own answer, else the CPU's flags (`cpuinfo`:
    /proc/cpuinfo's text; read here when not given; a system without it, e.g. macOS, counts as unknown)."""
    device = torch.device(device)
    if device.type == "cuda":
        native = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
        name = torch.cuda.get_device_name(device) if torch.cuda.is_available() else "no CUDA device"
        return BF16Support(native, name, f"{name}: bf16 {'native' if native else 'not native'}")
    if cpuinfo is None:
        cpuinfo = CPUINFO.read_text(errors="replace") if CPUINFO.is_file() else ""
    if not cpuinfo:
        return BF16Support(False, "", "bf16 support unknown on this CPU (no /proc/cpuinfo)")
    flags = cpu_bf16_flags(cpuinfo)
    if flags:
        return BF16Support(True, " ".join(flags), f"bf16 native on this CPU ({', '.join(flags)})")
    return BF16Support(False, "", "bf16 not native on this CPU: no avx512_bf16/amx_bf16 (x86) or bf16 (Arm) flag")


def precision_line(bf16: bool, support: BF16Support) -> str:
    """What a run prints in its header: the precision it uses and why."""
    if bf16:
        return f"precision: bfloat16 autocast ({support.reason})"
    return f"precision: float32 ({support.reason}{'; --bf16 yes to use it' if support.native else ''})"


def warn_if_emulated(bf16: bool, device: torch.device | str = "cpu", support: BF16Support | None = None) -> None:
    """One line on stderr when --bf16 is asked for where bf16 matmuls are emulated (slower than float32)."""
    if not bf16:
        return
    support = support or bf16_support(device)
    if not support.native:
        print(f"warning: --bf16: {support.reason}; bf16 matmuls are emulated and slower than float32 here",
              file=sys.stderr, flush=True)


def cast_once(model) -> contextlib.AbstractContextManager:
    """Many forward passes of a --bf16 model (a decoding loop) in one bfloat16 autocast region. Autocast keeps the
    bf16 copy of a weight until its outermost region ends, so the weights are cast once for the whole block instead
    of at every token (at d=256 those casts were a sixth of decoding's time). A model without --bf16: nothing."""
    inner = getattr(model, "module", model)  # DDP's wrapper
    if not (getattr(model, AUTOCAST_MARK, False) or getattr(inner, AUTOCAST_MARK, False)):
        return contextlib.nullcontext()
    return torch.autocast(device_type=next(model.parameters()).device.type, dtype=torch.bfloat16)


def autocast_model(model: torch.nn.Module, device_type: str) -> torch.nn.Module:
    """`model` with its forward under bfloat16 autocast, returning float32 tensors; marked, so a second call does
    nothing. A model with `autocast_root` (a scalar model) has that part alone autocast: its transformer, while
    its head reads float32. On a CPU attention switches to eager matmuls: torch's fused CPU attention kernel is
    ~3x slower backwards in bf16 (bench/attention_bf16.py)."""
    if getattr(model, AUTOCAST_MARK, False):
        return model
    target = model.autocast_root() if hasattr(model, "autocast_root") else model
    if device_type == "cpu" and hasattr(target, "set_attn_implementation"):
        target.set_attn_implementation("eager")
    target.forward = _autocast_forward(target.forward, device_type)
    setattr(target, AUTOCAST_MARK, True)
    setattr(model, AUTOCAST_MARK, True)
    return model


def _autocast_forward(forward, device_type: str):
    def run(*args, **kwargs):
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
            out = forward(*args, **kwargs)
        return _to_float32(out)
    return run


def _to_float32(out):
    """Floating tensors of a model output back to float32 (caches and integer tensors untouched)."""
    if isinstance(out, torch.Tensor):
        return out.float() if out.is_floating_point() else out
    if isinstance(out, dict):  # transformers' ModelOutput is an ordered dict
        for key, value in list(out.items()):
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                out[key] = value.float()
    return out
