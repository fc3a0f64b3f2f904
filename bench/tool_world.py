"""The tool world (src/rlhfkit/world/tools.py): does a calculator, learned from demonstrations and then with PPO in
the environment, raise gold correctness over SFT alone and over a policy without the tool? Three seeds, on CPUs.

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/tool_world.py --out runs/tool-world [--seeds 0 1 2]

One world (world seed 0: prompts, demonstrations, a random-init base LM); for each seed:
  1. no tool:      SFT on the demonstrations answered in one turn (always right), prompts without tools;
  2. SFT + tool:   SFT on the noisy expert's demonstrations with calculator calls (demos_tools.jsonl);
  3. PPO + tool:   `rlhf ppo` from (2) with `--environment rlhfkit.world.tools:Calculator`, rewarded by
                   `rlhfkit.world.tools:correct_answer` (the environment's verifier; no reward model);
then each is evaluated on the held-out prompts: one sampled trajectory per prompt (T = 1, as PPO samples; up to
--max-turns turns, the calculator answering each call), scored by the hidden gold reward (`tool_gold`).
Prints a table of gold correctness and r* (mean over seeds, 95% t-interval across seeds), PPO's gain over each arm
paired by seed, and writes OUT/report.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlhfkit.data.formats import read_prompts
from rlhfkit.engines.hf import HFEngine
from rlhfkit.engines.multiturn import rollout
from rlhfkit.environments import load_environment
from rlhfkit.generation import generate
from rlhfkit.recipes.pipeline import quiet
from rlhfkit.runtime.optim import set_threads
from rlhfkit.train.configs import PPOConfig, SFTConfig
from rlhfkit.train.ppo import train_ppo
from rlhfkit.train.sft import train_sft
from rlhfkit.world.tool_build import build_tool_world
from rlhfkit.world.tools import final_answer, tool_gold

ENVIRONMENT = "rlhfkit.world.tools:Calculator"
REWARD_FN = "rlhfkit.world.tools:correct_answer"
MAX_NEW_TOKENS, MAX_PROMPT_LENGTH, MAX_TRAJECTORY_TOKENS = 24, 32, 64  # a call is 22 tokens, an answer 2-5
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}  # Student's t, 97.5th percentile, by degrees of freedom


def trajectories(policy: Path, records: list[dict], *, use_tools: bool, seed: int, max_turns: int) -> list[dict]:
    """One sampled trajectory per prompt (T = 1): with the calculator, `engines/multiturn.rollout` — the rollout
    `rlhf ppo --environment` trains on; without, one turn of `generate` on the prompt without its tool list."""
    tokenizer = AutoTokenizer.from_pretrained(policy)
    model = AutoModelForCausalLM.from_pretrained(policy).eval()
    generator = torch.Generator().manual_seed(seed)
    if not use_tools:
        samples = generate(model, tokenizer, [list(r["prompt"]) for r in records], max_new_tokens=MAX_NEW_TOKENS,
                           generator=generator)
        return [{"answer": t, "finished": bool(f), "calls": 0} for t, f in zip(samples.texts, samples.finished)]
    spec = load_environment(ENVIRONMENT)
    with torch.no_grad():
        done = rollout(HFEngine(model, tokenizer), tokenizer, spec, [r["prompt"] for r in records],
                       [{"id": r.get("id")} for r in records], [str(r.get("id")) for r in records],
                       max_turns=max_turns, max_tokens=MAX_TRAJECTORY_TOKENS, tool_timeout=5.0,
                       max_new_tokens=MAX_NEW_TOKENS, max_prompt_length=MAX_PROMPT_LENGTH, generator=generator)
    return [{"answer": text, "finished": bool(finished),
             "calls": sum(len(m.get("tool_calls", [])) for m in messages)}
            for text, finished, messages in zip(done.texts, done.finished, done.messages)]


def evaluate(policy: Path, prompts_path: Path, *, use_tools: bool, seed: int, max_turns: int) -> dict:
    """Gold correctness, gold r* and the share of trajectories that called the calculator, on `prompts_path`."""
    records = read_prompts(prompts_path)
    done = trajectories(policy, records, use_tools=use_tools, seed=seed, max_turns=max_turns)
    gold = [tool_gold(r["prompt"], final_answer(t["answer"]), t["finished"]) for r, t in zip(records, done)]
    n = len(gold)
    return {"gold_correctness": round(sum(g.correctness for g in gold) / n, 4),
            "gold": round(sum(g.total for g in gold) / n, 4),
            "tool_use": round(sum(t["calls"] > 0 for t in done) / n, 4), "n": n, "example": done[0]}


def ppo(policy: Path, prompts: Path, out: Path, *, seed: int, steps: int, lr: float, kl_coef: float,
        max_turns: int) -> dict:
    # the value model starts from the SFT policy's body under a fresh scalar head (there is no reward model here)
    return quiet(train_ppo, PPOConfig(
        policy=str(policy), value_model=str(policy), prompts=str(prompts), out=str(out), reward_fn=[REWARD_FN],
        environment=ENVIRONMENT, max_turns=max_turns, max_new_tokens=MAX_NEW_TOKENS,
        max_prompt_length=MAX_PROMPT_LENGTH, max_trajectory_tokens=MAX_TRAJECTORY_TOKENS, ppo_steps=steps,
        batch_size=32, minibatch_size=16, lr=lr, kl_coef=kl_coef, seed=seed, threads=1, overwrite=True))


def sft(base: Path, data: Path, out: Path, *, seed: int, epochs: int, lr: float) -> None:
    quiet(train_sft, SFTConfig(model=str(base), data=str(data), out=str(out), epochs=epochs, lr=lr, seed=seed,
                               batch_size=16, overwrite=True))


def interval(values: list[float]) -> dict:
    """Mean and the 95% t-interval of the mean across seeds."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return {"mean": round(mean, 4), "low": round(mean, 4), "high": round(mean, 4), "values": values}
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = T_975.get(n - 1, 1.96) * sd / math.sqrt(n)
    return {"mean": round(mean, 4), "low": round(mean - half, 4), "high": round(mean + half, 4), "values": values}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sft-epochs", type=int, default=20)
    parser.add_argument("--sft-lr", type=float, default=3e-3)
    parser.add_argument("--max-turns", type=int, default=3)
    parser.add_argument("--ppo-steps", type=int, default=40)
    parser.add_argument("--ppo-lr", type=float, default=2e-4)
    parser.add_argument("--kl-coef", type=float, default=0.02)
    parser.add_argument("--demos", type=int, default=1000, help="demonstrations (each arm's SFT data)")
    parser.add_argument("--heldout", type=int, default=200, help="held-out prompts evaluated")
    args = parser.parse_args(argv)
    set_threads(1)
    out = Path(args.out)
    world = build_tool_world(out / "world", seed=0, n_demos=args.demos, n_heldout=args.heldout)
    heldout = world / "prompts" / "heldout.jsonl"
    report = {"seeds": {}}
    for seed in args.seeds:
        start, run = time.time(), out / f"seed{seed}"
        sft(world / "base", world / "demos_direct.jsonl", run / "sft_direct", seed=seed, epochs=args.sft_epochs,
            lr=args.sft_lr)
        sft(world / "base", world / "demos_tools.jsonl", run / "sft_tools", seed=seed, epochs=args.sft_epochs,
            lr=args.sft_lr)
        arms = {"no tool (SFT, one turn)": evaluate(run / "sft_direct", heldout, use_tools=False, seed=seed,
                                                     max_turns=1),
                "SFT + calculator": evaluate(run / "sft_tools", heldout, use_tools=True, seed=seed,
                                             max_turns=args.max_turns)}
        ppo(run / "sft_tools", world / "prompts" / "train.jsonl", run / "ppo_tools", seed=seed, steps=args.ppo_steps,
            lr=args.ppo_lr, kl_coef=args.kl_coef, max_turns=args.max_turns)
        arms["SFT + PPO with the calculator"] = evaluate(run / "ppo_tools", heldout, use_tools=True, seed=seed,
                                                         max_turns=args.max_turns)
        report["seeds"][seed] = {"arms": arms, "wall_s": round(time.time() - start, 1)}
        print(json.dumps({"seed": seed, **{k: v["gold_correctness"] for k, v in arms.items()},
                          "wall_s": report["seeds"][seed]["wall_s"]}), flush=True)
    names = list(next(iter(report["seeds"].values()))["arms"])
    report["table"] = {name: {metric: interval([report["seeds"][s]["arms"][name][metric] for s in args.seeds])
                              for metric in ("gold_correctness", "gold", "tool_use")} for name in names}
    report["paired"] = paired(report)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_table(report)


def paired(report: dict) -> dict:
    """Gold correctness of PPO minus each other arm, seed by seed (the same world, demonstrations and prompts):
    the mean difference and its 95% t-interval."""
    seeds = [report["seeds"][s]["arms"] for s in report["seeds"]]
    ppo = "SFT + PPO with the calculator"
    return {f"{ppo} - {name}": interval([round(a[ppo]["gold_correctness"] - a[name]["gold_correctness"], 4)
                                         for a in seeds]) for name in seeds[0] if name != ppo}


def print_table(report: dict) -> None:
    print("| policy | gold correctness | gold r* | calls the tool |\n|---|---|---|---|")
    for name, row in report["table"].items():
        cells = [f"{row[m]['mean']:.3f} [{row[m]['low']:.3f}, {row[m]['high']:.3f}]"
                 for m in ("gold_correctness", "gold", "tool_use")]
        print(f"| {name} | " + " | ".join(cells) + " |")
    for name, d in report["paired"].items():
        print(f"{name}: gold correctness {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] (per seed {d['values']})")


if __name__ == "__main__":
    main()
