"""Direct preference optimization: the policy trained on rankings directly, with no reward model and no sampling.

    L_DPO(θ) = −E_{(x, y_w, y_l)} [ log σ( β·log(π_θ(y_w|x)/π_ref(y_w|x)) − β·log(π_θ(y_l|x)/π_ref(y_l|x)) ) ]
                                                                                 (Rafailov et al. 2023, eq. 7)

It is the reward model's loss (InstructGPT eq. 1) with the implicit reward r̂(x, y) = β·log(π_θ(y|x) / π_ref(y|x))
in place of r_θ(x, y): maximizing it solves the KL-constrained objective that PPO optimizes by sampling.

- π_ref is the SFT policy, frozen, and the start of π_θ; its log-probs of every output are computed once, before
  training. log π(y|x) sums the log-probs of the response tokens (and its EOS, when it ended), as SFT's loss does;
- the data path is the reward model's: rankings (or pairs) → tie-grouped pairs (`data/pairs.py`), all pairs of a
  ranking in one batch weighted 1/C(K,2), held-out rankings split by prompt with the reward model's split, so the
  held-out preference accuracy of r̂ compares with the RM's on the same comparisons;
- `--loss plackett-luce`: DPO's listwise form (Rafailov et al. 2023, App. A.3), each ranking's Plackett–Luce
  likelihood over its tiers with r̂ as the reward (`losses.dpo_plackett_luce_loss`);
- the output is `save_pretrained` of the policy and its tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhfkit.data.chat import Truncation, completion_ids, is_conversation, prompt_ids, require_template, stop_ids
from rlhfkit.data.collate import pad_rankings, pad_right
from rlhfkit.data.pairs import (
    check_tiers,
    ordered_groups,
    pair_weight,
    preference_groups,
    read_preference_records,
)
from rlhfkit.errors import UserError
from rlhfkit.losses import dpo_loss, dpo_margin, dpo_plackett_luce_loss, masked_sum, token_logprobs
from rlhfkit.models import packing as pk
from rlhfkit.models.loading import (
    check_lengths,
    disable_dropout,
    load_causal_lm,
    load_tokenizer,
    resolve_length,
    save_dtype,
)
from rlhfkit.models.lora import AdaptersOff, add_lora, has_lora, save_model
from rlhfkit.runtime.optim import make_optimizer, optimizer_step, progress, warmup_cosine
from rlhfkit.storage import save_pretrained_atomic
from rlhfkit.train.checkpoint import Checkpoints
from rlhfkit.train.common import EpochBatches, check_finite, split_by_prompt
from rlhfkit.train.configs import DPOConfig
from rlhfkit.train.micro import accumulate
from rlhfkit.train.run import Run, start_run

# ------------------------------------------------------------------------------------------- batches

@dataclass
class PairBatch:
    """Every output of some rankings as one right-padded batch, and their pairs as indices into it."""
    input_ids: torch.Tensor       # [S, T] prompt + response (+ EOS when it ended)
    attention_mask: torch.Tensor
    response_mask: torch.Tensor   # [S, T] 1 on the tokens of y (and EOS): the terms of log π(y|x)
    ref_logp: torch.Tensor | None  # [S] log π_ref(y|x), once computed
    chosen: torch.Tensor          # [P] row of y_w
    rejected: torch.Tensor        # [P] row of y_l
    weight: torch.Tensor          # [P] 1/C(K,2) of the pair's ranking
    n_rankings: int
    items: torch.Tensor | None = None  # [R, K] row of each output of each ranking (0 on padding)
    tiers: torch.Tensor | None = None  # [R, K] each output's tier, 0 best, −1 on padding; None: not all rankings


def tokenize(tokenizer, groups: list[dict], max_length: int, truncation: Truncation | None = None,
             source: str = "rankings") -> list[dict]:
    """Each ranking's outputs as (ids, response mask) in SFT's layout (`data/chat.py`: the response's tokens and
    its stop token — none when it was cut at the length limit), tokenized once, beside its pairs and their
    weight 1/C(K,2)."""
    out = []
    truncation = truncation or Truncation(max_length)
    stops = stop_ids(tokenizer, None, True) if any(is_conversation(g["prompt"]) for g in groups) else None
    for i, g in enumerate(groups):
        prompt, rows = prompt_ids(tokenizer, g["prompt"]), []
        where = f"{source}: {'id ' + g['id'] if isinstance(g.get('id'), str) else f'ranking {i + 1}'}"
        for text, ended in zip(g["completions"], g["finished"]):
            target = completion_ids(tokenizer, g["prompt"], text, ended, prompt, stops)
            head, target = truncation.pair(prompt, target, tokenizer.bos_token_id, where)
            rows.append((head + target, [0] * len(head) + [1] * len(target)))
        out.append({"rows": rows, "pairs": g["pairs"], "weight": pair_weight(len(rows)), "ref_logp": None,
                    "tiers": g.get("tiers")})
    return out


def make_batch(groups: list[dict], pad_id: int, device) -> PairBatch:
    rows, chosen, rejected, weight, items = [], [], [], [], []
    for g in groups:
        chosen += [len(rows) + w for w, _ in g["pairs"]]
        rejected += [len(rows) + l for _, l in g["pairs"]]
        weight += [g["weight"]] * len(g["pairs"])
        items.append(list(range(len(rows), len(rows) + len(g["rows"]))))
        rows += g["rows"]
    ids = [r[0] for r in rows]
    ref = torch.cat([g["ref_logp"] for g in groups]).to(device) if groups[0]["ref_logp"] is not None else None
    return PairBatch(pad_right(ids, pad_id).to(device), pad_right([[1] * len(i) for i in ids], 0).to(device),
                     pad_right([r[1] for r in rows], 0).to(device), ref, torch.tensor(chosen, device=device),
                     torch.tensor(rejected, device=device), torch.tensor(weight, device=device),
                     len(ordered_groups(groups)), *pad_rankings(groups, items, device))


def in_order(groups: list[dict], size: int) -> list[list[dict]]:
    """Fixed chunks: π_ref and held-out π_θ see identical batches, so π_θ = π_ref gives a margin of exactly 0."""
    return [groups[i:i + size] for i in range(0, len(groups), size)]


# ------------------------------------------------------------------------------------------- the loss

def sequence_logprobs(model, batch: PairBatch, packing: bool = False) -> torch.Tensor:
    """log π(y|x) = Σ_t log π(y_t | x, y_<t) of each row [S]: logits at t−1 predict token t. `packing`: the rows
    packed without padding (`models/packing.py`), the same sums."""
    if packing and pk.supports_packing(model):
        p = pk.pack_for(model, batch.input_ids, batch.attention_mask)
        return masked_sum(pk.next_token_logprobs(pk.forward(model, p).logits, p), batch.response_mask[:, 1:], dim=-1)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    logp = token_logprobs(logits[:, :-1], batch.input_ids[:, 1:])
    return masked_sum(logp, batch.response_mask[:, 1:], dim=-1)


@torch.no_grad()
def attach_reference_logprobs(reference, groups: list[dict], pad_id: int, device, size: int,
                              packing: bool = False) -> None:
    """log π_ref(y|x) of every output, once: π_ref is frozen, so it never needs a forward pass again."""
    for chunk in in_order(groups, size):
        logp = sequence_logprobs(reference, make_batch(chunk, pad_id, device), packing).cpu()
        for g, part in zip(chunk, logp.split([len(g["rows"]) for g in chunk])):
            g["ref_logp"] = part


def batch_loss(policy, batch: PairBatch, beta: float, loss: str = "pairwise",
               packing: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(the weighted DPO loss — or with `loss="plackett-luce"` its listwise form —, the implicit reward margin
    r̂(x, y_w) − r̂(x, y_l) per pair)."""
    logp, ref = sequence_logprobs(policy, batch, packing), batch.ref_logp
    w, l = batch.chosen, batch.rejected
    if loss == "plackett-luce":
        value = dpo_plackett_luce_loss(logp[batch.items], ref[batch.items], batch.tiers, batch.n_rankings, beta)
    else:
        value = dpo_loss(logp[w], logp[l], ref[w], ref[l], batch.weight, batch.n_rankings, beta)
    return value, dpo_margin(logp[w], logp[l], ref[w], ref[l], beta).detach()


@torch.no_grad()
def heldout_metrics(policy, groups: list[dict], pad_id: int, device, size: int, beta: float,
                    loss: str = "pairwise", packing: bool = False) -> dict:
    """Share of held-out pairs the implicit reward orders as the labeler did (a tie counts ½), the mean margin
    r̂(x, y_w) − r̂(x, y_l) and the mean loss per ranking. `packing` must be what `attach_reference_logprobs` ran
    with: then π_θ = π_ref sees the very same packed batches and its margins are exactly 0 (accuracy ½), not
    the rounding noise between a packed and a padded forward pass."""
    correct, margins, loss = 0.0, [], 0.0
    for chunk in in_order(groups, size):
        value, margin = batch_loss(policy, make_batch(chunk, pad_id, device), beta, loss, packing)
        correct += float((margin > 0).sum() + 0.5 * (margin == 0).sum())
        margins.append(margin)
        loss += value.item() * len(chunk)
    margin = torch.cat(margins)
    return {"heldout_accuracy": correct / max(1, len(margin)), "heldout_margin": margin.mean().item(),
            "heldout_loss": loss / max(1, len(groups)), "n_pairs": len(margin), "heldout_rankings": len(groups)}


# --------------------------------------------------------------------------------------------- train

def read_groups(cfg: DPOConfig) -> tuple[list[dict], list[dict]]:
    """(training groups, held-out groups); held-out prompts never reach training."""
    kind, records = read_preference_records(cfg.data, cfg, command="dpo")
    if cfg.eval_data:
        train = preference_groups(kind, records)
        held = preference_groups(*read_preference_records(cfg.eval_data, cfg, command="dpo"))
    else:
        train, held = split_by_prompt(records, cfg.eval_fraction, cfg.seed, "rm-eval", "dpo")  # the RM's split
        train, held = preference_groups(kind, train), preference_groups(kind, held)
    train, held = ordered_groups(train), ordered_groups(held)  # one tie group: no preference (losses.preference_loss)
    if not train:
        raise UserError(f"{cfg.data}: no strictly ordered pair to train on (every ranking is one tie group)")
    if cfg.loss == "plackett-luce":
        check_tiers(train, cfg.data)
        check_tiers(held, cfg.eval_data or cfg.data)
    return train, held


def load_models(cfg: DPOConfig, inputs, device):
    """(tokenizer, π_θ, π_ref, the tokenized (training, held-out) groups): π_ref = π_SFT, frozen — with LoRA the
    weights under the policy's adapters."""
    tokenizer = load_tokenizer(cfg.policy, cfg.chat_template)
    policy = add_lora(disable_dropout(load_causal_lm(cfg.policy, tokenizer)), cfg, cfg.policy).to(device).train()
    limit = check_lengths(cfg.policy, policy.config, max_length=cfg.max_length)
    cfg.max_length = resolve_length(cfg.max_length, 256, limit)
    rows = check_groups(cfg, tokenizer, inputs)
    if has_lora(policy):
        reference = AdaptersOff(policy)
    else:
        reference = disable_dropout(load_causal_lm(cfg.policy, tokenizer)).to(device).eval()
    return tokenizer, policy, reference, rows


def check_groups(cfg: DPOConfig, tokenizer, inputs) -> list[list[dict]]:
    """Tokenize every ranking once, before the run starts (see reward.check_rankings); the loop trains on them."""
    if any(is_conversation(g["prompt"]) for groups in inputs for g in groups):
        require_template(tokenizer)
    truncation = Truncation(cfg.max_length, cfg.truncation)
    rows = [tokenize(tokenizer, groups, cfg.max_length, truncation, source)
            for groups, source in zip(inputs, (cfg.data, cfg.eval_data or f"{cfg.data} (held out)"))]
    truncation.report("dpo")
    return rows


def train_dpo(cfg: DPOConfig) -> dict:
    return start_run(cfg, read_groups, load_models, dpo_loop)


def dpo_loop(run: Run) -> dict:
    cfg, parallel, device, (tokenizer, policy, reference, (train, held)) = run.cfg, run.parallel, run.device, run.models
    pad = tokenizer.pad_token_id
    # π_ref under the policy's --bf16 autocast: a policy equal to its reference has margin 0 (loss ln 2) at the start
    parallel.autocast(reference.model if isinstance(reference, AdaptersOff) else reference)
    for groups in (train, held):
        attach_reference_logprobs(reference, groups, pad, device, cfg.batch_size, cfg.packing)
    run.models = tokenizer, policy, None, (train, held)  # π_ref's log-probs are attached: the model can go
    del reference
    total = -(-len(train) // cfg.batch_size) * cfg.epochs
    train_policy = parallel.wrap(policy)  # the policy itself with one process; DDP-wrapped (or FSDP-sharded) with N
    optimizer = make_optimizer(policy.parameters(), cfg.lr, cfg.weight_decay)
    schedule = warmup_cosine(optimizer, total, warmup_steps=max(1, int(cfg.warmup_ratio * total)))
    batches = EpochBatches(len(train), cfg.batch_size, cfg.epochs, run.generator)
    checkpoints = Checkpoints(run.dir, parallel, cfg.checkpoint_every, policy=policy, optimizer=optimizer,
                              schedule=schedule, batches=batches, generator=run.generator)
    step = checkpoints.restore() if cfg.resume else 0
    bar, result = progress(total, "dpo"), {}
    bar.update(step)

    def make(groups):  # a (micro-)batch of rankings and its units: the rankings its loss is a mean over
        batch = make_batch(groups, pad, device)
        return batch, batch.n_rankings

    def loss_of(batch):
        loss, margin = batch_loss(train_policy, batch, cfg.beta, cfg.loss, cfg.packing)
        check_finite(loss, step, "DPO loss")
        return loss, margin

    for epoch, idx in batches:
        groups = [train[i] for i in parallel.shard(idx)]
        loss, margins = accumulate(parallel, groups, [sum(len(r[0]) for r in g["rows"]) for g in groups],
                                   cfg.max_tokens_per_batch, cfg.packing, make, loss_of)  # the global batch's loss
        margin = torch.cat(margins)
        optimizer_step(optimizer, schedule, policy.parameters(), cfg.grad_clip)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % cfg.log_every == 0 or step == total:
            accuracy = parallel.mean((margin > 0).float()).item()
            run.dir.log(step, epoch=epoch, train_loss=loss.item(), train_accuracy=accuracy,
                        train_margin=parallel.mean(margin).item(), lr=schedule.get_last_lr()[0])
        if cfg.save_every and step % cfg.save_every == 0 and step < total:  # e.g. for √KL curves
            save_snapshot(run, policy, step)
        if batches.end_of_epoch and held and parallel.evaluates:  # FSDP: every process runs the sharded forward
            result = run.dir.log(step, epoch=epoch, **heldout_metrics(policy, held, pad, device, cfg.batch_size,
                                                                        cfg.beta, cfg.loss, cfg.packing))
        if step < total:  # the last step's state is the saved model
            checkpoints.maybe_save(step)
    bar.close()
    return finish(run, parallel.gather(policy), step, loss.item(), result, len(train), bool(held))


def save_snapshot(run: Run, policy, step: int) -> None:
    """OUT/checkpoints/step-N: the policy mid-run (FSDP: gathered whole, in process 0)."""
    snapshot = run.parallel.gather(policy)
    if run.parallel.is_main:
        save_pretrained_atomic(run.dir.path / "checkpoints" / f"step-{step}", snapshot, run.models[0])


def finish(run: Run, policy, step: int, loss: float, result: dict, n_train: int, held: bool) -> dict:
    """Process 0 saves the policy and reports."""
    if not run.parallel.is_main:
        return {}
    cfg = run.cfg
    policy.eval()
    save_model(run.dir.path, policy, run.models[0], cfg.lora_save, save_dtype(cfg.dtype, cfg.policy))
    run.dir.close()
    summary = {"steps": step, "train_rankings": n_train, "beta": cfg.beta, "train_loss": round(loss, 4)}
    summary |= {k: v for k, v in result.items() if k not in ("step", "time_s", "epoch")}
    print(f"dpo: {step} steps on {n_train} rankings, β = {cfg.beta}; final train loss {summary['train_loss']}")
    if held:
        print(f"dpo: held-out preference accuracy of the implicit reward {summary['heldout_accuracy']:.3f}, "
              f"mean margin {summary['heldout_margin']:+.4f}, loss {summary['heldout_loss']:.4f} on "
              f"{summary['n_pairs']} comparisons ({summary['heldout_rankings']} rankings)")
    print(f"dpo -> {run.dir.path}")
    return summary
