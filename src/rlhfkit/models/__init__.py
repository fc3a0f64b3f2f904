"""Loading policies, tokenizers, and the scalar-head models (reward and value)."""
