"""What every TRL peer script shares: the benchmark's tokenizer, model shape, timing and the JSON line.

Runs under `.venv-peer` (TRL and its own pins), so it imports nothing from rlhfkit; the shapes, the
vocabulary and the random data match `rlhfkit.recipes.bench` exactly (word-level tokens w0, w1, ..., plus <pad>,
<eos>, <unk>; GPT-2 without dropout, tied embeddings).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import torch

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"


def shape_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    for name, default in (("layers", 4), ("dim", 128), ("heads", 4), ("vocab", 512), ("seed", 0), ("threads", 0)):
        parser.add_argument(f"--{name}", type=int, default=default)
    return parser


def setup_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


def tokenizer(vocab: int):
    """Exactly `vocab` tokens, ids as in rlhfkit's toy-world tokenizer (specials first, then sorted words)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    ids = {PAD: 0, EOS: 1, UNK: 2}
    for word in sorted(f"w{i}" for i in range(vocab - 3)):
        ids[word] = len(ids)
    core = Tokenizer(models.WordLevel(ids, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS, unk_token=UNK,
                                   model_max_length=1024, padding_side="left")


def gpt2_config(args, tok, n_positions: int, **extra):
    from transformers import GPT2Config
    return GPT2Config(n_positions=n_positions, n_embd=args.dim, n_layer=args.layers, n_head=args.heads,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=True,
                      vocab_size=len(tok), bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, **extra)


def qwen2_config(args, tok, n_positions: int, **extra):
    """`rlhf bench ppo --arch qwen2`'s layout: grouped KV heads, biases on q/k/v, tied head, Qwen2.5's MLP ratio."""
    from transformers import Qwen2Config
    return Qwen2Config(hidden_size=args.dim, intermediate_size=args.dim * 4864 // 896, num_hidden_layers=args.layers,
                       num_attention_heads=args.heads, num_key_value_heads=args.kv_heads or args.heads,
                       max_position_embeddings=n_positions, tie_word_embeddings=True, use_sliding_window=False,
                       vocab_size=len(tok), bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id,
                       pad_token_id=tok.pad_token_id, **extra)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def trl_version() -> str:
    import trl
    return trl.__version__


class StepClock:
    """A transformers TrainerCallback that notes wall and CPU time at the end of every optimizer (or PPO) step."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Clock(TrainerCallback):
            def __init__(self):
                self.ends: list[tuple[float, float]] = []   # (wall, CPU) seconds

            def on_step_end(self, args, state, control, **kwargs):
                import torch
                if torch.cuda.is_available():  # CUDA kernels run asynchronously: wait before reading the clock
                    torch.cuda.synchronize()
                self.ends.append((time.perf_counter(), time.process_time()))

        return _Clock()


def emit(result: dict) -> None:
    print(json.dumps(result), flush=True)


def run_peer_script(python: Path, script: str, src: Path) -> dict:
    """What `script` (in bench/, run by the peer's `python`) saved with torch.save to the file named by its one
    argument: the TRL side of a peer check (peer_loss_check.py, peer_engine_is_check.py)."""
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "TRANSFORMERS_VERBOSITY": "error"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "trl.pt"
        done = subprocess.run([str(python), script, str(out)], cwd=Path(__file__).parent, env=env,
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"bench/{script} failed:\n{done.stderr[-3000:]}")
        return torch.load(out)
