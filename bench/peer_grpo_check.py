"""GRPO's numbers against TRL's GRPOTrainer on identical tensors: advantages and loss, max |difference| ≤ 1e-6.

Run under `.venv-peer-latest` (TRL 1.16) with rlhfkit's source on the path; `rlhfkit.losses` needs only torch:

    PYTHONPATH=src .venv-peer-latest/bin/python bench/peer_grpo_check.py

1. Advantages. A real `GRPOTrainer` (a tiny random GPT-2 on the CPU, k = 4 samples of 3 prompts) runs its own
   `_generate_and_score_completions` on a batch whose reward function returns fixed numbers (ties and a constant
   group included); the `advantages` it returns are compared with `losses.grpo_advantages` of the same numbers, for
   `scale_rewards` group, batch and none (Dr. GRPO).
2. Loss. TRL's own `_compute_loss`, its per-token log-prob function replaced by one returning given tensors,
   on given old and reference log-probs, advantages and a ragged completion mask, for `loss_type` grpo, bnpo and
   dr_grpo, with β = 0 and β = 0.04 (the KL as a loss term, k3 as in GRPO's paper: TRL 1.16's default
   `use_bias_correction_kl=True` multiplies it by the ratio π_θ/π_old (DeepSeek-V3.2), which rlhfkit does not, so
   the check turns it off); compared with what `rlhf ppo` computes
   (`train/ppo.py` `surrogate_loss`: `losses.clipped_surrogate_terms` + β·`losses.kl_k3`, `losses.aggregate_loss`).

Prints one line per case and a JSON summary; exits 1 when any difference exceeds the tolerance.
"""

from __future__ import annotations

import json
import sys
import tempfile
import types

import torch

from peer_common import gpt2_config, tokenizer
from rlhfkit import losses as L

TOLERANCE = 1e-6
K, MAX_LEN = 4, 6
REWARDS = [1.0, 2.0, 3.0, 6.0, 0.5, 0.5, 0.5, 0.5, -1.0, 0.25, 0.25, 2.0]  # 3 prompts x 4 samples


def fixed_reward(prompts, completions, **kwargs):
    return REWARDS[:len(completions)]


def make_trainer(tmp: str, **options):
    from datasets import Dataset
    from transformers import GPT2LMHeadModel
    from trl import GRPOConfig, GRPOTrainer

    tok = tokenizer(64)
    torch.manual_seed(0)
    model = f"{tmp}/policy"  # saved: with β > 0 TRL loads its reference model from the policy's path
    GPT2LMHeadModel(gpt2_config(types.SimpleNamespace(dim=32, layers=1, heads=2), tok, 64)).save_pretrained(model)
    args = GRPOConfig(output_dir=tmp, per_device_train_batch_size=len(REWARDS), num_generations=K,
                      max_completion_length=MAX_LEN, report_to=[], use_cpu=True, logging_steps=1, **options)
    data = Dataset.from_list([{"prompt": f"w{i} w{i + 1}"} for i in range(3)])
    return GRPOTrainer(model=model, reward_funcs=fixed_reward, args=args, train_dataset=data,
                       processing_class=tok)


def check_advantages(tmp: str) -> list[dict]:
    out = []
    for scale in ("group", "batch", "none"):
        trainer = make_trainer(tmp, scale_rewards=scale)
        inputs = [{"prompt": f"w{i} w{i + 1}"} for i in range(3) for _ in range(K)]  # as TRL's RepeatSampler
        trl = trainer._generate_and_score_completions(inputs)["advantages"].double()
        ours = L.grpo_advantages(torch.tensor(REWARDS, dtype=torch.float64), K, scale)
        out.append({"case": f"advantages scale_rewards={scale}", "max_abs_diff": (trl - ours).abs().max().item()})
    return out


def check_losses(tmp: str) -> list[dict]:
    torch.manual_seed(1)
    b, t = 6, MAX_LEN
    logp = (torch.randn(b, t) * 0.3 - 1.5).double()
    old = logp + torch.randn(b, t).double() * 0.2   # ratios beyond 1 ± ε: the clip acts
    ref = logp + torch.randn(b, t).double() * 0.3
    adv = torch.randn(b).double()
    lengths = torch.tensor([6, 1, 3, 6, 2, 4])
    mask = (torch.arange(t)[None, :] < lengths[:, None]).long()
    out = []
    for loss_type in ("grpo", "bnpo", "dr_grpo"):
        for beta in (0.0, 0.04):
            trainer = make_trainer(tmp, loss_type=loss_type, beta=beta, use_bias_correction_kl=False)
            current = logp.clone().requires_grad_(True)

            def given_logps(*args, current=current, **kwargs):  # TRL's log-prob function, replaced: these tensors
                return current, torch.zeros_like(current), None
            trainer._get_per_token_logps_and_entropies = given_logps
            ones = torch.ones(b, 2, dtype=torch.long)
            inputs = {"prompt_ids": ones, "prompt_mask": ones, "completion_ids": torch.ones(b, t, dtype=torch.long),
                      "completion_mask": mask,
                      "advantages": adv, "old_per_token_logps": old, "ref_per_token_logps": ref,
                      "num_items_in_batch": mask.sum()}
            trainer.model.train()
            trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train() for each step
            trl = trainer._compute_loss(trainer.model, inputs).detach()
            terms = L.clipped_surrogate_terms(logp, old, adv[:, None], 0.2) + beta * L.kl_k3(logp, ref)
            ours = L.aggregate_loss(terms, mask, loss_type, MAX_LEN)
            out.append({"case": f"loss loss_type={loss_type} beta={beta}", "trl": trl.item(), "ours": ours.item(),
                        "max_abs_diff": abs(trl.item() - ours.item())})
    return out


def main() -> int:
    import trl
    with tempfile.TemporaryDirectory() as tmp:
        cases = check_advantages(tmp) + check_losses(tmp)
    for c in cases:
        print(f"{c['case']:<40} max |diff| {c['max_abs_diff']:.2e}")
    worst = max(c["max_abs_diff"] for c in cases)
    print(json.dumps({"trl": trl.__version__, "cases": len(cases), "max_abs_diff": worst, "tolerance": TOLERANCE}))
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
