"""Tiny random configs of the ten decoder architectures of issue 16, for the matrix tests (tests/test_matrix.py).

Each is a transformers config of 1-2 layers and width 32-64, as `AutoModelForCausalLM.from_config` builds them;
`tests/tokenizers_zoo.py::save_tiny_model(path, setup, config=arch_config(arch))` sets the vocabulary and the
special-token ids from one of its four tokenizer setups and saves model + tokenizer with `save_pretrained`.
What each architecture brings that the others do not: GPT-2 learned positions and a tied head; Llama/Mistral/
Qwen2/Qwen3 RoPE with grouped KV heads (Qwen2: biases on q/k/v, Qwen3: q/k norms); Gemma a scaled embedding
and GELU; Gemma2 soft-capped logits and local/global attention; Phi3 fused qkv and gate_up projections;
GPT-NeoX partial rotary and parallel residual; OPT positions offset by 2 and ReLU.
"""

from __future__ import annotations

from transformers import (
    Gemma2Config,
    GemmaConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    MistralConfig,
    OPTConfig,
    Phi3Config,
    Qwen2Config,
    Qwen3Config,
)

ARCHS = ("gpt2", "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "gpt_neox", "opt")

POSITIONS = 128  # every model's position limit: small, so the length checks are reached by small inputs

# The default suite pairs each architecture with one tokenizer setup, each setup with two or more architectures
# (the setups a model family ships with where there is one); the full 10 x 4 product runs under `slow`.
PAIRING = {
    "gpt2": "neox", "llama": "llama3", "mistral": "mistral", "qwen2": "chatml", "qwen3": "chatml",
    "gemma": "mistral", "gemma2": "llama3", "phi3": "chatml", "gpt_neox": "neox", "opt": "llama3",
}

# vocab_size 1: `save_tiny_model` raises it to the tokenizer's (the configs' defaults are up to 256,000).
_ROPE = dict(vocab_size=1, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=POSITIONS, tie_word_embeddings=False)


def arch_config(arch: str):
    """A fresh tiny config of `arch` (vocabulary and special ids are filled in by `save_tiny_model`)."""
    if arch == "gpt2":
        return GPT2Config(vocab_size=1, n_positions=POSITIONS, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0,
                          embd_pdrop=0.0, attn_pdrop=0.0)
    if arch == "llama":
        return LlamaConfig(**_ROPE)
    if arch == "mistral":
        return MistralConfig(**_ROPE, sliding_window=None)
    if arch == "qwen2":
        return Qwen2Config(**_ROPE, use_sliding_window=False)
    if arch == "qwen3":
        return Qwen3Config(**_ROPE, head_dim=8, use_sliding_window=False)
    if arch == "gemma":
        return GemmaConfig(**{**_ROPE, "tie_word_embeddings": True}, head_dim=8)
    if arch == "gemma2":
        return Gemma2Config(**{**_ROPE, "tie_word_embeddings": True}, head_dim=8, sliding_window=16,
                            query_pre_attn_scalar=8)
    if arch == "phi3":
        return Phi3Config(**_ROPE, original_max_position_embeddings=POSITIONS, resid_pdrop=0.0, embd_pdrop=0.0,
                          attention_dropout=0.0)
    if arch == "gpt_neox":
        return GPTNeoXConfig(vocab_size=1, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4, max_position_embeddings=POSITIONS, rotary_pct=0.5,
                             use_parallel_residual=True,
                             hidden_dropout=0.0, attention_dropout=0.0, tie_word_embeddings=False)
    if arch == "opt":
        return OPTConfig(vocab_size=1, hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=POSITIONS, word_embed_proj_dim=32, dropout=0.0,
                         attention_dropout=0.0, activation_dropout=0.0, layerdrop=0.0)
    raise ValueError(f"unknown architecture {arch!r} (one of {', '.join(ARCHS)})")
