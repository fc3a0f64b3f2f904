"""Step 1 of InstructGPT: supervised fine-tuning on labeler demonstrations.

    L_SFT(θ) = −(1/N) Σ_{(x,y)} Σ_t log π_θ(y_t | x, y_<t)        (loss on completion tokens and EOS only)

Any Hugging Face causal LM directory works; the output is `save_pretrained` of model and tokenizer.
"""

from __future__ import annotations

import torch

from rlhfkit.data.chat import Truncation, example_ids, is_conversation, require_template, stop_ids
from rlhfkit.data.collate import pad_right
from rlhfkit.data.formats import read_sft
from rlhfkit.losses import lm_loss, masked_mean
from rlhfkit.models import packing as pk
from rlhfkit.models.loading import check_lengths, load_causal_lm, load_tokenizer, resolve_length, save_dtype
from rlhfkit.models.lora import add_lora, save_model
from rlhfkit.runtime.optim import make_optimizer, optimizer_step, progress, warmup_cosine
from rlhfkit.train.checkpoint import Checkpoints
from rlhfkit.train.common import EpochBatches, check_finite, split_by_prompt
from rlhfkit.train.configs import SFTConfig
from rlhfkit.train.micro import accumulate
from rlhfkit.train.run import Run, before_seed, start_run


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


def sft_loss(model, batch: dict[str, torch.Tensor], packing: bool = False) -> torch.Tensor:
    """L_SFT of the batch; `packing`: its rows packed without padding (`models/packing.py`), the same loss."""
    if packing and pk.supports_packing(model):
        p = pk.pack_for(model, batch["input_ids"], batch["attention_mask"])
        return -masked_mean(pk.next_token_logprobs(pk.forward(model, p).logits, p), batch["loss_mask"][:, 1:])
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return lm_loss(logits, batch["input_ids"], batch["loss_mask"])


@torch.no_grad()
def heldout_loss(model, rows, pad_id: int, device, batch_size: int = 64, packing: bool = False) -> float:
    """Token-weighted mean loss over held-out demonstrations; `packing` as in training (`sft_loss`)."""
    model.eval()
    total, tokens = 0.0, 0
    for start in range(0, len(rows), batch_size):
        batch = collate(rows[start:start + batch_size], pad_id, device)
        n = int(batch["loss_mask"][:, 1:].sum())
        total += sft_loss(model, batch, packing).item() * n
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

    def make(rows):  # a (micro-)batch and its units: the tokens its loss is a mean over
        batch = collate(rows, pad, device)
        return batch, batch["loss_mask"][:, 1:].sum()

    def loss_of(batch):
        loss = sft_loss(train_model, batch, cfg.packing)
        check_finite(loss, step)
        return loss, None

    for epoch, idx in batches:
        rows = [train_rows[i] for i in parallel.shard(idx)]
        loss, _ = accumulate(parallel, rows, [len(r[0]) for r in rows], cfg.max_tokens_per_batch, cfg.packing,
                             make, loss_of)  # the global batch's mean loss
        optimizer_step(optimizer, schedule, model.parameters(), cfg.grad_clip)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % cfg.log_every == 0 or step == total:
            run.dir.log(step, epoch=epoch, train_loss=loss.item(), lr=schedule.get_last_lr()[0])
        if batches.end_of_epoch and eval_rows and parallel.evaluates:
            held_out = heldout_loss(model, eval_rows, pad, device, packing=cfg.packing)
            result = run.dir.log(step, epoch=epoch, eval_loss=held_out)
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
