"""The loss variants against TRL 1.16's GRPOTrainer on identical tensors: DAPO, GSPO, CISPO, max |difference| of the
loss and of its gradient ≤ 1e-6, and DAPO's soft overlong punishment.

    .venv/bin/python bench/peer_loss_check.py [TRL_SIDE.pt]   (needs .venv-peer-latest: `make bench` builds it)

1. In `.venv-peer-latest`, bench/peer_loss_trl.py runs TRL's own `_compute_loss` on given log-probs (its log-prob
   function replaced by one returning them), old and reference log-probs, advantages and a ragged mask, for
   loss_type dapo (ε 0.2/0.28, β 0 and 0.04), GSPO (importance_sampling_level="sequence" with loss_type grpo, the
   paper's mean over responses, and dapo) and cispo (token and sequence level), and TRL's
   `get_soft_overlong_punishment` on lengths 0..13; it saves loss, d loss / d logp and the tensors.
2. Here, `rlhf ppo`'s own `train/ppo.py` `surrogate_loss` (with `--loss-type`, `--importance-level`,
   `--clip-range`, `--clip-range-high`, β·k3 in the loss) computes the same loss and gradient; `losses.
   soft_overlong_punishment` the same rewards. CISPO's cap: TRL's epsilon_high is 1 + rlhfkit's ε_high.

Prints one line per case and a JSON summary; exits 1 when any difference exceeds the tolerance.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src")]

from peer_common import run_peer_script  # noqa: E402
from rlhfkit import losses as L  # noqa: E402
from rlhfkit.train.configs import PPOConfig  # noqa: E402
from rlhfkit.train.ppo import surrogate_loss  # noqa: E402

PEER_LATEST = ROOT / ".venv-peer-latest" / "bin" / "python"
TOLERANCE = 1e-6


def our_config(options: dict, max_length: int) -> PPOConfig:
    """TRL's GRPOConfig options as `rlhf ppo` flags."""
    cispo = options["loss_type"] == "cispo"
    return PPOConfig(advantage="grpo", kl_in="loss", max_new_tokens=max_length, loss_type=options["loss_type"],
                     importance_level=options.get("importance_sampling_level", "token"),
                     clip_range=options.get("epsilon", 0.2),
                     clip_range_high=options["epsilon_high"] - 1 if cispo else options["epsilon_high"])


def our_loss(given: dict, options: dict) -> tuple[torch.Tensor, torch.Tensor]:
    logp, mask = given["logp"].clone().requires_grad_(True), given["mask"]
    cfg = our_config(options, mask.shape[1])
    adv = given["adv"][:, None] * mask  # as train/ppo.py `advantages`: Â on every token of its response
    loss = surrogate_loss(logp, given["old"] * mask, given["ref"] * mask, adv, mask, cfg, options["beta"])
    loss.backward()
    return loss.detach(), logp.grad * mask  # TRL's gradient is 0 on padding too (its terms there are masked)


def trl_side() -> dict:
    return run_peer_script(PEER_LATEST, "peer_loss_trl.py", ROOT / "src")


def main(saved: str | None = None) -> int:
    """`saved`: a file bench/peer_loss_trl.py wrote (default: run it now)."""
    trl = torch.load(saved) if saved else trl_side()
    given, cases = trl["tensors"], []
    for case in trl["cases"]:
        loss, grad = our_loss(given, case["options"])
        cases.append({"case": case["case"], "trl": case["loss"].item(), "ours": loss.item(),
                      "loss_diff": (loss - case["loss"]).abs().item(),
                      "grad_diff": (grad - case["grad"]).abs().max().item(),
                      "zero_grad_tokens": int(((case["grad"] == 0) & given["mask"].bool()).sum())})
    ours = L.soft_overlong_punishment(trl["overlong_lengths"], **{"max_length": trl["overlong"]["max_completion_len"],
                                                                 "cache": trl["overlong"]["soft_punish_cache"]})
    cases.append({"case": "soft overlong punishment", "loss_diff": (ours.double() - trl["overlong_trl"]).abs().max()
                  .item(), "grad_diff": 0.0})
    for c in cases:
        extra = f"  loss {c['trl']:+.6f}, tokens with no gradient {c['zero_grad_tokens']}" if "trl" in c else ""
        print(f"{c['case']:<36} max |diff| loss {c['loss_diff']:.2e}, gradient {c['grad_diff']:.2e}{extra}")
    worst = max(max(c["loss_diff"], c["grad_diff"]) for c in cases)
    print(json.dumps({"trl": trl["trl"], "cases": len(cases), "max_abs_diff_loss": max(c["loss_diff"] for c in cases),
                      "max_abs_diff_grad": max(c["grad_diff"] for c in cases), "max_abs_diff": worst,
                      "tolerance": TOLERANCE}))
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
