"""The configs of `rlhf world build` and `rlhf label simulate` (light: their `--help` loads no torch)."""

from __future__ import annotations

from dataclasses import dataclass

from rlhfkit.config import option, required
from rlhfkit.errors import UserError


@dataclass(frozen=True)
class Preset:
    n_corpus: int         # pretraining documents (prompt + raw-web answer)
    n_facts: int          # encyclopedia-style documents: the knowledge, without the habit of answering
    n_demos: int          # expert demonstrations for SFT
    n_train_prompts: int  # prompts for reward-model candidates and PPO
    n_heldout: int        # distinct held-out evaluation prompts
    d_model: int
    n_layers: int
    n_heads: int
    max_len: int          # pretraining window (tokens)
    pretrain_steps: int
    pretrain_batch: int
    pretrain_lr: float


PRESETS = {
    "micro": Preset(3000, 1500, 400, 800, 64, 64, 2, 2, 48, 80, 32, 3e-3),        # tests: seconds
    "tiny": Preset(15000, 15000, 1500, 4000, 400, 128, 4, 4, 48, 800, 64, 3e-3),  # the demo: minutes on 2 cores
    "small": Preset(60000, 30000, 3000, 10000, 1000, 256, 6, 8, 64, 3000, 64, 1e-3),
}


@dataclass
class WorldConfig:
    out: str | None = required("directory to write the world into")
    preset: str = option("tiny", "size: micro (tests), tiny (the demo), small")
    seed: int = option(0, "random seed of the world (prompts, corpus, base LM, labelers)")
    arch: str = option("gpt2", "base LM architecture: gpt2 or llama")
    heldout_fraction: float = option(0.2, "share of distinct prompts held out for evaluation")
    pretrain_steps: int | None = option(None, "override the preset's pretraining steps")
    overwrite: bool = option(False, "replace an existing world directory")

    def check(self) -> None:
        if self.preset not in PRESETS:
            raise UserError(f"config key 'preset': unknown preset {self.preset!r} (one of {', '.join(PRESETS)})")
        if self.arch not in ("gpt2", "llama"):
            raise UserError(f"config key 'arch': unknown architecture {self.arch!r} (gpt2 or llama)")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise UserError("config key 'heldout_fraction' must be between 0 and 1")
        if self.pretrain_steps is not None and self.pretrain_steps < 0:
            raise UserError("config key 'pretrain_steps' must be >= 0")


@dataclass
class SimulateConfig:
    world: str | None = required("world directory (its labelers' noise was calibrated when it was built)")
    candidates: str | None = required("candidates JSONL (rlhf sample)")
    out: str | None = required("rankings JSONL to write")
    labelers: int = option(5, "size of the labeler pool")
    per_item: int = option(2, "distinct labelers per item (2 or more measures agreement)")
    seed: int = option(0, "random seed (assignment and the labelers' noise)")

    def check(self) -> None:
        if self.labelers < 1 or not 1 <= self.per_item <= self.labelers:
            raise UserError("config keys: need labelers >= 1 and 1 <= per_item <= labelers")
