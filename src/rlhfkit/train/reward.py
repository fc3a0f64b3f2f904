"""Step 2 of InstructGPT: a reward model from labelers' rankings.

    loss(θ) = −1/C(K,2) · E_{(x, y_w, y_l) ~ D} [ log σ( r_θ(x, y_w) − r_θ(x, y_l) ) ]        (InstructGPT eq. 1)

- r_θ is the SFT model's transformer with a scalar head (`models/scalar.py`), read at the response's last
  real token (its EOS);
- every ranking of K outputs gives its C(K,2) ordered pairs (ties dropped); all pairs of one ranking sit in
  one batch, each weighted 1/C(K,2), so a ranking counts once (InstructGPT §3.5: training on each pair as a
  separate example overfits in one epoch). Each distinct output is scored once per batch, however many
  pairs it is in;
- one epoch by default; held-out rankings are split by prompt;
- after training the head's bias is shifted so that demonstrations score 0 on average (InstructGPT §3.5).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from rlhfkit.config import check_at_least, check_positive, option, required
from rlhfkit.data.chat import Truncation, is_conversation, require_template
from rlhfkit.data.collate import pad_right
from rlhfkit.data.jsonl import read_jsonl, write_jsonl
from rlhfkit.data.pairs import pair_weight, preference_groups, read_preference_records
from rlhfkit.data.readers import DataOptions
from rlhfkit.data.schemas import demo_record
from rlhfkit.errors import UserError
from rlhfkit.eval.rm import gold_measurements
from rlhfkit.losses import preference_loss
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
from rlhfkit.train.checkpoint import Checkpoints
from rlhfkit.train.common import (
    EpochBatches,
    RunOptions,
    check_finite,
    make_optimizer,
    optimizer_step,
    progress,
    split_by_prompt,
    warmup_cosine,
)
from rlhfkit.train.ppo_rewards import world_judge
from rlhfkit.train.run import Run, start_run

HELDOUT_FILE = "heldout.jsonl"


@dataclass
class RewardConfig(RunOptions, DataOptions):
    model: str | None = required("SFT policy directory: the RM's backbone (its LM head is replaced by a scalar)")
    data: str | None = required("rankings or pairs JSONL (docs/design.md §2)")
    eval_data: str | None = option(None, "held-out rankings/pairs (default: hold out eval_fraction of prompts)")
    eval_fraction: float = option(0.1, "share of distinct prompts held out when eval_data is not given")
    demos: str | None = option(None, "demonstrations JSONL: the bias is shifted so they score 0 on average "
                               "(default: the training outputs)")
    world: str | None = option(None, "toy world: also report the noise ceiling and Spearman with gold")
    epochs: int = option(1, "passes over the rankings (InstructGPT: 1; more overfits)")
    batch_size: int = option(16, "rankings per optimizer step (all pairs of a ranking in one batch)")
    lr: float = option(1e-4, "peak learning rate")
    weight_decay: float = option(0.0, "AdamW weight decay")
    warmup_ratio: float = option(0.05, "share of steps spent warming the learning rate up")
    max_length: int | None = option(None, "tokens per prompt + response (prompt cut on the left, the response on "
                                    "the right; default 256, or the model's position limit when lower)")
    grad_clip: float = option(1.0, "gradient norm clipping")
    log_every: int = option(10, "log every N steps")

    def check(self) -> None:
        super().check()
        check_at_least(self, 1, "epochs", "batch_size", "max_length", "log_every")
        check_positive(self, "lr")
        if not 0 <= self.eval_fraction < 1:
            raise UserError("config key 'eval_fraction' must be in [0, 1)")


# ------------------------------------------------------------------------------------------- batches

@dataclass
class RankingBatch:
    """The distinct sequences of some rankings, and their pairs as indices into those sequences."""
    input_ids: torch.Tensor     # [S, T] right-padded prompt + response (+ EOS when it ended)
    attention_mask: torch.Tensor
    chosen: torch.Tensor        # [P] sequence index of y_w
    rejected: torch.Tensor      # [P] sequence index of y_l
    weight: torch.Tensor        # [P] 1/C(K,2) of the pair's ranking
    n_rankings: int


def tokenize_groups(tokenizer, groups: list[dict], max_length: int, truncation: Truncation | None = None,
                    source: str = "rankings") -> list[dict]:
    """Each group's outputs as token ids (tokenized once, `response_sequences`), beside its pairs and weight."""
    out = []
    truncation = truncation or Truncation(max_length)
    for i, g in enumerate(groups):
        prompts = [g["prompt"]] * len(g["completions"])
        where = f"{source}: {'id ' + g['id'] if isinstance(g.get('id'), str) else f'ranking {i + 1}'}"
        rows = response_sequences(tokenizer, prompts, g["completions"], g["finished"], max_length, truncation,
                                  where)
        out.append({"rows": rows, "pairs": g["pairs"], "weight": pair_weight(len(g["completions"]))})
    return out


def make_batch(groups: list[dict], pad_id: int, device) -> RankingBatch:
    index: dict[tuple[int, ...], int] = {}  # an output ranked by two labelers is scored once
    chosen, rejected, weight = [], [], []
    for g in groups:
        at = [index.setdefault(tuple(row), len(index)) for row in g["rows"]]
        for w, l in g["pairs"]:
            chosen.append(at[w]), rejected.append(at[l]), weight.append(g["weight"])
    rows = [list(row) for row in index]
    return RankingBatch(pad_right(rows, pad_id).to(device), pad_right([[1] * len(r) for r in rows], 0).to(device),
                        torch.tensor(chosen, device=device), torch.tensor(rejected, device=device),
                        torch.tensor(weight, device=device), len(groups))


def batch_loss(model: ScalarModel, batch: RankingBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """(the weighted pairwise loss, r_w − r_l per pair)."""
    rewards = model.score(batch.input_ids, batch.attention_mask)
    r_w, r_l = rewards[batch.chosen], rewards[batch.rejected]
    return preference_loss(r_w, r_l, batch.weight, batch.n_rankings), (r_w - r_l).detach()


@torch.no_grad()
def pairwise_accuracy(model: ScalarModel, groups: list[dict], pad_id: int, batch_size: int = 32) -> dict:
    """Share of held-out pairs the RM orders as the labeler did (a tie counts ½), and the mean loss."""
    device = next(model.parameters()).device
    correct, pairs, loss, rankings = 0.0, 0, 0.0, 0
    for start in range(0, len(groups), batch_size):
        batch = make_batch(groups[start:start + batch_size], pad_id, device)
        value, margin = batch_loss(model, batch)
        correct += float((margin > 0).sum() + 0.5 * (margin == 0).sum())
        pairs += len(margin)
        loss += value.item() * batch.n_rankings
        rankings += batch.n_rankings
    return {"accuracy": correct / max(1, pairs), "loss": loss / max(1, rankings), "n_pairs": pairs,
            "n_rankings": rankings}


def normalization_offset(model: ScalarModel, tokenizer, prompts: list[str], texts: list[str],
                         max_length: int) -> float:
    """Mean RM score of (prompt, demonstration) pairs: subtracted from the bias so they average 0."""
    rows = response_sequences(tokenizer, prompts, texts, None, max_length)
    scores = score_sequences(model, rows, tokenizer.pad_token_id)
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
        (train, held), eval_kind = split_by_prompt(records, cfg.eval_fraction, cfg.seed, "rm-eval"), kind
    if not any(g["pairs"] for g in preference_groups(kind, train)):
        raise UserError(f"{cfg.data}: no strictly ordered pair to train on (every ranking is one tie group)")
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
    groups = [tokenize_groups(tokenizer, preference_groups(kind, records), cfg.max_length, truncation, source)
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
    for epoch, idx in batches:
        batch = make_batch([train[i] for i in parallel.shard(idx)], tokenizer.pad_token_id, device)
        loss, margin = batch_loss(train_model, batch)
        check_finite(loss, step, "reward-model loss")
        loss = parallel.backward(loss, units=batch.n_rankings)  # the global batch's loss
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
        groups = preference_groups(data.kind, data.train_records)
        prompts = [g["prompt"] for g in groups for _ in g["completions"]]
        texts = [c for g in groups for c in g["completions"]]
        source = "training outputs"
    offset = normalization_offset(model, tokenizer, prompts, texts, cfg.max_length)
    model.shift_bias(offset)

    result = {"steps": step, "train_rankings": len(train), "bias_shift": round(offset, 4), "normalized_on": source}
    if held:
        measured = pairwise_accuracy(model, held, tokenizer.pad_token_id)
        result |= {"heldout_accuracy": round(measured["accuracy"], 4), "heldout_loss": round(measured["loss"], 4),
                   "n_pairs": measured["n_pairs"], "heldout_rankings": measured["n_rankings"]}
        if data.gold is not None:
            result |= gold_measurements(model, tokenizer, preference_groups(data.eval_kind, data.held_records),
                                        data.gold)
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

@dataclass
class ConvertRMConfig:
    source: str | None = required("an rlhfkit reward/value model directory of the older layout (backbone + "
                                  "scalar_head.safetensors)", positional=True)
    out: str | None = required("directory to write the standard format to (XForSequenceClassification, "
                               "num_labels=1)", positional=True)

    def check(self) -> None:
        """Nothing to check without reading files: both fields are paths."""


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
