"""Scalar-head models: the reward model r_θ(x, y) and the value model V_φ(x, y_<t).

Both are a causal LM's transformer (`AutoModel`, the LM head dropped) plus a linear head d → 1:

    h_t = backbone(x, y)_t            r(x, y) = w·h_T + b   (T: the response's last real token, its EOS)
                                      V(x, y_<t) = w·h_{t−1} + b   (every position)

InstructGPT §3.5 trains the RM from the SFT model with the unembedding replaced by a projection to a
scalar; the value function starts from the RM (InstructGPT App. C.3). The head is initialized
N(0, 1/√(d+1)) as in Stiennon et al. 2020 App. B.

On disk a scalar model is the standard reward-model format, what TRL's RewardTrainer, OpenRLHF and reward
benchmarks write and read: an `XForSequenceClassification` (GPT2ForSequenceClassification,
LlamaForSequenceClassification, ...) with `num_labels=1`, its head `score` (bias-free, as transformers builds it)
= w, and the tokenizer beside it. The bias b (InstructGPT's normalization: demonstrations score 0) cannot live in
a bias-free head, so it goes in config.json as OpenRLHF keeps its reward normalization: `normalize_reward`,
`mean` = −b, `std` = 1, and r = (w·h − mean)/std. Plain transformers returns w·h (the logit); subtract `mean` to
get rlhfkit's score. `rlhfkit_read_at` says where the score is read:

- transformers reads a row at its last token that is not `pad_token_id`. rlhfkit reads the same token: the last
  one that the attention mask keeps and that is not `pad_token_id` (`read_index`). When pad == EOS (common) that
  rule would skip the EOS a finished response ends with, so our models save a pad id that is not EOS
  (`reading_pad`): the pad itself when it differs, else unk, else another special token the chat template never
  writes, else BOS, else the NUL byte's token, else the last id of the vocabulary — and the saved tokenizer pads
  with it. Someone else's model is read as transformers reads it, whatever its pad.

An architecture that transformers gives no `XForSequenceClassification` (Cohere, Granite, OLMoE, Mamba, ... in
transformers 5.24), or one whose classifier is not a last-token `score`, is saved in the same layout by
transformers' own generic classifier: `classifier_class` puts `transformers.modeling_layers.
GenericForSequenceClassification` (what transformers' Llama, Qwen2, Gemma2, ... classifiers are made of: the
transformer as `model`, a bias-free `score`) on the architecture's `XPreTrainedModel`, named
`XForSequenceClassification` (`XForLastTokenClassification` where transformers' own reads something else: BERT's
reads its first token). The directory is what transformers would write for such a class: config.json names it in
`architectures` and says how it was made (`rlhfkit_classifier`); model.safetensors holds `model.*` and
`score.weight`. rlhfkit loads it back (`classifier_class(config).from_pretrained(path)` is the whole classifier);
plain transformers loads the transformer with `AutoModel.from_pretrained(path)`, w being `score.weight` in
model.safetensors (`AutoModelForSequenceClassification` does not know the class). An architecture
with no decoder transformer to put a head on (an encoder-decoder's LM head such as Marian's or Whisper's, a
decoder without its own `AutoModel`) is refused in one line before `rlhf rm` trains (`check_scalar_architecture`).

Older rlhfkit directories (the backbone + `scalar_head.safetensors`) still load, read at the last real token;
`rlhf data convert-rm` rewrites one in the standard format. An RM saved with `--lora-save adapter` keeps that
layout (an adapter cannot be a sequence classifier without its base).
"""

from __future__ import annotations

import copy
import functools
import json
import math
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel
from transformers.modeling_layers import GenericForSequenceClassification
from transformers.models.auto.modeling_auto import (
    MODEL_FOR_CAUSAL_LM_MAPPING,
    MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING,
    MODEL_MAPPING,
)

from rlhfkit.data.chat import Truncation, completion_ids, is_conversation, prompt_ids, stop_ids
from rlhfkit.data.collate import pad_right, position_ids
from rlhfkit.errors import UserError
from rlhfkit.models.loading import (
    LOAD_ERRORS,
    OLD_HEAD_WEIGHTS,
    adapter_base,
    align_special_tokens,
    apply_adapter,
    check_causal_lm,
    check_model_dir,
    check_reward_dir,
    disable_dropout,
    fuse_activations,
)
from rlhfkit.models.packing import pack_for, packed_rows, supports_packing

HEAD_WEIGHTS = OLD_HEAD_WEIGHTS
HEAD_META = "scalar_head.json"
NUL_TOKENS = ("Ā", "<0x00>")  # byte 0 in GPT-2's byte-level alphabet and in SentencePiece's byte fallback
READ_AT = ("the last token of each row that the attention mask keeps and that is not pad_token_id (transformers' "
           "rule); pad_token_id is never EOS, so a finished response is read at its EOS")


class ScalarModel(nn.Module):
    """A transformer backbone with a scalar head. `forward` gives one value per position, `score` one per row.

    `pad_token_id`: the id `score` never reads (None: read at the last real token)."""

    def __init__(self, backbone: nn.Module, head: nn.Linear, pad_token_id: int | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.pad_token_id = pad_token_id

    @property
    def config(self):
        return self.backbone.config

    # ---------------------------------------------------------------------------------------- building

    @classmethod
    def from_backbone(cls, path: str | os.PathLike, tokenizer=None, dtype: torch.dtype = torch.float32,
                      seed: int = 0) -> "ScalarModel":
        """A fresh head on the transformer of a causal LM directory (the SFT policy, for a reward model). A
        reward model is refused: its head would be dropped without a word (start from the SFT policy)."""
        check_causal_lm(path, "reward model's start (`rlhf rm --model`: the SFT policy, whose LM head is "
                              "replaced by a fresh scalar head)")
        check_scalar_architecture(path)  # before any training: the model must have a layout to be saved in
        backbone = _load_backbone(path, dtype)
        if tokenizer is not None:
            align_special_tokens(backbone, tokenizer)
        d = backbone.config.hidden_size
        head = nn.Linear(d, 1, dtype=dtype)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():  # N(0, 1/√(d+1)): Stiennon et al. 2020, App. B
            head.weight.copy_(torch.randn(head.weight.shape, generator=generator) / math.sqrt(d + 1))
            head.bias.zero_()
        pad = reading_pad(tokenizer) if tokenizer is not None else None
        return cls(disable_dropout(backbone), head, pad)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, dtype: torch.dtype = torch.float32,
                        role: str = "reward model") -> "ScalarModel":
        """Any reward/value model directory: a sequence classifier with num_labels=1 (from `rlhf rm`, TRL,
        OpenRLHF, ...; its normalization `mean`/`std` applied when `normalize_reward` is set) or rlhfkit's older
        layout. A causal LM or a classifier with several labels is refused with one line."""
        path = check_model_dir(path, role)
        check_reward_dir(path, role)
        if (path / HEAD_WEIGHTS).exists():
            return _load_old_layout(path, dtype)
        try:
            config = AutoConfig.from_pretrained(path)
            seq = classifier_class(config, path).from_pretrained(path, config=config, dtype=dtype)
        except LOAD_ERRORS as exc:
            raise UserError(f"{path}: cannot load a sequence classifier: {str(exc).splitlines()[0]}") from None
        score = getattr(seq, "score", None)
        if not isinstance(score, nn.Linear) or score.out_features != 1:
            raise UserError(f"{path}: {type(seq).__name__} has no linear `score` head with one output")
        config = seq.config
        mean, std = 0.0, 1.0
        if getattr(config, "normalize_reward", False):  # OpenRLHF's keys: r = (w·h − mean) / std
            mean, std = float(getattr(config, "mean", 0.0)), float(getattr(config, "std", 1.0))
        head = nn.Linear(score.in_features, 1, dtype=dtype)
        with torch.no_grad():
            head.weight.copy_(score.weight / std)
            head.bias.fill_(-mean / std)
            if score.bias is not None:
                head.bias += score.bias / std
        backbone = fuse_activations(getattr(seq, seq.base_model_prefix))
        return cls(disable_dropout(backbone), head, config.pad_token_id)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """The standard format (module docstring); a LoRA backbone saved as an adapter: the older layout."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if hasattr(self.backbone, "peft_config"):
            self.backbone.save_pretrained(path)
            save_file({k: v.detach().contiguous().cpu() for k, v in self.head.state_dict().items()},
                      path / HEAD_WEIGHTS)
            meta = {"kind": "rlhfkit scalar head", "hidden_size": self.head.in_features, "read_at": READ_AT,
                    "pad_token_id": self.pad_token_id}
            (path / HEAD_META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            return
        self.sequence_classifier().save_pretrained(path)

    def sequence_classifier(self) -> nn.Module:
        """This model as an `XForSequenceClassification` sharing its weights: the backbone, score = w, and
        b in config.json (`mean` = −b)."""
        config = copy.deepcopy(self.backbone.config)
        config.num_labels = 1
        config.pad_token_id = self.pad_token_id
        bias = float(self.head.bias.detach().float()) if self.head.bias is not None else 0.0
        config.normalize_reward, config.mean, config.std = bias != 0.0, -bias, 1.0
        config.rlhfkit_read_at = READ_AT
        cls = classifier_class(config)
        if getattr(cls, "rlhfkit_generic", False):
            config.rlhfkit_classifier = generic_note(cls)
        with torch.device("meta"):  # the parts are replaced by ours below: allocate nothing
            seq = cls(config)
        setattr(seq, seq.base_model_prefix, self.backbone)
        seq.score = nn.Linear(self.head.in_features, 1, bias=False, dtype=self.head.weight.dtype,
                              device=self.head.weight.device)
        with torch.no_grad():
            seq.score.weight.copy_(self.head.weight)
        return seq

    # ----------------------------------------------------------------------------------------- calling

    def hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
               positions: torch.Tensor | None = None) -> torch.Tensor:
        if positions is None:
            positions = position_ids(attention_mask)
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions,
                            use_cache=False)
        return out.last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                positions: torch.Tensor | None = None) -> torch.Tensor:
        """One scalar per position [B, T] (the value model reads V(x, y_<t) from these)."""
        return self.head(self.hidden(input_ids, attention_mask, positions)).squeeze(-1).float()

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, packing: bool = False) -> torch.Tensor:
        """r(x, y) [B]: the head read at each row's last real token that is not the pad id (`read_index`).
        `packing`: the rows packed without padding (`models/packing.py`), each read at that token's packed place."""
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        at = read_index(input_ids, attention_mask, self.pad_token_id)
        if packing and supports_packing(self):
            p = pack_for(self.backbone, input_ids, attention_mask)
            with packed_rows():  # transformers' "may be padded" warning is a false alarm on packed rows
                hidden = self.hidden(p.input_ids, None, p.position_ids)
            return self.head(hidden.reshape(-1, hidden.shape[-1])[p.index[rows, at]]).squeeze(-1).float()
        hidden = self.hidden(input_ids, attention_mask)
        return self.head(hidden[rows, at]).squeeze(-1).float()

    # ------------------------------------------------------------ what train/distributed.py asks of a model

    def parallel_roots(self) -> dict[str, nn.Module]:
        """The parts that must each be a DDP/FSDP root: `score()` reaches the backbone and the head without
        passing through `forward()`, so a wrapper around the whole model would miss those calls."""
        return {"backbone": self.backbone, "head": self.head}

    def with_roots(self, roots: dict[str, nn.Module]) -> "ScalarModel":
        """The same model with its parts replaced (by their DDP wrappers)."""
        return type(self)(roots["backbone"], roots["head"], self.pad_token_id)

    def autocast_root(self) -> nn.Module:
        """The part that runs under --bf16 autocast: the transformer (the head reads float32)."""
        return self.backbone

    def empty_copy(self) -> "ScalarModel":
        """A model of the same architecture with ordinary (unsharded) parameters, on the CPU, to load gathered
        weights into."""
        return ScalarModel(AutoModel.from_config(self.config), nn.Linear(self.head.in_features, 1),
                           self.pad_token_id)

    @torch.no_grad()
    def shift_bias(self, amount: float) -> None:
        """r ← r − amount: InstructGPT normalizes the RM so that demonstrations score 0 on average."""
        self.head.bias -= amount


def check_scalar_architecture(path: str | os.PathLike) -> None:
    """Refuse, in one line and before any training, a causal LM whose architecture has no layout to save a
    scalar model in (`classifier_class`). Reads config.json only (an adapter directory: its base's)."""
    try:
        config = AutoConfig.from_pretrained(adapter_base(path) or path)
    except LOAD_ERRORS as exc:
        raise UserError(f"{path}: cannot read the model's config: {str(exc).splitlines()[0]}") from None
    classifier_class(config, path)


def classifier_class(config: PretrainedConfig, where: str | os.PathLike | None = None) -> type[PreTrainedModel]:
    """The `XForSequenceClassification` a scalar model of `config`'s architecture is saved and loaded as:
    transformers' own, else transformers' generic classifier on the architecture's `XPreTrainedModel` (module
    docstring). An encoder-decoder, or an architecture without its own transformer class, is a user error."""
    if type(config) in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING:
        native = MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)]
        # a directory that names it (someone's RM) loads as it is; ours need a last-token `score` (not BERT's
        # pooled first token: BertForSequenceClassification has `classifier`)
        generic = getattr(config, "rlhfkit_classifier", None) is not None  # saved by us as the generic one
        if not generic and (native.__name__ in (getattr(config, "architectures", None) or [])
                            or _reads_with_score(native, config)):
            return native
    backbone = MODEL_MAPPING[type(config)] if type(config) in MODEL_MAPPING else None
    if backbone is None:
        why = "transformers has no transformer class (AutoModel) for it"
    elif getattr(config, "is_encoder_decoder", False) or not _lm_holds(type(config), backbone):
        why = (f"its causal LM is not {backbone.__name__} (its AutoModel) with an LM head on top (the decoder half "
               "of an encoder-decoder, or a multimodal model)")
    else:  # named as transformers names its own, unless it has one (which is not a last-token `score`)
        taken = type(config) in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING
        return _generic_classifier(backbone, "ForLastTokenClassification" if taken else "ForSequenceClassification")
    raise UserError(f"{where or config.model_type}: a reward or value model cannot be built on "
                    f"'{config.model_type}': {why}, and transformers has no sequence classifier for it that "
                    "reads the last token; start from a decoder-only causal LM")


@functools.cache
def _lm_holds(config_class: type, backbone: type | None) -> bool:
    """Whether the causal LM of `config_class` is `backbone` (its AutoModel) plus a head, as Cohere's is
    CohereModel + lm_head; Marian's is a decoder wrapper, its AutoModel the whole encoder-decoder. Built on the
    meta device (nothing allocated) from the default config."""
    if backbone is None or config_class not in MODEL_FOR_CAUSAL_LM_MAPPING:
        return False
    try:
        with torch.device("meta"):
            lm = MODEL_FOR_CAUSAL_LM_MAPPING[config_class](config_class())
    except LOAD_ERRORS:  # a default config that does not build: no known transformer to put a head on
        return False
    return any(type(m) is backbone for m in lm.modules())


def _reads_with_score(native: type, config: PretrainedConfig) -> bool:
    """Whether transformers' own classifier of this architecture is a backbone + a linear `score` (GPT-2's,
    Llama's, ...), built on the meta device."""
    config = copy.deepcopy(config)
    config.num_labels = 1
    try:
        with torch.device("meta"):
            return isinstance(getattr(native(config), "score", None), nn.Linear)
    except (*LOAD_ERRORS, AssertionError):  # a config this class cannot be built from (torch asserts on some)
        return False


@functools.cache
def _generic_classifier(backbone: type[PreTrainedModel], suffix: str) -> type[PreTrainedModel]:
    """GenericForSequenceClassification + `backbone`'s XPreTrainedModel, named X + `suffix`."""
    pretrained = next(c for c in backbone.__mro__[1:]
                      if issubclass(c, PreTrainedModel) and c is not PreTrainedModel)
    name = backbone.__name__.removesuffix("Model") + suffix
    # in the architecture's module, where transformers would define it (its checks read that module's source)
    return type(name, (GenericForSequenceClassification, pretrained),
                {"__module__": pretrained.__module__, "rlhfkit_generic": True})


def generic_note(cls: type) -> str:
    """What config.json says of a classifier transformers does not have (module docstring)."""
    return (f"{cls.__name__} is transformers.modeling_layers.GenericForSequenceClassification on "
            f"{cls.__mro__[2].__name__} (this transformers has none of its own): load it with rlhfkit "
            "(rlhfkit.models.scalar.classifier_class(config).from_pretrained), or the transformer with AutoModel "
            "and w = score.weight; r = w·h at the last token that is not pad_token_id, minus mean")


def read_index(input_ids: torch.Tensor, attention_mask: torch.Tensor, pad_id: int | None) -> torch.Tensor:
    """Where each row's score is read: its last position that the mask keeps and whose id is not `pad_id` —
    transformers' `XForSequenceClassification` rule (last non-pad token) on rows padded either side; 0 for a
    row with none."""
    keep = attention_mask.bool()
    if pad_id is not None:
        keep = keep & (input_ids != pad_id)
    positions = torch.arange(input_ids.shape[-1], device=input_ids.device)
    return (positions * keep.long()).argmax(-1)


def reading_pad(tokenizer) -> int:
    """The pad id a saved reward model declares (module docstring): never EOS nor a stop token, so that
    transformers' last-non-pad rule reads a finished response at its EOS."""
    avoid = set(stop_ids(tokenizer, None, bool(tokenizer.chat_template))) | {tokenizer.eos_token_id}
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    specials = [tokenizer.convert_tokens_to_ids(t) for t in tokenizer.all_special_tokens]
    unused = [i for t, i in zip(tokenizer.all_special_tokens, specials)
              if t not in template and i not in (tokenizer.bos_token_id, tokenizer.unk_token_id)]
    vocab = tokenizer.get_vocab()
    nul = [vocab.get(t) for t in NUL_TOKENS]  # a byte-level vocabulary's NUL byte: never at the end of a response
    for candidate in (tokenizer.pad_token_id, tokenizer.unk_token_id, *unused, tokenizer.bos_token_id, *nul):
        if candidate is not None and candidate not in avoid:
            return candidate
    return max(i for i in vocab.values() if i not in avoid)


def tokenizer_for(tokenizer, pad_id: int):
    """A copy of `tokenizer` that pads with `pad_id` (what a saved reward model's tokenizer pads with)."""
    out = copy.deepcopy(tokenizer)
    out.pad_token = out.convert_ids_to_tokens(pad_id)
    return out


def _load_old_layout(path: Path, dtype) -> ScalarModel:
    backbone = _load_backbone(path, dtype)
    state = load_file(path / HEAD_WEIGHTS)
    head = nn.Linear(state["weight"].shape[1], 1, dtype=dtype)
    head.load_state_dict({k: v.to(dtype) for k, v in state.items()})
    meta_path = path / HEAD_META
    pad = None  # read at the last real token, as before
    if meta_path.exists():
        try:
            pad = json.loads(meta_path.read_text(encoding="utf-8")).get("pad_token_id")
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            pad = None
    return ScalarModel(disable_dropout(backbone), head, pad if isinstance(pad, int) else None)


def _load_backbone(path, dtype):
    path = check_model_dir(path)
    base = adapter_base(path)
    if base is not None:  # saved with --lora-save adapter: the base transformer, with the adapter merged in
        return apply_adapter(_load_backbone(base, dtype), path)
    try:
        return fuse_activations(AutoModel.from_pretrained(path, dtype=dtype))
    except LOAD_ERRORS as exc:
        raise UserError(f"{path}: cannot load a transformer backbone: {str(exc).splitlines()[0]}") from None


def response_sequences(tokenizer, prompts: list, texts: list, finished: list[bool] | None = None,
                       max_length: int = 256, truncation: Truncation | None = None,
                       where: str = "a response") -> list[list[int]]:
    """prompt + response token ids as the policy generates them (`data/chat.py`): the stop token (EOS, or a
    template's end-of-turn) kept when the response ended — as PPO's rollouts hold it. The RM reads the last one.

    Too long: the prompt loses tokens on the left, the response on the right (`truncation` counts or refuses)."""
    finished = finished if finished is not None else [True] * len(texts)
    truncation = truncation or Truncation(max_length)
    stops = stop_ids(tokenizer, None, True) if any(is_conversation(p) for p in prompts) else None
    rows, cache = [], {}
    for prompt, text, done in zip(prompts, texts, finished):
        key = id(prompt)
        if key not in cache:
            cache[key] = prompt_ids(tokenizer, prompt)
        head = cache[key]
        target = completion_ids(tokenizer, prompt, text, done, head, stops, whole=True)  # a trajectory whole
        head, target = truncation.pair(head, target, tokenizer.bos_token_id, where)
        rows.append(head + target)
    return rows


@torch.no_grad()
def score_sequences(model: ScalarModel, rows: list[list[int]], pad_id: int, batch_size: int = 128,
                    packing: bool = False) -> list[float]:
    """r(x, y) of token-id rows, right-padded in batches of similar length (order preserved); `packing`: each
    batch scored packed (`ScalarModel.score`)."""
    device = next(model.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    out = [0.0] * len(rows)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        ids = pad_right([rows[i] for i in idx], pad_id).to(device)
        mask = pad_right([[1] * len(rows[i]) for i in idx], 0).to(device)
        for i, value in zip(idx, model.score(ids, mask, packing=packing).tolist()):
            out[i] = value
    return out


def score_texts(model: ScalarModel, tokenizer, prompts: list, texts: list,
                finished: list[bool] | None = None, batch_size: int = 128, packing: bool = False) -> list[float]:
    """r(x, y) of (prompt, response) texts (`packing`: as `score_sequences`)."""
    return score_sequences(model, response_sequences(tokenizer, prompts, texts, finished), tokenizer.pad_token_id,
                           batch_size, packing)
