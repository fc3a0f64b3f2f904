"""A word-level tokenizer for the toy world: one token per space-separated word.

Built with the `tokenizers` WordLevel model and wrapped in `transformers.PreTrainedTokenizerFast`, so it
is saved with `save_pretrained` and loaded with `AutoTokenizer` like any Hugging Face tokenizer.
pad, eos and unk are three distinct special tokens (pad ≠ EOS: docs/design.md §4).
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"


def build_tokenizer(words: Iterable[str]):
    vocab = {PAD: 0, EOS: 1, UNK: 2}
    for word in sorted(set(words) - set(vocab)):
        vocab[word] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=UNK,
                                   model_max_length=1024, padding_side="right")
