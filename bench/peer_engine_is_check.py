"""The engine importance weights against TRL 1.16's GRPOTrainer on identical tensors: TIS and MIS weights, and the
loss they weigh with its gradient, max |difference| ≤ 1e-6.

    .venv/bin/python bench/peer_engine_is_check.py [TRL_SIDE.pt]   (PEER_PYTHON: TRL 1.16's interpreter, default
                                                                    .venv-peer-latest/bin/python)

1. In TRL's environment, bench/peer_engine_is_trl.py has TRL compute its vLLM importance-sampling ratios from given
   sampling (engine) and trainer log-probs — vllm_importance_sampling_mode token_truncate with clip_max 3, and
   sequence_mask with clip_min 1/3, clip_max 3 — and its loss on them (dapo, grpo, cispo) with d loss / d logp.
2. Here, `losses.tis_weights` / `losses.mis_weights` (--engine-is tis / mis, --engine-is-cap 3) give the weights, and
   `rlhf ppo`'s own `train/ppo.py` `surrogate_loss` the loss with them, on TRL's advantages.

Prints one line per case and a JSON summary; exits 1 when any difference exceeds the tolerance.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src")]

from peer_common import run_peer_script  # noqa: E402
from rlhfkit import losses as L  # noqa: E402
from rlhfkit.train.configs import PPOConfig  # noqa: E402
from rlhfkit.train.ppo import surrogate_loss  # noqa: E402

PEER = Path(os.environ.get("PEER_PYTHON", ROOT / ".venv-peer-latest" / "bin" / "python"))
TOLERANCE = 1e-6


def our_case(given: dict, case: dict, cap: float) -> dict:
    options, mask, old = case["options"], given["mask"], given["old"]
    mis = options["vllm_importance_sampling_mode"] == "sequence_mask"
    weight = (L.mis_weights if mis else L.tis_weights)(old, given["engine"], mask, cap)
    cispo = options["loss_type"] == "cispo"
    high = options.get("epsilon_high", 0.2)
    cfg = PPOConfig(advantage="grpo", max_new_tokens=mask.shape[1], loss_type=options["loss_type"],
                    engine_is="mis" if mis else "tis", engine_is_cap=cap, clip_range_high=high - 1 if cispo else high)
    logp = given["logp"].clone().requires_grad_(True)
    adv = case["advantages"][:, None] * mask  # as train/ppo.py `advantages`: Â on every token of its response
    loss = surrogate_loss(logp, old, old, adv, mask, cfg, 0.0, weight)
    loss.backward()
    trl_weight = case["ratio"].expand_as(mask)  # sequence_mask: one column
    return {"weight_diff": ((weight - trl_weight) * mask).abs().max().item(), "loss": loss.item(),
            "loss_diff": (loss.detach() - case["loss"]).abs().item(),
            "grad_diff": (logp.grad * mask - case["grad"] * mask).abs().max().item(),
            "capped_or_masked": (L.mis_masked_fraction if mis else L.tis_capped_fraction)(old, given["engine"], mask,
                                                                                            cap).item()}


def trl_side() -> dict:
    return run_peer_script(PEER, "peer_engine_is_trl.py", ROOT / "src")


def main(saved: str | None = None) -> int:
    """`saved`: a file bench/peer_engine_is_trl.py wrote (default: run it now)."""
    trl = torch.load(saved) if saved else trl_side()
    cases = [{"case": c["case"], "trl": c["loss"].item(), **our_case(trl["tensors"], c, trl["cap"])}
             for c in trl["cases"]]
    for c in cases:
        print(f"{c['case']:<10} max |diff| weight {c['weight_diff']:.2e}, loss {c['loss_diff']:.2e}, gradient "
              f"{c['grad_diff']:.2e}  loss {c['trl']:+.6f}, capped/masked {c['capped_or_masked']:.3f}")
    worst = max(max(c["weight_diff"], c["loss_diff"], c["grad_diff"]) for c in cases)
    print(json.dumps({"trl": trl["trl"], "cases": len(cases), "max_abs_diff": worst, "tolerance": TOLERANCE}))
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
