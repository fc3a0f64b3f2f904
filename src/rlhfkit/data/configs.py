"""The configs of `rlhf data pairs` and `rlhf data convert` (light: `rlhf data ... --help` loads no data library)."""

from __future__ import annotations

from dataclasses import dataclass

from rlhfkit.config import required
from rlhfkit.data.options import DataOptions
from rlhfkit.errors import UserError

TARGETS = ("rankings", "pairs", "prompts")


@dataclass
class PairsConfig:
    rankings: str | None = required("rankings JSONL to expand", positional=True)
    out: str | None = required("output pairs JSONL")

    def check(self) -> None:
        """Nothing to check without reading files: both fields are paths (their presence: `check_required`)."""


@dataclass
class ConvertConfig(DataOptions):
    data: str | None = required("data file or datasets folder (any accepted format)", positional=True)
    to: str | None = required("format to write: rankings | pairs | prompts")
    out: str | None = required("output JSONL")

    def check(self) -> None:
        if self.to not in TARGETS:
            raise UserError(f"--to {self.to!r}: expected one of {', '.join(TARGETS)}")


# `rlhf rm --loss` and `rlhf dpo --loss`: InstructGPT's C(K,2) pairs, or each ranking whole (Plackett–Luce)
PREFERENCE_LOSSES = ("pairwise", "plackett-luce")


def check_loss(name: str) -> None:
    if name not in PREFERENCE_LOSSES:
        raise UserError(f"config key 'loss': {name!r} is not one of {', '.join(PREFERENCE_LOSSES)}")
