"""Packed sequences: the real tokens of a padded batch concatenated into rows without padding between them.

A padded batch [B, L] (left, right or both sides padded: any `attention_mask` whose ones are each row's tokens) is
packed into N rows of C tokens: each sequence's real tokens, in order, placed whole in one row (first-fit by
decreasing length), the rest of a row filled with one dummy sequence. Position ids restart at 0 with every
sequence, so that a model reads each sequence as its padded row (`data/collate.position_ids`: positions count real
tokens only); with `attention_mask=None` transformers (5.x, `masking_utils.find_packed_sequence_indices`) starts a
new sequence wherever the position ids do not go up by one, and attention never crosses sequences — a block-
diagonal causal mask with SDPA or eager attention, varlen kernels with flash attention. tests/models/
test_packing.py checks that this gives the padded batch's numbers on GPT-2, Llama and Qwen2; `supports_packing`
probes any other architecture once, and a model whose packed outputs differ from its padded ones is run padded.

Rows: with flash attention one row of all tokens (the varlen kernel costs Σ_i L_i², whatever the row's length);
otherwise SDPA's or eager attention computes a dense N·C² mask over the rows, so the row width C is chosen by
`row_capacity` among small multiples of the longest sequence: wider rows leave less at their ends (the linear
layers, most of the FLOPs, see fewer positions) but cost more attention.

`unpack` maps packed outputs back to the padded layout [B, L, ...] (zeros on padding), so every loss, mask and
normalizer downstream stays the padded code's: computed from masks, never from shapes.

Every call on packed rows runs inside `packed_rows()`: transformers' warning that a call without an attention mask
"may be padded" is a false alarm there (`NotPadded`).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from dataclasses import dataclass

import torch

from rlhfkit.losses import token_logprobs

FLASH = ("flash_attention_2", "flash_attention_3", "kernels-community/flash-attn", "kernels-community/flash-attn3")


@dataclass
class Packing:
    """Where each token of a padded batch [B, L] sits in the packed rows [N, C]."""
    input_ids: torch.Tensor     # [N, C] the packed rows (dummy tokens after each row's last sequence)
    position_ids: torch.Tensor  # [N, C] 0, 1, … restarting with every sequence (and with the dummy one)
    index: torch.Tensor         # [B, L] flat position n·C + c of each real token of the padded batch; 0 on padding
    real: torch.Tensor          # [B, L] bool: the attention mask


def layout(lengths: list[int], capacity: int) -> list[list[int]]:
    """Sequences (their indices) per row: first-fit by decreasing length into rows of `capacity` tokens (a longer
    sequence gets a row of its own). Ties keep their order, so the layout is deterministic."""
    rows: list[list[int]] = []
    room: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(capacity - lengths[i])
    return rows


def row_capacity(model, lengths: list[int]) -> int:
    """Tokens per packed row for `model` (module docstring): all of them with flash attention, else the row width
    C among 1, 2, 3, 4, 6 and 8 times the longest sequence whose rows cost least by `row_cost`."""
    config = getattr(unwrap(model), "config", None)
    if getattr(config, "_attn_implementation", None) in FLASH:
        return max(1, sum(lengths))
    longest = max(1, max(lengths, default=1))
    width = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None) or 256
    widths = sorted({min(k * longest, max(longest, sum(lengths))) for k in (1, 2, 3, 4, 6, 8)})
    return min(widths, key=lambda c: row_cost(len(layout(lengths, c)), c, width))


def row_cost(rows: int, capacity: int, width: int) -> float:
    """FLOPs per layer of `rows` packed rows of `capacity` tokens, up to a constant: 24·d² per token in the
    projections and the MLP (4d² + 8d² multiply-adds), 4·C·d per token in a dense attention (QKᵀ and AV)."""
    return rows * capacity * (24 * width * width + 4 * capacity * width)


def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor, capacity: int | None = None,
         fill_id: int = 0) -> Packing:
    """Pack the real tokens (`attention_mask` 1) of each row of `input_ids` [B, L] into rows of `capacity` tokens
    (default: the longest sequence's length); `fill_id` fills each row's end."""
    real = attention_mask.bool()
    lengths = real.sum(-1).tolist()
    capacity = max(capacity or 0, max(lengths, default=1), 1)
    rows = layout(lengths, capacity)
    starts = [0] * len(lengths)  # flat start of each sequence in the packed rows
    ids = torch.full((len(rows), capacity), fill_id, dtype=input_ids.dtype)
    positions = torch.zeros((len(rows), capacity), dtype=torch.long)
    ids_cpu = input_ids.cpu()
    real_cpu = real.cpu()
    for n, row in enumerate(rows):
        at = 0
        for i in row:
            starts[i] = n * capacity + at
            ids[n, at:at + lengths[i]] = ids_cpu[i][real_cpu[i]]
            positions[n, at:at + lengths[i]] = torch.arange(lengths[i])
            at += lengths[i]
        positions[n, at:] = torch.arange(capacity - at)  # the dummy sequence at the row's end
    # the k-th real token of row b is at starts[b] + k
    rank = (real.long().cumsum(-1) - 1).clamp(min=0)
    index = (torch.tensor(starts, device=real.device)[:, None] + rank) * real
    return Packing(ids.to(input_ids.device), positions.to(input_ids.device), index, real)


def pack_for(model, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Packing:
    """`pack` into the rows `model` runs best (`row_capacity`)."""
    return pack(input_ids, attention_mask, row_capacity(model, attention_mask.sum(-1).tolist()))


def unpack(values: torch.Tensor, packing: Packing) -> torch.Tensor:
    """Packed values [N, C, ...] → the padded batch's layout [B, L, ...], zeros on padding (differentiable)."""
    flat = values.reshape(-1, *values.shape[2:])
    out = flat[packing.index]
    keep = packing.real.reshape(*packing.real.shape, *([1] * (values.dim() - 2)))
    return torch.where(keep, out, torch.zeros((), dtype=out.dtype, device=out.device))


def next_token_logprobs(logits: torch.Tensor, packing: Packing, temperature: float = 1.0) -> torch.Tensor:
    """log π(x_{j+1} | x_≤j) [B, L − 1] in the padded layout (as `losses.token_logprobs(logits[:, :-1], ids[:,
    1:])` of the padded batch) from the packed rows' logits [N, C, V]: within a row, position c predicts c + 1;
    where that crosses into the next sequence the padded batch has padding, which every mask drops."""
    logp = token_logprobs(logits[:, :-1], packing.input_ids[:, 1:], temperature)
    logp = torch.cat([logp, logp.new_zeros(logp.shape[0], 1)], dim=1)
    return unpack(logp, packing)[:, :-1]


def token_batches(lengths: list[int], max_tokens: int | None, packed: bool) -> list[list[int]]:
    """Consecutive positions 0 … B−1 of a batch split into micro-batches of at most `max_tokens` tokens: packed, the
    sum of their lengths; padded, rows × the longest. A sequence longer than the budget is a micro-batch alone.
    None: one micro-batch of everything."""
    if max_tokens is None or not lengths:
        return [list(range(len(lengths)))]
    parts: list[list[int]] = [[]]
    for i in range(len(lengths)):
        part = parts[-1] + [i]
        cost = sum(lengths[j] for j in part) if packed else len(part) * max(lengths[j] for j in part)
        if parts[-1] and cost > max_tokens:
            parts.append([i])
        else:
            parts[-1] = part
    return parts


def even_out(parts: list[list[int]], count: int) -> list[list[int]]:
    """`parts` made `count` long (every process of a run takes as many forward and backward passes, for DDP's and
    FSDP's collectives): the largest part split in two while one has two rows or more, then empty parts."""
    parts = [list(p) for p in parts]
    while len(parts) < count and any(len(p) > 1 for p in parts):
        i = max(range(len(parts)), key=lambda i: len(parts[i]))
        half = len(parts[i]) // 2
        parts[i:i + 1] = [parts[i][:half], parts[i][half:]]
    return parts + [[] for _ in range(count - len(parts))]


def unwrap(model):
    """The model under DDP's `.module`, for its config. A PEFT (LoRA) model is kept: peft passes attribute reads
    (`config`) through to the model it wraps and its forward takes the packed call's position ids, so
    `supports_packing` probes the wrapper itself (tests/train/test_packing.py: LoRA packed = padded)."""
    while hasattr(model, "module"):
        model = model.module
    return model


def forward(model, packing: Packing, **kwargs):
    """`model` called on the packed rows: no attention mask (transformers reads the sequences from the positions)."""
    with packed_rows():
        return model(input_ids=packing.input_ids, attention_mask=None, position_ids=packing.position_ids,
                     use_cache=False, **kwargs)


# transformers' `PreTrainedModel.warn_if_padding_and_no_attention_mask`, said through this module's logger
PADDING_WARNING = "We strongly recommend passing in an `attention_mask` since your input_ids may be padded"
PADDING_WARNING_LOGGER = "transformers.modeling_utils"
_IN_PACKED_ROWS = contextvars.ContextVar("rlhfkit_in_packed_rows", default=False)


class NotPadded(logging.Filter):
    """transformers warns (once) that a call without an attention mask "may be padded" when the pad id is in the
    first or last column of its input_ids. Packed rows have no mask by design and no padding: their sequences are
    read from the position ids (module docstring). The pad id there is a real token (pad = EOS, or BOS) or the
    dummy sequence that ends a row, which no real token attends to (it comes after them, its positions restart at
    0); tests/models/test_packing.py checks packed = padded with both. So the warning is dropped while a packed
    call runs (`packed_rows`), in this thread only; every other message, and this one elsewhere, passes.
    transformers says it once per process: one dropped here is not said later either."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_IN_PACKED_ROWS.get() and record.getMessage().startswith(PADDING_WARNING))


_NOT_PADDED = NotPadded()


@contextlib.contextmanager
def packed_rows():
    """The calls on packed rows inside: transformers' padding warning is not said of them (`NotPadded`)."""
    logger = logging.getLogger(PADDING_WARNING_LOGGER)
    if _NOT_PADDED not in logger.filters:
        logger.addFilter(_NOT_PADDED)
    token = _IN_PACKED_ROWS.set(True)
    try:
        yield
    finally:
        _IN_PACKED_ROWS.reset(token)


# --------------------------------------------------------------------------------- does the architecture pack?

_VERDICTS: dict[tuple, bool] = {}


@torch.no_grad()
def supports_packing(model, vocab_size: int | None = None) -> bool:
    """Whether `model` gives on two packed sequences what it gives on them padded (its last hidden states or
    logits equal to 1e-4): probed once per architecture and attention implementation, on two random sequences of
    5 and 3 tokens. A model whose attention ignores the packed positions (a model transformers does not route
    through `masking_utils`) says False, and the trainers run it padded."""
    inner = unwrap(model)
    if hasattr(inner, "backbone"):  # a scalar model (models/scalar.py): its transformer reads the positions
        return supports_packing(inner.backbone, vocab_size)
    config = getattr(inner, "config", None)
    key = (type(inner).__name__, getattr(config, "model_type", None), getattr(config, "_attn_implementation", None))
    if key in _VERDICTS:
        return _VERDICTS[key]
    vocab = vocab_size or getattr(config, "vocab_size", None) or 2
    device = next(inner.parameters()).device
    ids = torch.randint(0, max(2, vocab), (2, 5), generator=torch.Generator().manual_seed(0)).to(device)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], device=device)
    was_training = inner.training
    model.eval()
    try:
        padded = _output(model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                               use_cache=False))
        p = pack(ids, mask, capacity=8)
        packed = unpack(_output(forward(model, p)), p)
        a, b = packed.float()[mask.bool()], padded.float()[mask.bool()]
        ok = bool(((a - b).abs().max() <= 1e-4 + 1e-2 * b.abs().max()).item())  # bf16 rounding passes, a leak not
    except (TypeError, ValueError, RuntimeError, IndexError):  # a forward that refuses the packed call
        ok = False
    finally:
        model.train(was_training)
    if not ok:
        print(f"packing: {key[1] or key[0]} ({key[2]} attention) does not read packed sequences from their position "
              "ids as it reads them padded; its batches run padded", file=sys.stderr)
    _VERDICTS[key] = ok
    return ok


def _output(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    return out.logits if getattr(out, "logits", None) is not None else out.last_hidden_state
