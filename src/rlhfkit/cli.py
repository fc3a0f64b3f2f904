"""The `rlhf` command line.

Each subcommand is one dataclass config (its flags are generated from the fields, see `config.py`) and one library
function that takes that config. `COMMANDS` names both as `module:attribute` strings under `rlhfkit`, resolved when
the command runs: the config's module is light (it imports no torch, transformers, datasets, FastAPI or
SQLAlchemy), so `rlhf --help`, `rlhf label --help` and `rlhf CMD --help` answer at once; the command's own module,
and torch with it, is imported only to run it. `tests/test_structure.py` checks that this module imports nothing
heavy and that every entry resolves.

Commands of two words form groups (`rlhf label`, `rlhf eval`, ...): `rlhf GROUP` or `rlhf GROUP --help` lists the
group's commands, as git and TRL do.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import dataclass

from rlhfkit.config import add_arguments, from_args
from rlhfkit.errors import EXIT_USER_ERROR, EXIT_WAITING, UserError, Waiting

# Read when transformers, huggingface_hub and torch's OpenMP runtime are first imported (by a command's module, which
# `main` imports only after this module has run), so they are set first; a value the user exported wins.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the toolkit never downloads at run time
# Idle OpenMP threads sleep instead of spinning: on a shared 2-core CPU spinning
# workers made PPO about 3x slower in `rlhf bench ppo` (docs/design.md §7).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

PACKAGE = "rlhfkit"


@dataclass(frozen=True)
class Command:
    config: str    # `module:Class` under rlhfkit: the command's config dataclass (a light module)
    function: str  # `module:function` under rlhfkit: the library function that runs it
    help: str

    def load_config(self) -> type:
        return resolve(self.config)

    def load_function(self):
        return resolve(self.function)


def resolve(spec: str):
    """`train.configs:SFTConfig` -> the class `rlhfkit.train.configs.SFTConfig`, its module imported now (the CLI's
    lazy loader: the one place a module is imported when it is needed rather than at the top of a file)."""
    module, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(f"{PACKAGE}.{module}"), attribute)


COMMANDS: dict[str, Command] = {
    "world build": Command("world.configs:WorldConfig", "world.build:build_world",
                      "build the toy world: tokenizer, prompts, demonstrations, base LM"),
    "sft": Command("train.configs:SFTConfig", "train.sft:train_sft",
                      "step 1: supervised fine-tuning on prompt/completion demonstrations"),
    "sample": Command("recipes.configs:SampleConfig", "recipes.sample:sample_candidates",
                      "sample K outputs per prompt from one or several policies, for labeling"),
    "label simulate": Command("world.configs:SimulateConfig", "world.simulate:simulate_labels",
                      "rank candidates with the toy world's simulated labelers"),
    "label serve": Command("label.configs:ServeConfig", "label.commands:serve",
                      "the labeling web app: rankings, A/B comparisons, demonstrations"),
    "label import": Command("label.configs:ImportConfig", "label.commands:import_items",
                      "add candidates (or prompts) to a labeling project"),
    "label invite": Command("label.configs:InviteConfig", "label.commands:invite",
                      "print an invite link for a labeler or an admin"),
    "label revoke": Command("label.configs:RevokeConfig", "label.commands:revoke",
                      "end a person's invite link and sessions (their answers stay)"),
    "label guidelines": Command("label.configs:GuidelinesConfig", "label.commands:guidelines",
                      "set a project's instructions for labelers (Markdown)"),
    "label review": Command("label.configs:ReviewConfig", "label.review_commands:review_queue",
                      "the review queue: items most disputed first, every answer"),
    "label lock": Command("label.configs:LockConfig", "label.review_commands:lock",
                      "close a project (or one item) for edits of its answers, or reopen it"),
    "label gold": Command("label.configs:GoldConfig", "label.review_commands:gold",
                      "add gold items (known answers) and set their rate and the QC threshold"),
    "label export": Command("label.configs:ExportConfig", "label.commands:export",
                      "write rankings, pairs, demos or raw answers as JSON Lines"),
    "label stats": Command("label.configs:StatsConfig", "label.commands:stats",
                      "progress, throughput, agreement and A/B win rates of a project"),
    "label convert": Command("label.configs:ForeignConfig", "label.commands:foreign_convert",
                      "rankings from a Label Studio or Argilla 2 export, or rankings JSONL to files those tools "
                      "import"),
    "data pairs": Command("data.configs:PairsConfig", "data.pairs:export_pairs",
                      "turn rankings into every strictly ordered (chosen, rejected) pair"),
    "data convert": Command("data.configs:ConvertConfig", "data.convert:convert",
                      "write rankings, pairs or prompts JSONL from any accepted format (TRL's, Parquet, CSV, a "
                      "datasets folder)"),
    "data convert-rm": Command("train.configs:ConvertRMConfig", "train.reward:convert_rm",
                      "rewrite an older rlhfkit reward model (scalar_head.safetensors) as a standard "
                      "XForSequenceClassification with num_labels=1"),
    "rm": Command("train.configs:RewardConfig", "train.reward:train_reward_model",
                      "step 2: train a reward model on rankings or pairs"),
    "dpo": Command("train.configs:DPOConfig", "train.dpo:train_dpo",
                      "DPO: train the policy on rankings directly"),
    "ppo": Command("train.configs:PPOConfig", "train.ppo:train_ppo",
                      "step 3: PPO against the reward model with a KL penalty to the SFT policy"),
    "rollout-serve": Command("engines.serve_config:ServeConfig", "engines.server:serve",
                      "a rollout server: vLLM on its own devices or machine, for --rollout-engine server"),
    "eval gold": Command("eval.configs:EvalGoldConfig", "eval.commands:eval_gold",
                      "mean gold reward (and components) of a policy on held-out prompts"),
    "eval winrate": Command("eval.configs:EvalWinrateConfig", "eval.commands:eval_winrate",
                      "win rate of policy A over policy B by the gold reward, with a 95% interval"),
    "eval rm": Command("eval.configs:EvalRMConfig", "eval.commands:eval_rm",
                      "reward model: held-out accuracy, noise ceiling, Spearman with gold"),
    "eval bon": Command("eval.configs:EvalBoNConfig", "eval.commands:eval_bon",
                      "best-of-n with the reward model: gold and RM reward against n"),
    "demo": Command("recipes.configs:DemoConfig", "recipes.demo:run_demo",
                      "the whole pipeline on the toy world: base -> SFT -> RM -> PPO -> report"),
    "loop": Command("recipes.configs:LoopConfig", "recipes.loop:run_loop",
                      "the online loop: sample -> label -> retrain RM -> PPO, several rounds"),
    "compare": Command("recipes.configs:CompareConfig", "recipes.label_budget:compare",
                      "SFT, best-of-n, DPO, PPO and RLOO on the same SFT model and rankings, judged by gold (or, "
                      "with --label-budget, gold and RM accuracy against human labels per selection)"),
    "bench ppo": Command("recipes.configs:BenchPPOConfig", "recipes.bench:bench_ppo",
                      "PPO throughput on random models"),
    "bench rm": Command("recipes.configs:BenchTrainConfig", "recipes.bench:bench_rm",
                      "reward-model training throughput"),
    "bench sft": Command("recipes.configs:BenchTrainConfig", "recipes.bench:bench_sft",
                      "SFT throughput on random models"),
    "bench matmul": Command("recipes.configs:BenchMatmulConfig", "recipes.bench:bench_matmul",
                      "fp32 and bf16 matmul GFLOP/s at a model's shapes: the ceiling of the benchmarks"),
}


class _Parser(argparse.ArgumentParser):
    """argparse whose usage errors are one line and exit 2, like every other user error."""

    def error(self, message):  # noqa: D401 - argparse API
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(EXIT_USER_ERROR)


def groups() -> set[str]:
    """The first words of the two-word commands: `label`, `eval`, `data`, `bench`, `world`."""
    return {name.split()[0] for name in COMMANDS if " " in name}


def _rows(names: list[str]) -> str:
    width = max(map(len, names))
    return "\n".join(f"  {name:<{width}}  {COMMANDS[name].help}" for name in names)


def _usage() -> str:
    return (f"usage: rlhf COMMAND [options]   (rlhf COMMAND --help for its options)\n\ncommands:\n"
            f"{_rows(sorted(COMMANDS))}\n")


def _group_usage(group: str) -> str:
    names = sorted(name for name in COMMANDS if name.split()[0] == group and " " in name)
    return (f"usage: rlhf {group} COMMAND [options]   (rlhf {group} COMMAND --help for its options)\n\n"
            f"commands:\n{_rows(names)}\n")


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
    if found is None and argv[0] in groups() and (len(argv) == 1 or argv[1] in ("-h", "--help", "help")):
        sys.stdout.write(_group_usage(argv[0]))
        return 0 if len(argv) > 1 else EXIT_USER_ERROR
    if found is None:
        sys.stderr.write(f"rlhf: error: unknown command {' '.join(argv[:2])!r} (see rlhf --help)\n")
        return EXIT_USER_ERROR
    name, rest = found
    cmd = COMMANDS[name]
    config_class = cmd.load_config()
    parser = _Parser(prog=f"rlhf {name}", description=cmd.help)
    add_arguments(parser, config_class)
    try:
        args = parser.parse_args(rest)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed on one line)
        return int(exc.code or 0)
    try:
        config = from_args(config_class, args)
        cmd.load_function()(config)
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
