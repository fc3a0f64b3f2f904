"""The peers of `rlhf bench rm` and `rlhf bench sft`: TRL's `RewardTrainer` and `SFTTrainer` on the same data and model.

Run under .venv-peer-latest (TRL 1.16.0; bench/run_all.py does; it also runs under .venv-peer, TRL 0.29.1):

    peer_train.py rm  --model DIR --data pairs.jsonl --batch 32       (pairs, or rankings: their C(K,2) pairs)
    peer_train.py sft --model DIR --data demos.jsonl --batch 32

DIR is the random GPT-2 (with its tokenizer) that `rlhf bench` trains too; the JSONL is the same file. The records
are tokenized here exactly as rlhfkit does (prompt ids + completion ids + EOS), and handed to TRL pre-tokenized,
so both sides train on identical token sequences (TRL's text path would glue prompt and completion without a
space). TRL's defaults that would change the work are set to match ours: fp32 instead of bf16, no gradient
checkpointing. Rankings of K outputs are expanded to their C(K,2) pairs (TRL's preference format, as `rlhf data pairs`
writes it), `batch` rankings' worth of pairs per step. The clock runs from the end of optimizer step `warmup` to
the end of the last full step.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import torch

from peer_common import StepClock, emit, peak_rss_mb, setup_threads, trl_version


def encode(tok, text: str) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("kind", choices=["rm", "sft"])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    for name, default in (("batch", 32), ("warmup", 1), ("seed", 0), ("threads", 0)):
        parser.add_argument(f"--{name}", type=int, default=default)
    args = parser.parse_args()
    setup_threads(args.threads)

    from datasets import Dataset
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model)
    records = [json.loads(line) for line in open(args.data, encoding="utf-8")]
    eos = [tok.eos_token_id]
    common = dict(per_device_train_batch_size=args.batch, num_train_epochs=1, learning_rate=1e-4, max_grad_norm=1.0,
                  bf16=False, fp16=False, gradient_checkpointing=False, use_cpu=True, report_to="none",
                  save_strategy="no", logging_steps=10**9, disable_tqdm=True, seed=args.seed,
                  dataloader_num_workers=0, dataloader_drop_last=True)
    clock = StepClock()
    with tempfile.TemporaryDirectory(prefix="trl-train-") as out:
        if args.kind == "rm":
            from transformers import AutoModelForSequenceClassification
            from trl import RewardConfig, RewardTrainer
            rows = {"chosen_ids": [], "rejected_ids": []}
            for r in records:  # a ranking of K (best first, no ties) is its C(K,2) pairs, as `rlhf data pairs` writes
                prompt = encode(tok, r["prompt"])
                outputs = [r["chosen"], r["rejected"]] if "chosen" in r else r["completions"]
                order = [0, 1] if "chosen" in r else [group[0] for group in r["ranking"]]
                ids = [prompt + encode(tok, outputs[i]) + eos for i in order]
                for w in range(len(ids)):
                    for l in range(w + 1, len(ids)):
                        rows["chosen_ids"].append(ids[w])
                        rows["rejected_ids"].append(ids[l])
            pairs_per_record = len(rows["chosen_ids"]) // len(records)
            seq = max(len(x) for x in rows["chosen_ids"] + rows["rejected_ids"])
            model = AutoModelForSequenceClassification.from_pretrained(args.model, num_labels=1)
            common["per_device_train_batch_size"] = args.batch * pairs_per_record  # the pairs of `batch` rankings
            trainer = RewardTrainer(model=model, args=RewardConfig(output_dir=out, max_length=seq, **common),
                                    train_dataset=Dataset.from_dict(rows), processing_class=tok, callbacks=[clock])
            seqs_per_step = 2 * args.batch * pairs_per_record
        else:
            from transformers import AutoModelForCausalLM
            from trl import SFTConfig, SFTTrainer
            rows = {"input_ids": [], "completion_mask": []}
            for r in records:
                prompt, completion = encode(tok, r["prompt"]), encode(tok, r["completion"]) + eos
                rows["input_ids"].append(prompt + completion)
                rows["completion_mask"].append([0] * len(prompt) + [1] * len(completion))
            seq = max(len(x) for x in rows["input_ids"])
            model = AutoModelForCausalLM.from_pretrained(args.model)
            trainer = SFTTrainer(model=model, args=SFTConfig(output_dir=out, max_length=seq, **common),
                                 train_dataset=Dataset.from_dict(rows), processing_class=tok, callbacks=[clock])
            seqs_per_step = args.batch
        trainer.train()
    steps = len(records) // args.batch
    ends = clock.ends[:steps]
    assert len(ends) == steps, f"expected {steps} optimizer steps, saw {len(clock.ends)}"
    timed = steps - args.warmup
    (wall0, cpu0), (wall1, cpu1) = ends[args.warmup - 1], ends[-1]
    elapsed = wall1 - wall0
    tokens = timed * seqs_per_step * seq
    cfg = model.config
    emit({"bench": args.kind, "impl": f"trl-{trl_version()}", "layers": cfg.n_layer, "dim": cfg.n_embd,
          "heads": cfg.n_head, "vocab": cfg.vocab_size, "seq": seq, "batch": args.batch, "timed_steps": timed,
          **({"pairs_per_s": round(timed * args.batch * pairs_per_record / elapsed, 1)} if args.kind == "rm" else {}),
          "threads": torch.get_num_threads(), "tokens_per_s": round(tokens / elapsed, 1),
          "seconds": round(elapsed, 3), "cpu_s": round(cpu1 - cpu0, 3), "peak_rss_mb": round(peak_rss_mb(), 1)})


if __name__ == "__main__":
    main()
