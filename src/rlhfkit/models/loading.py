"""Load any Hugging Face causal LM directory (written by `save_pretrained`) and its tokenizer.

Users point every stage at a directory; a missing or wrong one is a user error with one clear line. A LoRA
adapter directory (`--lora-save adapter`, see `models/lora.py`) loads here too: its base, with the adapter
merged in (`adapter_base`, `apply_adapter`).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.activations import GELUTanh, NewGELUActivation

from rlhfkit.data.chat import set_chat_template
from rlhfkit.errors import UserError
from rlhfkit.models.options import DTYPE_NAMES

ADAPTER_CONFIG = "adapter_config.json"
# rlhfkit's reward/value layout before issue 17 (backbone + this file); `rlhf data convert-rm` converts it.
OLD_HEAD_WEIGHTS = "scalar_head.safetensors"
# Files one of which a tokenizer directory holds (fast: tokenizer.json; slow: its vocabulary).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                   "sentencepiece.bpe.model", "tekken.json")
DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}  # float32, bfloat16, float16
# config.json keys that bound the positions a model can read (None/absent: unlimited, e.g. relative positions).
POSITION_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")


def check_model_dir(path: str | os.PathLike, what: str = "model") -> Path:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such {what} directory")
    if not path.is_dir():
        raise UserError(f"{path}: is a file; expected a {what} directory written by save_pretrained")
    config = path / "config.json"
    if not config.exists() and (path / ADAPTER_CONFIG).exists():
        return path  # a LoRA adapter saved with --lora-save adapter: loaded on top of its base (`apply_adapter`)
    if not config.exists():
        raise UserError(f"{path}: not a {what} directory (no config.json; expected save_pretrained output)")
    try:
        parsed = json.loads(config.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise UserError(f"{config}: invalid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise UserError(f"{config}: not a model config (expected a JSON object)")
    return path


def model_kind(path: str | os.PathLike) -> tuple[str, str]:
    """(kind, what) of a model directory from its files alone: kind 'scalar' for a reward/value model (an
    XForSequenceClassification or XForLastTokenClassification (models/scalar.py), or rlhfkit's older layout with
    scalar_head.safetensors), 'causal' for a causal LM,
    '' when config.json does not say; `what` names it in messages. An adapter directory: its own head file, else
    its base's kind."""
    path = Path(path)
    if (path / OLD_HEAD_WEIGHTS).exists():
        return "scalar", f"an rlhfkit reward/value model ({OLD_HEAD_WEIGHTS})"
    base = adapter_base(path)
    if base is not None:
        return model_kind(base)
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return "", ""
    names = config.get("architectures") if isinstance(config, dict) else None
    names = [n for n in names if isinstance(n, str)] if isinstance(names, list) else []
    if any(n.endswith(("ForSequenceClassification", "ForLastTokenClassification")) for n in names):
        labels = config.get("id2label")
        n_labels = len(labels) if isinstance(labels, dict) and labels else config.get("num_labels", 2)
        return "scalar", f"a sequence classifier ({names[0]}, {n_labels} label{'s' * (n_labels != 1)})"
    if any(n.endswith(("ForCausalLM", "LMHeadModel", "ForConditionalGeneration")) for n in names):
        return "causal", f"a causal LM ({names[0]})"
    return "", f"a {names[0]}" if names else ""


def num_labels(path: str | os.PathLike) -> int:
    """Outputs of a sequence classifier's head: config.json's id2label (transformers' default is 2)."""
    config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    labels = config.get("id2label")
    return len(labels) if isinstance(labels, dict) and labels else int(config.get("num_labels", 2))


def check_causal_lm(path: str | os.PathLike, role: str = "policy or reference") -> None:
    """A causal-LM role (policy, reference, SFT start) refuses a reward model: transformers would load it with a
    random LM head and no error."""
    kind, what = model_kind(path)
    if kind == "scalar":
        raise UserError(f"{path}: is {what}, not a causal LM; a {role} needs a language-model head "
                        "(a reward model goes to --reward or --value-model)")


def check_reward_dir(path: str | os.PathLike, role: str = "reward model") -> None:
    """A reward/value role refuses a causal LM and a classifier with more than one output."""
    kind, what = model_kind(path)
    if kind == "causal":
        raise UserError(f"{path}: is {what}, not a reward model; the {role} must be a sequence classifier with "
                        "num_labels=1 (train one with `rlhf rm`, or use one trained elsewhere)")
    if kind != "scalar":
        raise UserError(f"{path}: not a reward model ({what or 'config.json names no architecture'}); the {role} "
                        "must be an XForSequenceClassification with num_labels=1")
    if (Path(path) / "config.json").exists() and not (Path(path) / OLD_HEAD_WEIGHTS).exists() \
            and num_labels(path) != 1:
        raise UserError(f"{path}: is {what}; a {role} gives one score per sequence (num_labels=1)")


# What transformers raises on a directory it cannot make sense of (a damaged or foreign config.json, a truncated
# model.safetensors, ...).
LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError, SafetensorError)


def load_tokenizer(path: str | os.PathLike, chat_template: str | os.PathLike | None = None):
    """The tokenizer saved beside a model, with `chat_template` (a Jinja file, --chat-template) set when given.

    The pad rule (docs/design.md §4): the tokenizer's own pad token is kept; one without gets an existing special
    token as pad (unk, else EOS) — the vocabulary never grows. Attention masks, never `id == pad`, decide what is
    padding, so pad == EOS is safe."""
    path = check_model_dir(path)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(f"{path}: no tokenizer files (tokenizer.json, or tokenizer_config.json with its vocabulary "
                        "such as vocab.json + merges.txt or tokenizer.model); save the tokenizer there too")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except LOAD_ERRORS as exc:
        message = " ".join(str(exc).split()) or type(exc).__name__
        raise UserError(f"{path}: cannot load a tokenizer: {message}") from None
    if tokenizer.eos_token_id is None:
        raise UserError(f"{path}: the tokenizer has no EOS token; responses could never end")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.unk_token if tokenizer.unk_token_id is not None else tokenizer.eos_token
    return set_chat_template(tokenizer, chat_template)


def checkpoint_dtype(path: str | os.PathLike) -> torch.dtype:
    """The dtype a model directory's weights were saved in (config.json's `dtype`, or `torch_dtype` of older
    transformers; float32 when neither says). An adapter directory: its base's."""
    path = Path(path)
    base = adapter_base(path)
    if base is not None:
        return checkpoint_dtype(base)
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return torch.float32
    name = config.get("dtype") or config.get("torch_dtype") if isinstance(config, dict) else None
    return DTYPES.get(name, torch.float32) if isinstance(name, str) else torch.float32


def save_dtype(option: str, path: str | os.PathLike) -> torch.dtype:
    """--dtype: 'auto' keeps the checkpoint's dtype (`checkpoint_dtype`), else float32, bfloat16 or float16."""
    return checkpoint_dtype(path) if option == "auto" else DTYPES[option]


def position_limit(model_or_config) -> int | None:
    """The most positions the model can read (max_position_embeddings, n_positions, n_ctx, ...; None: no limit)."""
    config = getattr(model_or_config, "config", model_or_config)
    for key in POSITION_KEYS:
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_lengths(path, model_or_config, **lengths) -> int | None:
    """Refuse lengths the model cannot hold, before any work: `lengths` are the config keys and their values
    (several are added up: a prompt and the tokens generated after it). Returns the limit."""
    limit = position_limit(model_or_config)
    given = {k: v for k, v in lengths.items() if v is not None}
    if limit is None or not given or sum(given.values()) <= limit:
        return limit
    keys = " + ".join(f"--{k.replace('_', '-')} {v}" for k, v in given.items())
    raise UserError(f"{path}: {keys} = {sum(given.values())} tokens is beyond the model's position limit of "
                    f"{limit}; lower {'them' if len(given) > 1 else 'it'} to fit")


def resolve_length(value: int | None, default: int, limit: int | None, room: int = 0) -> int:
    """A length option left unset (None): `default`, capped at what the model's positions leave (limit - room)."""
    if value is not None:
        return value
    return default if limit is None else max(1, min(default, limit - room))


def load_causal_lm(path: str | os.PathLike, tokenizer=None, dtype: torch.dtype = torch.float32):
    """An `AutoModelForCausalLM` from a directory; embeddings grown if the tokenizer gained a pad token."""
    path = check_model_dir(path)
    check_causal_lm(path)
    base = adapter_base(path)
    if base is not None:  # an adapter directory: its base, with the adapter merged in
        return apply_adapter(load_causal_lm(base, tokenizer, dtype), path)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except LOAD_ERRORS as exc:
        raise UserError(f"{path}: cannot load a causal LM: {str(exc).splitlines()[0]}") from None
    if tokenizer is not None:
        align_special_tokens(model, tokenizer)
    return fuse_activations(model)


def adapter_base(path: str | os.PathLike) -> str | None:
    """The base model directory an adapter directory was trained on (None for an ordinary model directory)."""
    path = Path(path)
    if (path / "config.json").exists() or not (path / ADAPTER_CONFIG).exists():
        return None
    try:
        meta = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise UserError(f"{path / ADAPTER_CONFIG}: invalid JSON: {exc}") from None
    base = meta.get("base_model_name_or_path") if isinstance(meta, dict) else None
    if not isinstance(base, str) or not base:
        raise UserError(f"{path / ADAPTER_CONFIG}: no base_model_name_or_path: cannot find the adapter's base")
    return base


def apply_adapter(model: torch.nn.Module, path: str | os.PathLike) -> torch.nn.Module:
    """Load the adapter saved in `path` onto `model` (its base) and merge it."""
    import peft  # optional (pip install 'rlhfkit[lora]'): only an adapter directory needs it

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return peft.PeftModel.from_pretrained(model, str(path)).merge_and_unload()
    except (OSError, ValueError, KeyError, TypeError, AttributeError, RuntimeError) as exc:
        raise UserError(f"{path}: cannot load the LoRA adapter: {str(exc).splitlines()[0]}") from None


def fuse_activations(model: torch.nn.Module) -> torch.nn.Module:
    """Swap GPT-2's tanh-GELU written as eight element-wise ops (`gelu_new`) for PyTorch's one fused kernel of the
    same formula, 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))): equal up to float rounding, ~20% faster training
    steps and less activation memory on small models (`rlhf bench sft`, when it was introduced). The saved config
    is unchanged."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is NewGELUActivation:
                setattr(module, name, GELUTanh())
    return model


def align_special_tokens(model, tokenizer) -> None:
    """The model's pad id is the tokenizer's; EOS ids stay as the checkpoint has them — a generation_config list
    (e.g. Llama-3's [<|end_of_text|>, <|eot_id|>]) is kept, with the tokenizer's EOS added when it is missing."""
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    if getattr(model.config, "eos_token_id", None) is None:
        model.config.eos_token_id = tokenizer.eos_token_id
    generation = getattr(model, "generation_config", None)
    if generation is None:  # a backbone without a head (reward models)
        return
    generation.pad_token_id = tokenizer.pad_token_id
    eos = generation.eos_token_id
    if eos is None:
        generation.eos_token_id = tokenizer.eos_token_id
    elif isinstance(eos, list) and tokenizer.eos_token_id not in eos:
        generation.eos_token_id = eos + [tokenizer.eos_token_id]
    elif isinstance(eos, int) and eos != tokenizer.eos_token_id:
        generation.eos_token_id = [eos, tokenizer.eos_token_id]


def disable_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """RLHF trains without dropout: the PPO ratio and the reward must not depend on dropout noise."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    return model


def pick_device(name: str = "auto") -> torch.device:
    """`--device`: auto (CUDA when there is one, else the CPU), cpu, cuda, cuda:N or mps; a device this machine
    does not have is a user error here, before any work (not an AssertionError at the first `.to(device)`)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"config key 'device': unknown device {name!r} (cpu, cuda, cuda:N, mps or auto)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"config key 'device': {name!r} but CUDA is not available on this machine "
                            "(use --device cpu or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"config key 'device': {name!r} but this machine has {torch.cuda.device_count()} "
                            "CUDA device(s) (cuda:0 ...)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise UserError(f"config key 'device': {name!r} but MPS (Apple GPU) is not available on this machine "
                            "(use --device cpu or auto)")
    elif device.type != "cpu":
        raise UserError(f"config key 'device': unsupported device {name!r} (cpu, cuda, cuda:N, mps or auto)")
    return device
