"""The TRL side of `bench/peer_engine_is_check.py`, run in a TRL 1.16 environment: TRL's GRPOTrainer computes its own
vLLM importance-sampling ratios and the loss they weigh, on given engine ("sampling") and trainer log-probs.

    PEER/bin/python bench/peer_engine_is_trl.py OUT.pt   (from bench/, as peer_loss_trl.py)

A real `GRPOTrainer` (tiny random GPT-2, CPU; `peer_grpo_check.make_trainer`) is told it uses vLLM
(`use_vllm = True` once built: construction would load vLLM) and its generation is replaced by one returning given
completions with given per-token sampling log-probs — what vLLM returns; its per-token log-prob function returns
given trainer log-probs (π_old). Its own `_generate_and_score_completions` then computes the ratios
(`importance_sampling_ratio`) for `vllm_importance_sampling_mode` token_truncate (cap 3) and sequence_mask (band
[1/3, 3]), and its own `_compute_loss` the loss on them and d loss / d logp (log-prob function returning a given
tensor that requires grad), for loss_type dapo, grpo and cispo. Writes the tensors and TRL's numbers to OUT.pt.
"""

from __future__ import annotations

import sys
import tempfile

import torch

from peer_grpo_check import REWARDS, K, make_trainer

B, T, CAP = len(REWARDS), 6, 3.0
CASES = [  # (name, TRL GRPOConfig options)
    ("tis dapo", dict(vllm_importance_sampling_mode="token_truncate", loss_type="dapo", epsilon_high=0.28)),
    ("tis grpo", dict(vllm_importance_sampling_mode="token_truncate", loss_type="grpo")),
    ("tis cispo", dict(vllm_importance_sampling_mode="token_truncate", loss_type="cispo", epsilon_high=1.2)),
    ("mis dapo", dict(vllm_importance_sampling_mode="sequence_mask", loss_type="dapo", epsilon_high=0.28,
                      vllm_importance_sampling_clip_min=1 / CAP)),
    ("mis grpo", dict(vllm_importance_sampling_mode="sequence_mask", loss_type="grpo",
                      vllm_importance_sampling_clip_min=1 / CAP)),
]


def tensors() -> dict:
    g = torch.Generator().manual_seed(5)
    logp = (torch.randn(B, T, generator=g) * 0.3 - 1.5).double()
    old = logp + torch.randn(B, T, generator=g).double() * 0.2
    engine = old - torch.randn(B, T, generator=g).double() * 0.6   # r_t = e^{δ}: some beyond the cap 3 (δ > 1.099)
    lengths = torch.tensor([6, 1, 3, 6, 2, 4, 5, 6, 6, 3, 2, 6])
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    engine = engine.float().double()  # as vLLM returns them: float32 values (TRL builds a float32 tensor of them)
    return dict(logp=logp, old=old * mask, engine=engine * mask, mask=mask)


def trl_case(tmp: str, given: dict, options: dict) -> dict:
    trainer = make_trainer(tmp, beta=0.0, vllm_importance_sampling_clip_max=CAP, **options)
    trainer.use_vllm = True
    lengths = given["mask"].sum(-1).tolist()
    token = 7  # any id that is neither EOS nor padding

    def given_generation(prompts):  # what TRL's vLLM generation returns, these completions and sampling log-probs
        completions = [[token] * n for n in lengths]
        logps = [given["engine"][i, :n].tolist() for i, n in enumerate(lengths)]
        return [[token, token]] * B, completions, None, ["w1"] * B, logps, {}, None, None

    current = {"logp": given["old"]}
    trainer._generate = given_generation

    def given_logps(*args, **kwargs):  # TRL's log-prob function, replaced: these tensors (π_old, then π_θ)
        return current["logp"], torch.zeros_like(current["logp"]), None
    trainer._get_per_token_logps_and_entropies = given_logps
    inputs = [{"prompt": f"w{i} w{i + 1}"} for i in range(B // K) for _ in range(K)]
    trainer.model.eval()  # as in training: generation and scoring under no grad
    with torch.no_grad():
        batch = trainer._generate_and_score_completions(inputs)
    current["logp"] = given["logp"].clone().requires_grad_(True)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train() for each step
    loss = trainer._compute_loss(trainer.model, batch)
    loss.backward()
    return {"ratio": batch["importance_sampling_ratio"].double(), "advantages": batch["advantages"].double(),
            "loss": loss.detach(), "grad": current["logp"].grad.detach()}


def main(out: str) -> None:
    import trl

    given, cases = tensors(), []
    with tempfile.TemporaryDirectory() as tmp:
        for name, options in CASES:
            cases.append({"case": name, "options": options, **trl_case(tmp, given, options)})
    torch.save({"trl": trl.__version__, "tensors": given, "cap": CAP, "cases": cases}, out)


if __name__ == "__main__":
    main(sys.argv[1])
