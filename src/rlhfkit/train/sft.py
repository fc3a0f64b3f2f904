"""Step 1 of InstructGPT: supervised fine-tuning on labeler demonstrations.

    L_SFT(θ) = −(1/N) Σ_{(x,y)} Σ_t log π_θ(y_t | x, y_<t)        (loss on completion tokens and EOS only)

Any Hugging Face causal LM directory works; the output is `save_pretrained` of model and tokenizer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlhfkit.config import check_at_least, check_positive, option, required
from rlhfkit.data.chat import Truncation, example_ids, is_conversation, require_template, stop_ids
from rlhfkit.data.collate import pad_right
from rlhfkit.data.formats import read_sft
from rlhfkit.data.readers import DataOptions
from rlhfkit.errors import UserError
from rlhfkit.losses import lm_loss
from rlhfkit.models.loading import check_lengths, load_causal_lm, load_tokenizer, resolve_length, save_dtype
from rlhfkit.models.lora import add_lora, save_model
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
from rlhfkit.train.run import Run, before_seed, start_run


@dataclass
class SFTConfig(RunOptions, DataOptions):
    model: str | None = required("causal LM directory to fine-tune (save_pretrained output)")
    data: str | None = required("demonstrations JSONL: prompt, completion")
    eval_data: str | None = option(None, "held-out demonstrations (default: split eval_fraction of prompts)")
    eval_fraction: float = option(0.05, "share of distinct prompts held out when eval_data is not given")
    epochs: int = option(3, "passes over the demonstrations")
    batch_size: int = option(32, "sequences per optimizer step")
    lr: float = option(5e-4, "peak learning rate (toy-world scale; use ~1e-5 for large models)")
    weight_decay: float = option(0.0, "AdamW weight decay")
    warmup_ratio: float = option(0.05, "share of steps spent warming the learning rate up")
    max_length: int | None = option(None, "tokens per sequence (prompt cut on the left first; default 256, or "
                                    "the model's position limit when lower)")
    grad_clip: float = option(1.0, "gradient norm clipping")
    log_every: int = option(10, "log train loss every N steps")

    def check(self) -> None:
        super().check()
        check_at_least(self, 1, "epochs", "batch_size", "max_length", "log_every")
        check_positive(self, "lr")
        if not 0 <= self.eval_fraction < 1:
            raise UserError("config key 'eval_fraction' must be in [0, 1)")


def tokenize_demos(tokenizer, records: list[dict], max_length: int, truncation: Truncation | None = None,
                   source: str = "demonstrations") -> list[tuple[list[int], list[int]]]:
    """(input ids, loss mask) per demonstration, tokenized once (`data/chat.example_ids`: prompt + completion,
    {"text"} or {"messages"})."""
    truncation = truncation or Truncation(max_length)
    stops = stop_ids(tokenizer, None, True)
    return [example_ids(tokenizer, r, truncation, f"{source}: {demo_name(r, i)}", stops)
            for i, r in enumerate(records)]


def demo_name(record: dict, index: int) -> str:
    return f"id {record['id']}" if isinstance(record.get("id"), str) else f"record {index + 1}"


def is_conversational(record: dict) -> bool:
    return "messages" in record or is_conversation(record.get("prompt"))


def collate(rows: list[tuple[list[int], list[int]]], pad_id: int, device) -> dict[str, torch.Tensor]:
    ids = [r[0] for r in rows]
    return {"input_ids": pad_right(ids, pad_id).to(device),
            "attention_mask": pad_right([[1] * len(i) for i in ids], 0).to(device),
            "loss_mask": pad_right([r[1] for r in rows], 0).to(device)}


def sft_loss(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return lm_loss(logits, batch["input_ids"], batch["loss_mask"])


@torch.no_grad()
def heldout_loss(model, rows, pad_id: int, device, batch_size: int = 64) -> float:
    """Token-weighted mean loss over held-out demonstrations."""
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = collate(rows[start:start + batch_size], pad_id, device)
        n = int(batch["loss_mask"][:, 1:].sum())
        total += sft_loss(model, batch).item() * n
        tokens += n
    model.train()
    return total / max(1, tokens)


def read_demos(cfg: SFTConfig) -> tuple[list[dict], list[dict]]:
    """(training demonstrations, held-out ones): held-out prompts never reach training."""
    records = read_sft(cfg.data, cfg)
    if cfg.eval_data:
        return records, read_sft(cfg.eval_data, cfg)
    return split_by_prompt(records, cfg.eval_fraction, cfg.seed, "sft-eval", "sft")


def load_model(cfg: SFTConfig, inputs, device):
    """The tokenizer, the model and the tokenized (training, held-out) demonstrations, once the lengths fit the
    model and every demonstration tokenizes (before the run directory exists)."""
    tokenizer = load_tokenizer(cfg.model, cfg.chat_template)
    with before_seed():  # SFT has always loaded before seeding: its dropout stream starts at the seed
        model = load_causal_lm(cfg.model, tokenizer)
    limit = check_lengths(cfg.model, model, max_length=cfg.max_length)
    cfg.max_length = resolve_length(cfg.max_length, 256, limit)
    if any(is_conversational(r) for records in inputs for r in records):
        require_template(tokenizer)
    rows = check_demos(cfg, tokenizer, inputs)
    model = add_lora(model, cfg, cfg.model)
    return tokenizer, model.to(device).train(), rows


def check_demos(cfg: SFTConfig, tokenizer, inputs) -> list[list[tuple[list[int], list[int]]]]:
    """Tokenize every demonstration once, before the run starts (the loop trains on these rows): a template error
    or a row refused by --truncation error stops here; the rows cut are counted in one line."""
    truncation = Truncation(cfg.max_length, cfg.truncation)
    rows = [tokenize_demos(tokenizer, records, cfg.max_length, truncation, source)
            for records, source in zip(inputs, (cfg.data, cfg.eval_data or f"{cfg.data} (held out)"))]
    truncation.report("sft")
    return rows


def train_sft(cfg: SFTConfig) -> dict:
    return start_run(cfg, read_demos, load_model, sft_loop)


def sft_loop(run: Run) -> dict:
    cfg, parallel, device, (tokenizer, model, (train_rows, eval_rows)) = run.cfg, run.parallel, run.device, run.models
    pad = tokenizer.pad_token_id
    total = -(-len(train_rows) // cfg.batch_size) * cfg.epochs
    train_model = parallel.wrap(model)  # the model itself with one process; DDP-wrapped (or FSDP-sharded) with N
    optimizer = make_optimizer(model.parameters(), cfg.lr, cfg.weight_decay)
    schedule = warmup_cosine(optimizer, total, warmup_steps=max(1, int(cfg.warmup_ratio * total)))
    batches = EpochBatches(len(train_rows), cfg.batch_size, cfg.epochs, run.generator)
    checkpoints = Checkpoints(run.dir, parallel, cfg.checkpoint_every, model=model, optimizer=optimizer,
                              schedule=schedule, batches=batches, generator=run.generator)
    step = checkpoints.restore() if cfg.resume else 0
    bar, result = progress(total, "sft"), {}
    bar.update(step)
    for epoch, idx in batches:
        batch = collate([train_rows[i] for i in parallel.shard(idx)], pad, device)
        loss = sft_loss(train_model, batch)
        check_finite(loss, step)
        loss = parallel.backward(loss, units=batch["loss_mask"][:, 1:].sum())  # the global batch's mean loss
        optimizer_step(optimizer, schedule, model.parameters(), cfg.grad_clip)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % cfg.log_every == 0 or step == total:
            run.dir.log(step, epoch=epoch, train_loss=loss.item(), lr=schedule.get_last_lr()[0])
        if batches.end_of_epoch and eval_rows and parallel.evaluates:
            result = run.dir.log(step, epoch=epoch, eval_loss=heldout_loss(model, eval_rows, pad, device))
        if step < total:  # the last step's state is the saved model
            checkpoints.maybe_save(step)
    bar.close()
    return finish(run, parallel.gather(model), step, loss.item(), result, len(train_rows), len(eval_rows))


def finish(run: Run, model, step: int, loss: float, result: dict, n_train: int, n_eval: int) -> dict:
    """Process 0 saves the model (FSDP: gathered whole) and reports."""
    if not run.parallel.is_main:
        return {}
    model.eval()
    save_model(run.dir.path, model, run.models[0], run.cfg.lora_save, save_dtype(run.cfg.dtype, run.cfg.model))
    run.dir.close()
    summary = {"steps": step, "train_loss": round(loss, 4), "eval_loss": result.get("eval_loss"),
               "train_examples": n_train, "eval_examples": n_eval}
    print(f"sft: {step} steps on {n_train} demonstrations; final train loss {summary['train_loss']}, "
          f"held-out loss {summary['eval_loss']} ({n_eval} examples) -> {run.dir.path}")
    return summary
