"""Cross-check: reward models move between TRL 1.16 and rlhfkit with the same scores (issue 17).

For two tokenizer setups (ChatML and Llama-3; byte-level BPE trained in-process, tests/tokenizers_zoo.py) and a
tiny random Llama policy:

1. `rlhf rm` trains our reward model on 48 preference pairs;
2. in `.venv-peer-latest`, TRL's RewardTrainer trains its reward model on the same pairs (bench/peer_rm_trl.py),
   and TRL scores its tokenized rows with both models through its own collator and forward pass;
3. rlhfkit scores the same token rows with TRL's model (`RewardModel.load`): |Δ| against TRL's scores;
   plain transformers/TRL score our model: |Δ| against rlhfkit's (rlhfkit subtracts config.json's `mean`,
   our bias; TRL's logit is the raw head, so the comparison adds it back — models/scalar.py);
4. `rlhf eval rm` and `rlhf ppo` (RLOO and GAE, 2 iterations) accept TRL's directory.

    python bench/peer_rm_check.py [--out DIR]    (prints a JSON summary; exit 1 when a check fails)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]

from rlhfkit.cli import main as cli_main  # noqa: E402
from rlhfkit.models.loading import load_tokenizer  # noqa: E402
from rlhfkit.models.reward_model import RewardModel  # noqa: E402
from rlhfkit.models.scalar import ScalarModel, score_sequences  # noqa: E402
from tests.tokenizers_zoo import save_tiny_model, sentences  # noqa: E402

PEER_PYTHON = ROOT / ".venv-peer-latest" / "bin" / "python"
TOLERANCE = 1e-5


def rlhf(args: list) -> int:
    """`rlhf ARGS` in this process; its exit code."""
    return cli_main([str(a) for a in args])


def write_pairs(path: Path, n: int = 48) -> None:
    """Plain-text pairs: the chosen completion is a full sentence, the rejected one its first two words."""
    text = sentences()
    rows = []
    for i in range(n):
        words = text[i].split()
        rows.append({"prompt": f"Say something about {' '.join(words[:2])}:", "chosen": " " + text[i],
                     "rejected": " " + " ".join(words[:2])})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def max_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def check_setup(setup: str, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    policy = save_tiny_model(out / "policy", setup, "llama")
    pairs, prompts = out / "pairs.jsonl", out / "prompts.jsonl"
    write_pairs(pairs)
    prompts.write_text("".join(json.dumps({"prompt": json.loads(line)["prompt"]}) + "\n"
                               for line in pairs.read_text().splitlines()))
    quiet = ["--threads", "1", "--seed", "0"]
    assert rlhf(["rm", "--model", policy, "--data", pairs, "--out", out / "our_rm", "--batch-size", "8",
                 "--lr", "1e-3", "--eval-fraction", "0", *quiet]) == 0
    env = dict(os.environ, OMP_NUM_THREADS="1", TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", PYTHONPATH="")
    done = subprocess.run([str(PEER_PYTHON), str(ROOT / "bench" / "peer_rm_trl.py"), str(policy), str(pairs),
                           str(out / "our_rm"), str(out)], env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"TRL side failed:\n{done.stderr[-3000:]}")
    trl = json.loads((out / "trl_side.json").read_text())

    tokenizer = load_tokenizer(policy)
    result = {"setup": setup, "pairs": len(trl["trl_rm"]["chosen"])}
    # 3a. TRL's RM in rlhfkit, on TRL's token rows
    theirs = RewardModel.load(out / "trl_rm", tokenizer)
    side = trl["trl_rm"]
    rows = side["chosen_ids"] + side["rejected_ids"]
    ours_of_theirs = score_sequences(theirs.model, rows, side["pad_token_id"])
    result["trl_rm_in_rlhfkit_max_abs_diff"] = max_diff(ours_of_theirs, side["chosen"] + side["rejected"])
    result["trl_rm_same_tokenizer"] = theirs.same
    # ... and through the text path (our tokenization of prompt + completion)
    records = [json.loads(line) for line in pairs.read_text().splitlines()]
    texts = theirs.score_texts([r["prompt"] for r in records], [r["chosen"] for r in records]).tolist()
    result["trl_rm_text_path_max_abs_diff"] = max_diff(texts, side["chosen"])
    # 3b. our RM in TRL, on TRL's token rows
    ours = ScalarModel.from_pretrained(out / "our_rm").eval()
    side = trl["ours_in_trl"]
    rows = side["chosen_ids"] + side["rejected_ids"]
    mean = side["config_mean"] or 0.0
    rlhfkit_raw = [s + mean for s in score_sequences(ours, rows, side["pad_token_id"])]
    result["our_rm_in_trl_max_abs_diff"] = max_diff(rlhfkit_raw, side["chosen"] + side["rejected"])
    result["our_rm_config_mean"] = mean
    result["our_rm_num_labels_in_transformers"] = side["num_labels"]
    # 4. the CLI accepts TRL's directory
    result["eval_rm_exit"] = rlhf(["eval", "rm", "--rm", out / "trl_rm", "--data", pairs,
                                   "--json-out", out / "eval_rm.json"])
    result["eval_rm_accuracy"] = json.loads((out / "eval_rm.json").read_text())["heldout_accuracy"]
    for advantage in ("rloo", "gae"):
        code = rlhf(["ppo", "--policy", policy, "--reward", out / "trl_rm", "--prompts", prompts,
                     "--out", out / f"ppo_{advantage}", "--advantage", advantage, "--ppo-steps", "2",
                     "--batch-size", "4", "--minibatch-size", "2", "--num-generations", "2", "--ppo-epochs", "1",
                     "--max-new-tokens", "8", *quiet])
        result[f"ppo_{advantage}_exit"] = code
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="working directory (default: a temporary one)")
    args = parser.parse_args()
    if not PEER_PYTHON.exists():
        print(f"{PEER_PYTHON}: missing; build it with `make bench` (bench/run_all.py ensure_peer_env)",
              file=sys.stderr)
        return 2
    out = Path(args.out or tempfile.mkdtemp(prefix="peer-rm-"))
    results = [check_setup(setup, out / setup) for setup in ("chatml", "llama3")]
    ok = all(r["trl_rm_in_rlhfkit_max_abs_diff"] <= TOLERANCE and r["our_rm_in_trl_max_abs_diff"] <= TOLERANCE
             and r["eval_rm_exit"] == 0 and r["ppo_rloo_exit"] == 0 and r["ppo_gae_exit"] == 0
             and r["our_rm_num_labels_in_transformers"] == 1 for r in results)
    print(json.dumps({"ok": ok, "tolerance": TOLERANCE, "setups": results}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
