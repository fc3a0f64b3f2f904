"""Which causal-LM architectures of the installed transformers build tiny (`tests/arch_zoo.py`'s `tiny_config`).

    python -m tests.arch_survey            # one line per architecture, then the totals and the built tuple

Each architecture of `MODEL_FOR_CAUSAL_LM_MAPPING_NAMES` gets its tiny config; it builds when
`AutoModelForCausalLM.from_config` makes a model of under 5M parameters whose forward pass on two rows of six ids
gives finite logits (40 s at most each). The tuple it prints is `arch_zoo.SURVEYED`; run it again after a
transformers upgrade. Not a test: it builds ~200 models (about a minute on one core).
"""

from __future__ import annotations

import os
import signal
import warnings
from collections import Counter

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES  # noqa: E402

from tests.arch_zoo import tiny_config  # noqa: E402

MAX_PARAMS = 5_000_000  # above this the config did not shrink (a vision tower, a fixed-size part)
SECONDS = 40


def try_build(model_type: str) -> str:
    """'' when the architecture builds tiny, else why not (one line)."""
    config = tiny_config(model_type)
    with torch.device("meta"):
        n = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    if n > MAX_PARAMS:
        return f"did not shrink: {n:,} parameters"
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    ids = torch.randint(3, 200, (2, 6))
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits
    return "" if torch.isfinite(logits).all() else "non-finite logits"


def _timeout(*_):
    raise TimeoutError(f"over {SECONDS} s")


def main() -> None:
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    signal.signal(signal.SIGALRM, _timeout)
    built, failed = [], {}
    for model_type in sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES):
        signal.alarm(SECONDS)
        try:
            why = try_build(model_type)
        except Exception as exc:  # noqa: BLE001 - any failure is a reason to report
            why = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]}"
        finally:
            signal.alarm(0)
        print(f"{model_type}: {why or 'builds'}", flush=True)
        (failed.__setitem__(model_type, why) if why else built.append(model_type))
    print(f"\n{len(built)} of {len(built) + len(failed)} build; failures by kind:")
    for kind, n in Counter(w.split(":")[0] for w in failed.values()).most_common():
        print(f"  {n:3d} {kind}")
    print("\nSURVEYED = (" + ", ".join(f'"{m}"' for m in built) + ")")


if __name__ == "__main__":
    main()
