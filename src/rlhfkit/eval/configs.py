"""The configs of `rlhf eval ...` (light: `rlhf eval CMD --help` loads no torch)."""

from __future__ import annotations

from dataclasses import dataclass

from rlhfkit.config import check_at_least, option, required
from rlhfkit.data.options import DataOptions
from rlhfkit.engines.options import EngineOptions, check_engine
from rlhfkit.errors import UserError
from rlhfkit.models.options import PrecisionOptions
from rlhfkit.rewards.options import RewardOptions

BON_NEW_TOKENS = 32  # eval bon's response limit on your prompts without a world (as `rlhf sample`'s default)


@dataclass
class SamplingOptions(EngineOptions, PrecisionOptions):
    temperature: float = option(1.0, "sampling temperature (0: greedy)")
    top_p: float = option(1.0, "nucleus sampling threshold")
    max_new_tokens: int | None = option(None, "response length limit (default: the world's limit)")
    seed: int = option(0, "sampling seed")
    limit: int | None = option(None, "use only the first N held-out prompts")
    json_out: str | None = option(None, "also write the result as JSON to this file")

    def check(self) -> None:
        if self.temperature < 0:
            raise UserError("config key 'temperature' must be >= 0")
        if not 0 < self.top_p <= 1:
            raise UserError("config key 'top_p' must be in (0, 1]")
        check_at_least(self, 1, "max_new_tokens", "limit")
        check_engine(self.rollout_engine, self.vllm_gpu_memory, self.rollout_server)


@dataclass
class EvalGoldConfig(SamplingOptions):
    model: str | None = required("policy directory")
    world: str | None = required("world directory (held-out prompts and gold reward)")


@dataclass
class EvalWinrateConfig(SamplingOptions):
    a: str | None = required("policy A directory")
    b: str | None = required("policy B directory")
    world: str | None = required("world directory (held-out prompts and gold reward)")


@dataclass
class DeviceOptions:
    """--device and --threads of the commands that run models outside a trainer (`rlhf eval rm`, `rlhf eval bon`), as
    every trainer takes them (`runtime/options.py`)."""
    device: str = option("auto", "cpu, cuda, cuda:N or auto")
    threads: int = option(0, "torch CPU threads (0: leave torch's default)")


@dataclass
class PackingOptions:
    """--packing of the commands that score with a reward model outside a trainer (`rlhf eval rm`, `rlhf eval bon`),
    as the trainers take it (`train/configs.BatchOptions`): the same scores to float rounding, fewer positions."""
    packing: bool = option(True, "score sequences concatenated without padding (position ids restart per sequence, "
                           "attention never crosses sequences; an architecture that does not read packed positions "
                           "runs padded)")


@dataclass
class EvalRMConfig(DataOptions, PrecisionOptions, DeviceOptions, PackingOptions):
    rm: str | None = required("reward model directory (rlhf rm)")
    data: str | None = option(None, "held-out rankings or pairs (default: the RM's own RM/heldout.jsonl)")
    world: str | None = option(None, "toy world: also the noise ceiling and Spearman with the gold reward")
    json_out: str | None = option(None, "also write the result as JSON to this file")

    def check(self) -> None:
        """Nothing else to check without reading files: the other fields are paths."""
        check_at_least(self, 0, "threads")


@dataclass
class EvalBoNConfig(EngineOptions, RewardOptions, PrecisionOptions, DeviceOptions,
                    PackingOptions):  # the best of n by the reward
    policy: str | None = required("policy to sample from (the SFT model)")
    judge: list[str] = option([], "judges of the kept samples, comma-separated, reported beside gold (never used "
                              "to pick): a reward model directory, a reward function, or a registered name")
    world: str | None = option(None, "world directory: its held-out prompts, and the gold reward of the picks")
    prompts: str | None = option(None, "your prompts (any format with a prompt), scored by the reward alone (no "
                                 "gold without --world); instead of the world's held-out prompts")
    n: int = option(16, "samples per prompt; the curve reports n = 1, 2, 4, ... up to this")
    temperature: float = option(1.0, "sampling temperature")
    max_new_tokens: int | None = option(None, "response length limit (default: the world's limit; with --prompts "
                                        f"and no world, {BON_NEW_TOKENS})")
    missing_eos_penalty: float | None = option(-1.0, "RM score of a response with no EOS (as in PPO)")
    seed: int = option(0, "sampling seed")
    limit: int | None = option(None, "use only the first N held-out prompts")
    json_out: str | None = option(None, "also write the result as JSON to this file")

    def check(self) -> None:
        check_at_least(self, 0, "threads")
        if self.n < 1 or self.temperature <= 0:
            raise UserError("config keys 'n' must be >= 1 and 'temperature' > 0")
        check_at_least(self, 1, "max_new_tokens", "limit")
        check_engine(self.rollout_engine, self.vllm_gpu_memory, self.rollout_server)
