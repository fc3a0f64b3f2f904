"""The TRL side of `bench/peer_rm_check.py`, run in `.venv-peer-latest` (TRL 1.16): train a reward model with TRL's
RewardTrainer, and score rows with TRL's own pipeline (its tokenization, `DataCollatorForPreference` padding and
`model(**inputs).logits`) — for TRL's model and for a reward model saved by `rlhf rm`.

    python bench/peer_rm_trl.py POLICY_DIR PAIRS_JSONL OUR_RM_DIR OUT_DIR  ->  OUT_DIR/trl_rm, OUT_DIR/trl_side.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from trl import RewardConfig, RewardTrainer
from trl.trainer.reward_trainer import DataCollatorForPreference


def trainer(model, pairs: list[dict], out: Path, steps: int) -> RewardTrainer:
    args = RewardConfig(output_dir=str(out), max_steps=steps, per_device_train_batch_size=8, learning_rate=1e-3,
                        logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0,
                        dataset_num_proc=None, bf16=False)
    tokenizer = AutoTokenizer.from_pretrained(model)
    return RewardTrainer(model=str(model), args=args, train_dataset=Dataset.from_list(pairs),
                         processing_class=tokenizer)


@torch.no_grad()
def trl_scores(t: RewardTrainer) -> dict:
    """TRL's scores of its own tokenized rows (chosen then rejected), padded by its collator, 8 pairs a batch."""
    model = t.model.eval()
    collate = DataCollatorForPreference(pad_token_id=t.processing_class.pad_token_id)
    rows = list(t.train_dataset)
    chosen, rejected = [], []
    for start in range(0, len(rows), 8):
        batch = collate(rows[start:start + 8])
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
        c, r = torch.chunk(logits, 2)
        chosen += c.tolist()
        rejected += r.tolist()
    return {"chosen_ids": [r["chosen_ids"] for r in rows], "rejected_ids": [r["rejected_ids"] for r in rows],
            "chosen": chosen, "rejected": rejected, "pad_token_id": t.processing_class.pad_token_id}


def main() -> int:
    policy, pairs_path, ours, out = (Path(a) for a in sys.argv[1:5])
    pairs = [json.loads(line) for line in pairs_path.read_text().splitlines()]
    trained = trainer(policy, pairs, out / "trl_train", steps=6)
    trained.train()
    trained.save_model(str(out / "trl_rm"))  # model + tokenizer (processing_class)
    result = {"trl_rm": trl_scores(trained), "trl_loss": trained.state.log_history[-2].get("loss")}
    # Our RM in TRL: loaded as TRL loads a reward model (AutoModelForSequenceClassification, num_labels=1)
    ours_in_trl = trainer(ours, pairs, out / "ours_in_trl", steps=1)
    loaded = AutoModelForSequenceClassification.from_pretrained(ours)
    result["ours_in_trl"] = trl_scores(ours_in_trl) | {"num_labels": loaded.config.num_labels,
                                                        "config_mean": getattr(loaded.config, "mean", None)}
    (out / "trl_side.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
