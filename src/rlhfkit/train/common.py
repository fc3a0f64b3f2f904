"""What the trainers share beyond the run helpers (`runtime/`): batching, the held-out split, the finite-loss check."""

from __future__ import annotations

import hashlib
import sys

import torch

from rlhfkit.errors import UserError


def split_by_prompt(records: list[dict], fraction: float, seed: int, salt: str, command: str = "train"
                    ) -> tuple[list[dict], list[dict]]:
    """(train, held out): whole prompts are held out (all their records), never single samples or pairs.

    A prompt is held out when its hash (of `salt`, `seed` and the prompt) falls in the first `fraction` of its
    range, whatever the file's order or length. Where that holds out none of a small file's prompts (5% of 48
    conversations can give none), the prompt whose hash is lowest is held out; where it would hold out all of
    them, the highest stays in training: with two distinct prompts or more, each side gets at least one. When
    several records share one prompt nothing can be held out, and one line on stderr says so."""
    def position(prompt) -> int:
        digest = hashlib.md5(f"{salt}|{seed}|{prompt}".encode()).hexdigest()
        return int(digest[:8], 16) % 10_000
    key = lambda r: str(r["prompt"] if "prompt" in r else r.get("text", r.get("messages")))  # noqa: E731 - SFT text/messages
    positions = {key(r): 0 for r in records}
    positions = {k: position(k) for k in positions}
    held = {k for k, v in positions.items() if v < fraction * 10_000}
    if fraction > 0 and len(positions) < 2:
        if len(records) > 1:
            print(f"{command}: all {len(records)} records have the same prompt: none held out for evaluation "
                  "(give --eval-data)", file=sys.stderr)
        return records, []
    if fraction > 0 and not held:
        held = {min(positions, key=positions.get)}
    elif held and len(held) == len(positions):
        held.remove(max(positions, key=positions.get))
    return [r for r in records if key(r) not in held], [r for r in records if key(r) in held]


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator, drop_last: bool = False):
    """Index lists covering range(n) in a random order (seeded)."""
    order = torch.randperm(n, generator=generator).tolist()
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    return [order[i:i + batch_size] for i in range(0, stop, batch_size)]


class EpochBatches:
    """`shuffled_batches` epoch after epoch, yielding (epoch, indices), with a position a checkpoint can save.

    The order of an epoch is drawn from `generator` when the epoch starts, as a loop over `shuffled_batches`
    would; `state_dict` holds the epoch, the index in it and its order, so a resumed run sees the same batches.
    """

    def __init__(self, n: int, batch_size: int, epochs: int, generator: torch.Generator):
        self.n, self.batch_size, self.epochs, self.generator = n, batch_size, epochs, generator
        self.epoch, self.index, self.order = 0, 0, None

    def __iter__(self):
        while self.epoch < self.epochs:
            if self.order is None:
                self.order = shuffled_batches(self.n, self.batch_size, self.generator)
            while self.index < len(self.order):
                self.index += 1
                yield self.epoch, self.order[self.index - 1]
            self.epoch, self.index, self.order = self.epoch + 1, 0, None

    @property
    def end_of_epoch(self) -> bool:
        """True after the last batch of an epoch was handed out."""
        return self.order is not None and self.index == len(self.order)

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "order": self.order}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.index, self.order = state["epoch"], state["index"], state["order"]


def check_finite(loss: torch.Tensor, step: int, what: str = "loss", where: str | None = None,
                 inputs: dict[str, torch.Tensor] | None = None, mask: torch.Tensor | None = None) -> None:
    """Stop with one line when `loss` is not finite, saying what and where (`where`, default "step N") and which
    of its `inputs` (named tensors, read where `mask` is 1) are not finite. `step`: the updates taken so far; at
    0 no weight has moved yet, so the data or the model give the loss, not the learning rate, and the advice
    says so."""
    if torch.isfinite(loss).all():
        return
    keep = mask.bool() if mask is not None else True
    bad = [name for name, tensor in (inputs or {}).items() if (~torch.isfinite(tensor) & keep).any()]
    detail = f"; not finite among its inputs: {', '.join(bad)}" if bad else "; its inputs are finite" if inputs else ""
    advice = ("before any update: the data or the model give it, not the training" if step == 0 else
              "lower the learning rate; the last saved checkpoint in OUT/resume is intact")
    raise UserError(f"{where or f'step {step}'}: {what} is not finite ({loss.item()}){detail}; stopping ({advice})")
