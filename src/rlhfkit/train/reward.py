"""Step 2 of InstructGPT: a reward model from labelers' rankings.

    loss(θ) = −1/C(K,2) · E_{(x, y_w, y_l) ~ D} [ log σ( r_θ(x, y_w) − r_θ(x, y_l) ) ]        (InstructGPT eq. 1)

- r_θ is the SFT model's transformer with a scalar head (`models/scalar.py`), read at the response's last
  real token (its EOS);
- every ranking of K outputs gives its C(K,2) ordered pairs (ties dropped); all pairs of one ranking sit in
  one batch, each weighted 1/C(K,2), so a ranking counts once (InstructGPT §3.5: training on each pair as a
  separate example overfits in one epoch). Each distinct output is scored once per batch, however many
  pairs it is in. A ranking that is one tie group gives no pair and is left out, whether the file holds
  rankings or the pairs `rlhf data pairs` made of them (`losses.preference_loss`);
- `--loss plackett-luce` instead reads each ranking whole, as K−1 successive choices over its tiers
  (`losses.plackett_luce_loss`, Zhu, Jordan & Jiao 2023); held-out accuracy is on the same pairs either way;
- one epoch by default; held-out rankings are split by prompt;
- after training the head's bias is shifted so that demonstrations score 0 on average (InstructGPT §3.5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from rlhfkit.data.chat import Truncation, is_conversation, require_template
from rlhfkit.data.jsonl import read_jsonl, write_jsonl
from rlhfkit.data.pairs import check_tiers, ordered_groups, preference_groups, read_preference_records
from rlhfkit.data.schemas import demo_record
from rlhfkit.errors import UserError
from rlhfkit.models.loading import (
    OLD_HEAD_WEIGHTS,
    check_causal_lm,
    check_lengths,
    check_model_dir,
    load_tokenizer,
    resolve_length,
)
from rlhfkit.models.lora import add_lora, save_scalar_model
from rlhfkit.models.scalar import (
    ScalarModel,
    check_scalar_architecture,
    reading_pad,
    response_sequences,
    score_sequences,
)
from rlhfkit.rewards.accuracy import (
    HELDOUT_FILE,
    batch_loss,
    gold_measurements,
    make_batch,
    pairwise_accuracy,
    tokenize_groups,
)
from rlhfkit.rewards.sources import world_judge
from rlhfkit.runtime.optim import make_optimizer, optimizer_step, progress, warmup_cosine
from rlhfkit.train.checkpoint import Checkpoints
from rlhfkit.train.common import EpochBatches, check_finite, split_by_prompt
from rlhfkit.train.configs import ConvertRMConfig, RewardConfig
from rlhfkit.train.micro import accumulate
from rlhfkit.train.run import Run, start_run

# ------------------------------------------------------------------------------------------- batches

def normalization_offset(model: ScalarModel, tokenizer, prompts: list[str], texts: list[str],
                         max_length: int, packing: bool = False) -> float:
    """Mean RM score of (prompt, demonstration) pairs: subtracted from the bias so they average 0 (`packing`:
    scored packed)."""
    rows = response_sequences(tokenizer, prompts, texts, None, max_length)
    scores = score_sequences(model, rows, tokenizer.pad_token_id, packing=packing)
    return sum(scores) / len(scores)


# --------------------------------------------------------------------------------------------- train

@dataclass
class RewardInputs:
    """What the run reads, once, before any process starts; held-out prompts never reach training."""
    kind: str                  # "rankings" or "pairs" (data/pairs.py)
    train_records: list[dict]
    eval_kind: str
    held_records: list[dict]
    demos: list[dict] | None   # for the bias shift
    gold: Callable | None      # --world: the registered gold judge's r*(x, y) with its components (never trained on)


def read_inputs(cfg: RewardConfig) -> RewardInputs:
    check_model_dir(cfg.model)
    check_causal_lm(cfg.model, "reward model's start (`rlhf rm --model`: the SFT policy, whose LM head is "
                               "replaced by a fresh scalar head)")
    check_scalar_architecture(cfg.model)  # an architecture with no layout to save the RM in: refused before training
    kind, records = read_preference_records(cfg.data, cfg, command="rm")
    if cfg.eval_data:
        (train, (eval_kind, held)) = records, read_preference_records(cfg.eval_data, cfg, command="rm")
    else:
        (train, held), eval_kind = split_by_prompt(records, cfg.eval_fraction, cfg.seed, "rm-eval", "rm"), kind
    if not any(g["pairs"] for g in preference_groups(kind, train)):
        raise UserError(f"{cfg.data}: no strictly ordered pair to train on (every ranking is one tie group)")
    if cfg.loss == "plackett-luce":
        check_tiers(preference_groups(kind, train), cfg.data)
        check_tiers(preference_groups(eval_kind, held), cfg.eval_data or cfg.data)
    return RewardInputs(kind, train, eval_kind, held, read_jsonl(cfg.demos, demo_record) if cfg.demos else None,
                        world_judge(cfg.world).reward if cfg.world else None)


def load_model(cfg: RewardConfig, inputs: RewardInputs, device):
    tokenizer = load_tokenizer(cfg.model, cfg.chat_template)
    model = ScalarModel.from_backbone(cfg.model, tokenizer, seed=cfg.seed)
    limit = check_lengths(cfg.model, model.config, max_length=cfg.max_length)
    cfg.max_length = resolve_length(cfg.max_length, 256, limit)
    rows = check_rankings(cfg, tokenizer, inputs)
    model.backbone = add_lora(model.backbone, cfg, cfg.model)  # LoRA adapts the transformer; the head trains fully
    return tokenizer, model.to(device).train(), rows


def check_rankings(cfg: RewardConfig, tokenizer, inputs: RewardInputs) -> list[list[dict]]:
    """Tokenize every ranking once, before the run starts (the loop trains on these groups): conversational data
    without a chat template, a template error or a row refused by --truncation error stops here; the rows cut are
    counted in one line. Returns the (training, held-out) groups."""
    sets = [(inputs.kind, inputs.train_records, cfg.data), (inputs.eval_kind, inputs.held_records,
                                                             cfg.eval_data or f"{cfg.data} (held out)")]
    if any(is_conversation(r.get("prompt")) for _, records, _ in sets for r in records):
        require_template(tokenizer)
    truncation = Truncation(cfg.max_length, cfg.truncation)
    groups = [tokenize_groups(tokenizer, ordered_groups(preference_groups(kind, records)), cfg.max_length,
                              truncation, source)
              for kind, records, source in sets]
    truncation.report("rm")
    return groups


def train_reward_model(cfg: RewardConfig) -> dict:
    return start_run(cfg, read_inputs, load_model, reward_loop)


def reward_loop(run: Run) -> dict:
    cfg, parallel, device, (tokenizer, model, (train, held)) = run.cfg, run.parallel, run.device, run.models
    total = -(-len(train) // cfg.batch_size) * cfg.epochs
    train_model = parallel.wrap(model)  # the model itself with one process; DDP-wrapped (or FSDP-sharded) with N
    optimizer = make_optimizer(model.parameters(), cfg.lr, cfg.weight_decay)
    schedule = warmup_cosine(optimizer, total, warmup_steps=max(1, int(cfg.warmup_ratio * total)))
    batches = EpochBatches(len(train), cfg.batch_size, cfg.epochs, run.generator)
    checkpoints = Checkpoints(run.dir, parallel, cfg.checkpoint_every, model=model, optimizer=optimizer,
                              schedule=schedule, batches=batches, generator=run.generator)
    step = checkpoints.restore() if cfg.resume else 0
    bar = progress(total, "reward model")
    bar.update(step)

    def make(groups):  # a (micro-)batch of rankings and its units: the rankings its loss is a mean over
        batch = make_batch(groups, tokenizer.pad_token_id, device)
        return batch, batch.n_rankings

    def loss_of(batch):
        loss, margin = batch_loss(train_model, batch, cfg.loss, cfg.packing)
        check_finite(loss, step, "reward-model loss")
        return loss, margin

    for epoch, idx in batches:
        groups = [train[i] for i in parallel.shard(idx)]
        loss, margins = accumulate(parallel, groups, [sum(map(len, g["rows"])) for g in groups],
                                   cfg.max_tokens_per_batch, cfg.packing, make, loss_of)  # the global batch's loss
        margin = torch.cat(margins)
        optimizer_step(optimizer, schedule, model.parameters(), cfg.grad_clip)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % cfg.log_every == 0 or step == total:
            run.dir.log(step, epoch=epoch, train_loss=loss.item(),
                        train_accuracy=parallel.mean((margin > 0).float()).item(), lr=schedule.get_last_lr()[0])
        if step < total:  # the last step's state is the saved model
            checkpoints.maybe_save(step)
    bar.close()
    model = parallel.gather(model)  # FSDP: the full weights, in process 0
    if not parallel.is_main:
        return {}
    return normalize_evaluate_save(run, model.to(device).eval(), step, train, held)


def normalize_evaluate_save(run: Run, model: ScalarModel, step: int, train: list[dict], held: list[dict]) -> dict:
    """Process 0, after training: shift the bias, measure the held-out rankings, save."""
    cfg, tokenizer, data = run.cfg, run.models[0], run.inputs
    # Normalize: demonstrations (or, without them, the training outputs) score 0 on average.
    if data.demos:
        prompts, texts, source = [d["prompt"] for d in data.demos], [d["completion"] for d in data.demos], cfg.demos
    else:
        groups = ordered_groups(preference_groups(data.kind, data.train_records))  # the outputs trained on
        prompts = [g["prompt"] for g in groups for _ in g["completions"]]
        texts = [c for g in groups for c in g["completions"]]
        source = "training outputs"
    offset = normalization_offset(model, tokenizer, prompts, texts, cfg.max_length, cfg.packing)
    model.shift_bias(offset)

    result = {"steps": step, "train_rankings": len(train), "bias_shift": round(offset, 4), "normalized_on": source}
    if held:
        measured = pairwise_accuracy(model, held, tokenizer.pad_token_id, loss=cfg.loss, packing=cfg.packing)
        result |= {"heldout_accuracy": round(measured["accuracy"], 4), "heldout_loss": round(measured["loss"], 4),
                   "n_pairs": measured["n_pairs"], "heldout_rankings": measured["n_rankings"]}
        if data.gold is not None:
            result |= gold_measurements(model, tokenizer, preference_groups(data.eval_kind, data.held_records),
                                        data.gold, cfg.packing)
    run.dir.log(step, **result)
    save_scalar_model(run.dir.path, model, tokenizer, cfg.lora_save)
    if data.held_records:
        write_jsonl(run.dir.path / HELDOUT_FILE, data.held_records)
    run.dir.close()
    print(f"rm: {step} steps on {len(train)} rankings; bias shifted by {offset:+.3f} ({source} score 0)")
    if held:
        line = (f"rm: held-out accuracy {result['heldout_accuracy']:.3f} on {result['n_pairs']} comparisons "
                f"({result['heldout_rankings']} rankings)")
        if "noise_ceiling" in result:
            line += (f"; noise ceiling {result['noise_ceiling']:.3f} on the same comparisons; "
                     f"Spearman with gold {result['spearman_gold']:.3f}")
        print(line)
    print(f"rm -> {run.dir.path}")
    return result


# ------------------------------------------------------------------------------- rlhf data convert-rm

def convert_rm(cfg: ConvertRMConfig) -> None:
    """Rewrite an older rlhfkit RM (or value model) in the standard format (`models/scalar.py`), with the same
    scores: read at the last real token, which the saved pad id (`reading_pad`, never EOS) leaves in place."""
    source = check_model_dir(cfg.source, "reward model")
    if not (source / OLD_HEAD_WEIGHTS).exists():
        raise UserError(f"{source}: no {OLD_HEAD_WEIGHTS}: not an rlhfkit reward model of the older layout "
                        "(a sequence-classifier directory needs no conversion)")
    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out}: exists and is not an empty directory; choose another output directory")
    tokenizer = load_tokenizer(source)
    model = ScalarModel.from_pretrained(source)
    model.pad_token_id = reading_pad(tokenizer)
    save_scalar_model(cfg.out, model, tokenizer)
    print(f"convert-rm: {source} -> {cfg.out} ({type(model.sequence_classifier()).__name__}, num_labels=1, "
          f"pad_token_id {model.pad_token_id})")
