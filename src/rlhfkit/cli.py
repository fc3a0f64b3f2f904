"""The `rlhf` command line.

Each subcommand is one dataclass config (its flags are generated from the fields, see `config.py`) and
one library function that takes that config; `COMMANDS` names both, so each command's code is one
go-to-definition away. Every command's module is imported at start-up: `rlhf --help` pays for torch and
transformers, and the whole dependency graph is visible here (scripts/import_graph.py draws it).
"""

# ruff: noqa: E402 - the environment below must be set before the command modules import torch and transformers

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass

# Read when transformers, huggingface_hub and torch's OpenMP runtime are first imported (the command modules
# below), so they are set first; a value the user exported wins.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the toolkit never downloads at run time
# Idle OpenMP threads sleep instead of spinning: on a shared 2-core CPU spinning
# workers made PPO about 3x slower in `rlhf bench ppo` (docs/design.md §7).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from rlhfkit.bench import bench_matmul, bench_ppo, bench_rm, bench_sft
from rlhfkit.compare import run_compare
from rlhfkit.config import add_arguments, from_args
from rlhfkit.data.configs import ConvertConfig, PairsConfig
from rlhfkit.data.convert import convert
from rlhfkit.data.pairs import export_pairs
from rlhfkit.demo import run_demo
from rlhfkit.errors import EXIT_USER_ERROR, EXIT_WAITING, UserError, Waiting
from rlhfkit.eval.commands import eval_bon, eval_gold, eval_rm, eval_winrate
from rlhfkit.eval.configs import EvalBoNConfig, EvalGoldConfig, EvalRMConfig, EvalWinrateConfig
from rlhfkit.label.commands import export, foreign_convert, guidelines, import_items, invite, revoke, serve, stats
from rlhfkit.label.configs import (
    ExportConfig,
    ForeignConfig,
    GoldConfig,
    GuidelinesConfig,
    ImportConfig,
    InviteConfig,
    LockConfig,
    ReviewConfig,
    RevokeConfig,
    ServeConfig,
    StatsConfig,
)
from rlhfkit.label.review_commands import gold, lock, review_queue
from rlhfkit.loop import run_loop
from rlhfkit.recipe_configs import (
    BenchMatmulConfig,
    BenchPPOConfig,
    BenchTrainConfig,
    CompareConfig,
    DemoConfig,
    LoopConfig,
    SampleConfig,
)
from rlhfkit.sampling import sample_candidates
from rlhfkit.train.configs import ConvertRMConfig, DPOConfig, PPOConfig, RewardConfig, SFTConfig
from rlhfkit.train.dpo import train_dpo
from rlhfkit.train.ppo import train_ppo
from rlhfkit.train.reward import convert_rm, train_reward_model
from rlhfkit.train.sft import train_sft
from rlhfkit.world.build import build_world
from rlhfkit.world.configs import SimulateConfig, WorldConfig
from rlhfkit.world.simulate import simulate_labels


@dataclass(frozen=True)
class Command:
    config: type
    function: Callable
    help: str


COMMANDS: dict[str, Command] = {
    "world build": Command(WorldConfig, build_world,
                           "build the toy world: tokenizer, prompts, demonstrations, base LM"),
    "sft": Command(SFTConfig, train_sft, "step 1: supervised fine-tuning on prompt/completion demonstrations"),
    "sample": Command(SampleConfig, sample_candidates,
                      "sample K outputs per prompt from one or several policies, for labeling"),
    "label simulate": Command(SimulateConfig, simulate_labels,
                              "rank candidates with the toy world's simulated labelers"),
    "label serve": Command(ServeConfig, serve, "the labeling web app: rankings, A/B comparisons, demonstrations"),
    "label import": Command(ImportConfig, import_items, "add candidates (or prompts) to a labeling project"),
    "label invite": Command(InviteConfig, invite, "print an invite link for a labeler or an admin"),
    "label revoke": Command(RevokeConfig, revoke, "end a person's invite link and sessions (their answers stay)"),
    "label guidelines": Command(GuidelinesConfig, guidelines, "set a project's instructions for labelers (Markdown)"),
    "label review": Command(ReviewConfig, review_queue, "the review queue: items most disputed first, every answer"),
    "label lock": Command(LockConfig, lock, "close a project (or one item) for edits of its answers, or reopen it"),
    "label gold": Command(GoldConfig, gold, "add gold items (known answers) and set their rate and the QC threshold"),
    "label export": Command(ExportConfig, export, "write rankings, pairs, demos or raw answers as JSON Lines"),
    "label stats": Command(StatsConfig, stats, "progress, throughput, agreement and A/B win rates of a project"),
    "label convert": Command(ForeignConfig, foreign_convert, "rankings from a Label Studio or Argilla 2 export, or "
                             "rankings JSONL to files those tools import"),
    "data pairs": Command(PairsConfig, export_pairs,
                          "turn rankings into every strictly ordered (chosen, rejected) pair"),
    "data convert": Command(ConvertConfig, convert, "write rankings, pairs or prompts JSONL from any accepted "
                            "format (TRL's, Parquet, CSV, a datasets folder)"),
    "data convert-rm": Command(ConvertRMConfig, convert_rm, "rewrite an older rlhfkit reward model (scalar_head."
                               "safetensors) as a standard XForSequenceClassification with num_labels=1"),
    "rm": Command(RewardConfig, train_reward_model, "step 2: train a reward model on rankings or pairs"),
    "dpo": Command(DPOConfig, train_dpo, "DPO: train the policy on rankings directly"),
    "ppo": Command(PPOConfig, train_ppo, "step 3: PPO against the reward model with a KL penalty to the SFT policy"),
    "eval gold": Command(EvalGoldConfig, eval_gold,
                         "mean gold reward (and components) of a policy on held-out prompts"),
    "eval winrate": Command(EvalWinrateConfig, eval_winrate,
                            "win rate of policy A over policy B by the gold reward, with a 95% interval"),
    "eval rm": Command(EvalRMConfig, eval_rm, "reward model: held-out accuracy, noise ceiling, Spearman with gold"),
    "eval bon": Command(EvalBoNConfig, eval_bon, "best-of-n with the reward model: gold and RM reward against n"),
    "demo": Command(DemoConfig, run_demo,
                    "the whole pipeline on the toy world: base -> SFT -> RM -> PPO -> report"),
    "loop": Command(LoopConfig, run_loop, "the online loop: sample -> label -> retrain RM -> PPO, several rounds"),
    "compare": Command(CompareConfig, run_compare,
                       "SFT, best-of-n, DPO, PPO and RLOO on the same SFT model and rankings, judged by gold"),
    "bench ppo": Command(BenchPPOConfig, bench_ppo, "PPO throughput on random models"),
    "bench rm": Command(BenchTrainConfig, bench_rm, "reward-model training throughput"),
    "bench sft": Command(BenchTrainConfig, bench_sft, "SFT throughput on random models"),
    "bench matmul": Command(BenchMatmulConfig, bench_matmul,
                            "fp32 and bf16 matmul GFLOP/s at a model's shapes: the ceiling of the benchmarks"),
}


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit 2, like every other user error."""

    def error(self, message):  # noqa: D401 - argparse API
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(EXIT_USER_ERROR)


def _usage() -> str:
    width = max(map(len, COMMANDS))
    rows = "\n".join(f"  {name:<{width}}  {cmd.help}" for name, cmd in sorted(COMMANDS.items()))
    return f"usage: rlhf COMMAND [options]   (rlhf COMMAND --help for its options)\n\ncommands:\n{rows}\n"


def _find_command(argv: list[str]) -> tuple[str, list[str]] | None:
    for n in (2, 1):
        name = " ".join(argv[:n])
        if len(argv) >= n and name in COMMANDS:
            return name, argv[n:]
    return None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(_usage())
        return 0 if argv else EXIT_USER_ERROR
    found = _find_command(argv)
    if found is None:
        sys.stderr.write(f"rlhf: error: unknown command {' '.join(argv[:2])!r} (see rlhf --help)\n")
        return EXIT_USER_ERROR
    name, rest = found
    cmd = COMMANDS[name]
    parser = _Parser(prog=f"rlhf {name}", description=cmd.help)
    add_arguments(parser, cmd.config)
    try:
        args = parser.parse_args(rest)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed on one line)
        return int(exc.code or 0)
    try:
        config = from_args(cmd.config, args)
        cmd.function(config)
    except UserError as exc:
        sys.stderr.write(f"rlhf {name}: error: {exc}\n")
        return EXIT_USER_ERROR
    except Waiting as exc:
        sys.stderr.write(f"rlhf {name}: waiting: {exc}\n")
        return EXIT_WAITING
    except KeyboardInterrupt:
        sys.stderr.write(f"rlhf {name}: interrupted\n")
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
