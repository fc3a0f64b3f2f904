"""The `rlhf` command line.

Each subcommand is one dataclass config (its flags are generated from the fields, see `config.py`) and
one library function that takes that config. Modules are imported only for the command that runs, so
`rlhf --help` and bad-input errors come back quickly.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from dataclasses import dataclass

from rlhfkit.config import add_arguments, from_args
from rlhfkit.errors import EXIT_USER_ERROR, UserError


@dataclass(frozen=True)
class Command:
    module: str
    config: str
    function: str
    help: str


COMMANDS: dict[str, Command] = {
    "world build": Command("rlhfkit.world.build", "WorldConfig", "build_world",
                           "build the toy world: tokenizer, prompts, demonstrations, base LM"),
    "sft": Command("rlhfkit.train.sft", "SFTConfig", "train_sft",
                   "step 1: supervised fine-tuning on prompt/completion demonstrations"),
    "sample": Command("rlhfkit.sampling", "SampleConfig", "sample_candidates",
                      "sample K outputs per prompt from one or several policies, for labeling"),
    "label simulate": Command("rlhfkit.world.simulate", "SimulateConfig", "simulate_labels",
                              "rank candidates with the toy world's simulated labelers"),
    "label serve": Command("rlhfkit.label.commands", "ServeConfig", "serve",
                           "the labeling web app: rankings, A/B comparisons, demonstrations"),
    "label import": Command("rlhfkit.label.commands", "ImportConfig", "import_items",
                            "add candidates (or prompts) to a labeling project"),
    "label invite": Command("rlhfkit.label.commands", "InviteConfig", "invite",
                            "print an invite link for a labeler or an admin"),
    "label export": Command("rlhfkit.label.commands", "ExportConfig", "export",
                            "write rankings, pairs, demos or raw answers as JSON Lines"),
    "label stats": Command("rlhfkit.label.commands", "StatsConfig", "stats",
                           "progress, throughput, agreement and A/B win rates of a project"),
    "data pairs": Command("rlhfkit.data.pairs", "PairsConfig", "export_pairs",
                          "turn rankings into every strictly ordered (chosen, rejected) pair"),
    "rm": Command("rlhfkit.train.reward", "RewardConfig", "train_reward_model",
                  "step 2: train a reward model on rankings or pairs"),
    "dpo": Command("rlhfkit.train.dpo", "DPOConfig", "train_dpo", "DPO: train the policy on rankings directly"),
    "ppo": Command("rlhfkit.train.ppo", "PPOConfig", "train_ppo",
                   "step 3: PPO against the reward model with a KL penalty to the SFT policy"),
    "eval gold": Command("rlhfkit.eval.commands", "EvalGoldConfig", "eval_gold",
                         "mean gold reward (and components) of a policy on held-out prompts"),
    "eval winrate": Command("rlhfkit.eval.commands", "EvalWinrateConfig", "eval_winrate",
                            "win rate of policy A over policy B by the gold reward, with a 95% interval"),
    "eval rm": Command("rlhfkit.eval.commands", "EvalRMConfig", "eval_rm",
                       "reward model: held-out accuracy, noise ceiling, Spearman with gold"),
    "eval bon": Command("rlhfkit.eval.commands", "EvalBoNConfig", "eval_bon",
                        "best-of-n with the reward model: gold and RM reward against n"),
    "demo": Command("rlhfkit.demo", "DemoConfig", "run_demo",
                    "the whole pipeline on the toy world: base -> SFT -> RM -> PPO -> report"),
    "loop": Command("rlhfkit.loop", "LoopConfig", "run_loop",
                    "the online loop: sample -> label -> retrain RM -> PPO, several rounds"),
    "compare": Command("rlhfkit.compare", "CompareConfig", "run_compare",
                       "SFT, best-of-n, DPO, PPO and RLOO on the same SFT model and rankings, judged by gold"),
    "bench ppo": Command("rlhfkit.bench", "BenchPPOConfig", "bench_ppo", "PPO throughput on random models"),
    "bench rm": Command("rlhfkit.bench", "BenchTrainConfig", "bench_rm", "reward-model training throughput"),
    "bench sft": Command("rlhfkit.bench", "BenchTrainConfig", "bench_sft", "SFT throughput on random models"),
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
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the toolkit never downloads at run time
    # Idle OpenMP threads sleep instead of spinning: on a shared CPU spinning made PPO 3x slower (bench/, issue 8).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if not argv or argv[0] in ("-h", "--help", "help"):
        sys.stdout.write(_usage())
        return 0 if argv else EXIT_USER_ERROR
    found = _find_command(argv)
    if found is None:
        sys.stderr.write(f"rlhf: error: unknown command {' '.join(argv[:2])!r} (see rlhf --help)\n")
        return EXIT_USER_ERROR
    name, rest = found
    cmd = COMMANDS[name]
    module = importlib.import_module(cmd.module)
    config_cls = getattr(module, cmd.config)
    parser = _Parser(prog=f"rlhf {name}", description=cmd.help)
    add_arguments(parser, config_cls)
    try:
        args = parser.parse_args(rest)
    except SystemExit as exc:  # --help (0) or a usage error (2, already printed on one line)
        return int(exc.code or 0)
    try:
        config = from_args(config_cls, args)
        getattr(module, cmd.function)(config)
    except UserError as exc:
        sys.stderr.write(f"rlhf {name}: error: {exc}\n")
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        sys.stderr.write(f"rlhf {name}: interrupted\n")
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
