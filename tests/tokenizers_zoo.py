"""Byte-level BPE tokenizers in the four special-token setups real models ship with (issue 16).

Each is trained in-process with `tokenizers` (BPE + ByteLevel pre-tokenizer/decoder, as GPT-2, Llama-3, Qwen and
GPT-NeoX use) on a few hundred sentences, then given one setup's special tokens, chat template and padding side:

- ``llama3``: BOS ``<|begin_of_text|>`` added by the post-processor, EOS ``<|end_of_text|>``, no pad; a Llama-3
  template whose turns end with ``<|eot_id|>``; generation_config's EOS is the list [<|end_of_text|>, <|eot_id|>].
- ``chatml``: no BOS, EOS ``<|im_end|>``, pad ``<|endoftext|>``, a ChatML template (Qwen2 style), left padding.
- ``mistral``: BOS ``<s>`` added by the post-processor, EOS ``</s>``, pad == EOS, an ``[INST] … [/INST]`` template.
- ``neox``: bos == eos == ``<|endoftext|>``, no pad, no template in the tokenizer: `NEOX_TEMPLATE` is the Jinja
  file users pass with ``--chat-template`` (`write_neox_template`).

`build_tokenizer(setup)` returns a fresh `PreTrainedTokenizerFast`; with ``paragraphs=True`` it is also trained on
texts ending in "\\n\\n", so that, as in GPT-2's own vocabulary (``ĊĊ``, id 628), "\\n\\n" at the end of a text is one
token and "\\n\\n" before a word two (GPT-2's pre-tokenizer rule `\\s+(?!\\S)`, which ByteLevel applies).
`save_tiny_model(path, setup, arch)` writes a tiny random causal LM beside it with the setup's ids in config.json and
generation_config.json, for the tests that go through the CLI (tests/conftest.py's `save_tiny_model` does the same
for the toy world's tokenizer). `real_template(name)` reads a real model's chat template (tests/fixtures/).
"""

from __future__ import annotations

import functools
import itertools
import json
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    GPT2Config,
    LlamaConfig,
    PreTrainedTokenizerFast,
)

SETUPS = ("llama3", "chatml", "mistral", "neox")

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Mistral v0.1 style: a system message is put before the first user message, inside its [INST].
MISTRAL_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(system='') %}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set ns.system = message['content'] + '\n\n' %}"
    "{% elif message['role'] == 'user' %}{{ '[INST] ' + ns.system + message['content'] + ' [/INST]' }}"
    "{% set ns.system = '' %}"
    "{% else %}{{ ' ' + message['content'] + eos_token }}{% endif %}{% endfor %}"
)

# Zephyr style, for GPT-NeoX: passed as a file with --chat-template; turns end with EOS (<|endoftext|>).
NEOX_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

SPECIALS = {
    "llama3": {"bos": "<|begin_of_text|>", "eos": "<|end_of_text|>", "pad": None,
               "extra": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
               "template": LLAMA3_TEMPLATE, "padding_side": "right"},
    "chatml": {"bos": None, "eos": "<|im_end|>", "pad": "<|endoftext|>", "extra": ["<|im_start|>"],
               "template": CHATML_TEMPLATE, "padding_side": "left"},
    "mistral": {"bos": "<s>", "eos": "</s>", "pad": "</s>", "unk": "<unk>", "extra": [],
                "template": MISTRAL_TEMPLATE, "padding_side": "left"},
    "neox": {"bos": "<|endoftext|>", "eos": "<|endoftext|>", "pad": None, "extra": [],
             "template": None, "padding_side": "right"},
}

# The token each setup's template ends an assistant turn with (what generation stops at).
END_OF_TURN = {"llama3": "<|eot_id|>", "chatml": "<|im_end|>", "mistral": "</s>", "neox": "<|endoftext|>"}

_SUBJECTS = ["the cat", "a dog", "my friend", "the model", "our team", "the old man", "Zoë", "the robot", "she",
             "they", "the reward model", "a policy"]
_VERBS = ["reads", "writes", "likes", "sees", "answers", "trains on", "ignores", "learns from", "explains",
          "counts"]
_OBJECTS = ["the book", "a long story", "three apples", "the question", "42 numbers", "the café menu",
            "a short poem", "the data", "every token", "the answer"]
_ENDS = [".", "!", "?", " today.", ", quickly.", " (again).", " — twice.", ":\n- yes\n- no", "\n\nThanks!", " 🙂"]


def sentences() -> list[str]:
    """A few hundred deterministic sentences with punctuation, digits, newlines and a little non-ASCII."""
    out = []
    for i, (s, v, o) in enumerate(itertools.product(_SUBJECTS, _VERBS, _OBJECTS)):
        if i % 3 == 0:
            out.append(f"{s[0].upper()}{s[1:]} {v} {o}{_ENDS[i % len(_ENDS)]}")
    return out


@functools.lru_cache(maxsize=None)
def _trained(specials: tuple[str, ...], vocab_size: int, paragraphs: bool = False) -> str:
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(specials), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    core.train_from_iterator(sentences() + ([s + "\n\n" for s in sentences()] if paragraphs else []), trainer)
    return core.to_str()


def build_tokenizer(setup: str, vocab_size: int = 600, paragraphs: bool = False) -> PreTrainedTokenizerFast:
    """A fresh byte-level BPE tokenizer in `setup` (one of SETUPS); `paragraphs`: with a "\n\n" token (above)."""
    spec = SPECIALS[setup]
    specials = [t for t in (spec["bos"], spec["eos"], spec["pad"], spec.get("unk")) if t]
    specials = list(dict.fromkeys(specials + spec["extra"]))
    core = Tokenizer.from_str(_trained(tuple(specials), vocab_size, paragraphs))
    if setup in ("llama3", "mistral"):  # BOS added by the post-processor, as these models' tokenizers do
        bos = spec["bos"]
        core.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, core.token_to_id(bos))])
    else:
        core.post_processor = processors.ByteLevel(trim_offsets=False)
    kwargs = {k + "_token": spec[k] for k in ("bos", "eos", "pad", "unk") if spec.get(k)}
    tok = PreTrainedTokenizerFast(tokenizer_object=core, model_max_length=1024, padding_side=spec["padding_side"],
                                  additional_special_tokens=spec["extra"] or None, **kwargs)
    if spec["template"] is not None:
        tok.chat_template = spec["template"]
    return tok


def generation_eos(setup: str, tok) -> int | list[int]:
    """generation_config.eos_token_id as the setup's models ship it (Llama-3 instruct: a list of two)."""
    if setup == "llama3":
        return [tok.convert_tokens_to_ids("<|end_of_text|>"), tok.convert_tokens_to_ids("<|eot_id|>")]
    return tok.eos_token_id


def end_of_turn(setup: str, tok) -> int:
    return tok.convert_tokens_to_ids(END_OF_TURN[setup])


TEMPLATES = Path(__file__).parent / "fixtures" / "chat_templates"


FROZEN_DATE = "26 Jul 2024"  # the date Llama 3.2's template writes when the renderer has no clock (strftime_now)


def real_template(name: str, date_string: str | None = FROZEN_DATE) -> str:
    """A real model's chat template, as its tokenizer_config.json ships it: "qwen2_5" (Qwen2.5-Instruct, with its
    tools branch) or "llama3_2" (Llama-3.2-Instruct: tools, a dated system turn, a generation prompt ending in
    "\n\n").

    Llama 3.2's system turn says "Today Date: " + today (transformers' `strftime_now`) unless the caller passes
    `date_string`. rlhfkit renders through `apply_chat_template` with no such argument, so the template is given
    `date_string` as if it were passed: one `set` before the verbatim text, and a rendering is the same on every
    day (prompt and prompt + answer rendered either side of midnight would differ). None: the text alone."""
    text = (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")
    if date_string is not None and "date_string" in text:
        text = "{%- set date_string = " + json.dumps(date_string) + " %}\n" + text
    return text


def write_neox_template(path: Path) -> Path:
    """The Jinja file to pass with --chat-template for the neox setup."""
    Path(path).write_text(NEOX_TEMPLATE, encoding="utf-8")
    return Path(path)


def model_config(arch: str, tok, setup: str, d_model: int = 32, n_layers: int = 2, n_heads: int = 2,
                 n_positions: int = 128):
    """A tiny GPT-2 or Llama config with the setup's special-token ids (pad None where the tokenizer has none)."""
    ids = dict(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
               pad_token_id=tok.pad_token_id)
    if arch == "gpt2":
        return GPT2Config(n_positions=n_positions, n_embd=d_model, n_layer=n_layers, n_head=n_heads,
                          resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **ids)
    if arch == "llama":
        return LlamaConfig(hidden_size=d_model, intermediate_size=64, num_hidden_layers=n_layers,
                           num_attention_heads=n_heads, num_key_value_heads=n_heads,
                           max_position_embeddings=n_positions, **ids)
    raise ValueError(f"unknown architecture {arch!r} (gpt2 or llama)")


def save_tiny_model(path: Path, setup: str, arch: str = "gpt2", *, config=None, seed: int = 0,
                    dtype: torch.dtype | None = None) -> Path:
    """A tiny random causal LM + the setup's tokenizer in `path`, as `save_pretrained` writes them.

    `config` overrides the built-in GPT-2/Llama configs (any `PretrainedConfig` with vocab_size >= len(tok));
    its special-token ids are set from the tokenizer. generation_config.json carries `generation_eos`.
    `dtype` saves the weights in that dtype (config.json records it), as bf16 checkpoints are shipped.
    """
    path = Path(path)
    tok = build_tokenizer(setup)
    if config is None:
        config = model_config(arch, tok, setup)
    else:
        config.vocab_size = max(getattr(config, "vocab_size", 0) or 0, len(tok))
        config.bos_token_id, config.eos_token_id, config.pad_token_id = (
            tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    # AutoTokenizer may load the saved vocabulary into the architecture's own class, which can add its defaults
    # (Qwen2's pad <|endoftext|>): the embeddings cover what it loads, as in a real checkpoint.
    path.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(path)
    tok.save_pretrained(path)
    config.vocab_size = max(config.vocab_size, len(AutoTokenizer.from_pretrained(path)))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    if dtype is not None:
        model = model.to(dtype)
    model.generation_config = GenerationConfig(bos_token_id=tok.bos_token_id, eos_token_id=generation_eos(setup, tok),
                                               pad_token_id=tok.pad_token_id)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def conversations() -> list[list[dict]]:
    """Conversations with system, user and assistant turns (one and two assistant turns)."""
    return [
        [{"role": "system", "content": "You are a helpful robot."},
         {"role": "user", "content": "The cat reads the book?"},
         {"role": "assistant", "content": "The cat likes the book."}],
        [{"role": "user", "content": "Zoë writes a short poem!"},
         {"role": "assistant", "content": "She writes a short poem today."},
         {"role": "user", "content": "And the dog?"},
         {"role": "assistant", "content": "A dog sees three apples 🙂"}],
        [{"role": "system", "content": "Answer in one line."},
         {"role": "user", "content": "Our team counts 42 numbers, quickly."},
         {"role": "assistant", "content": "They count 42 numbers (again)."}],
    ]


def read_generation_eos(path: Path):
    """generation_config.json's eos_token_id as saved in `path` (a list stays a list)."""
    return json.loads((Path(path) / "generation_config.json").read_text(encoding="utf-8")).get("eos_token_id")
