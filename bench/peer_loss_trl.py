"""The TRL side of `bench/peer_loss_check.py`, run in `.venv-peer-latest` (TRL 1.16): TRL's GRPOTrainer computes its
own loss and gradient for the loss variants on given tensors, and its soft overlong punishment on given lengths.

    .venv-peer-latest/bin/python bench/peer_loss_trl.py OUT.pt   (from bench/, as peer_grpo_check.py)

As `peer_grpo_check.py`: a real `GRPOTrainer` (tiny random GPT-2, CPU), whose per-token log-prob function is
replaced by one returning a given tensor `logp` (requires grad), runs `_compute_loss` on given old and reference
log-probs, advantages and a ragged completion mask; `loss.backward()` gives d loss / d logp. TRL 1.16's default
`use_bias_correction_kl=True` multiplies the KL term by the ratio (DeepSeek-V3.2), which rlhfkit does not: off here.
Writes the tensors, each case's TRL options, loss and gradient to OUT.pt (float64), for rlhfkit to redo.
"""

from __future__ import annotations

import sys
import tempfile

import torch

from peer_grpo_check import make_trainer

B, T = 8, 6
# (name, TRL GRPOConfig options). CISPO: TRL's epsilon_high is the weight's cap itself, rlhfkit's 1 + ε_high.
CASES = [
    ("dapo token eps 0.2/0.28", dict(loss_type="dapo", epsilon=0.2, epsilon_high=0.28, beta=0.0)),
    ("dapo token eps 0.2/0.28 beta 0.04", dict(loss_type="dapo", epsilon=0.2, epsilon_high=0.28, beta=0.04)),
    ("gspo grpo-mean eps 0.03/0.04", dict(loss_type="grpo", importance_sampling_level="sequence", epsilon=0.03,
                                          epsilon_high=0.04, beta=0.0)),
    ("gspo dapo eps 0.03/0.04 beta 0.04", dict(loss_type="dapo", importance_sampling_level="sequence",
                                               epsilon=0.03, epsilon_high=0.04, beta=0.04)),
    ("cispo token cap 1.2", dict(loss_type="cispo", epsilon_high=1.2, beta=0.0)),
    ("cispo token cap 1.2 beta 0.04", dict(loss_type="cispo", epsilon_high=1.2, beta=0.04)),
    ("cispo sequence cap 1.05", dict(loss_type="cispo", importance_sampling_level="sequence", epsilon_high=1.05,
                                     beta=0.0)),
]
OVERLONG = dict(max_completion_len=10, soft_punish_cache=4)


def tensors() -> dict:
    g = torch.Generator().manual_seed(3)
    logp = (torch.randn(B, T, generator=g) * 0.3 - 1.5).double()
    old = logp + torch.randn(B, T, generator=g).double() * 0.2   # ratios beyond the clip ranges: clipping acts
    ref = logp + torch.randn(B, T, generator=g).double() * 0.3
    adv = torch.randn(B, generator=g).double()
    lengths = torch.tensor([6, 1, 3, 6, 2, 4, 5, 6])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    return dict(logp=logp, old=old, ref=ref, adv=adv, mask=mask)


def trl_loss(tmp: str, given: dict, options: dict) -> tuple[torch.Tensor, torch.Tensor]:
    trainer = make_trainer(tmp, use_bias_correction_kl=False, **options)
    current = given["logp"].clone().requires_grad_(True)

    def given_logps(*args, **kwargs):  # TRL's log-prob function, replaced: these tensors
        return current, torch.zeros_like(current), None
    trainer._get_per_token_logps_and_entropies = given_logps
    ones, mask = torch.ones(B, 2, dtype=torch.long), given["mask"]
    inputs = {"prompt_ids": ones, "prompt_mask": ones, "completion_ids": torch.ones(B, T, dtype=torch.long),
              "completion_mask": mask, "advantages": given["adv"], "old_per_token_logps": given["old"],
              "ref_per_token_logps": given["ref"], "num_items_in_batch": mask.sum()}
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train() for each step
    loss = trainer._compute_loss(trainer.model, inputs)
    loss.backward()
    return loss.detach(), current.grad.detach()


def main(out: str) -> None:
    import trl
    from trl.rewards import get_soft_overlong_punishment

    given, cases = tensors(), []
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in CASES:
            loss, grad = trl_loss(tmp, given, options)
            cases.append({"case": name, "options": options, "loss": loss, "grad": grad})
    lengths = list(range(0, OVERLONG["max_completion_len"] + 4))
    punish = get_soft_overlong_punishment(**OVERLONG)([[7] * n for n in lengths])
    torch.save({"trl": trl.__version__, "tensors": given, "cases": cases, "overlong": OVERLONG,
                "overlong_lengths": torch.tensor(lengths), "overlong_trl": torch.tensor(punish, dtype=torch.float64)},
               out)


if __name__ == "__main__":
    main(sys.argv[1])
