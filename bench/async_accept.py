"""Async rollouts against the synchronous loop on a toy world: does `rlhf ppo --async-rollouts K` reach the sync run's
gold reward within its seed-to-seed spread?

    OMP_NUM_THREADS=1 python bench/async_accept.py DEMO_OUT [--k 0,1] [--seeds 0,1,2] [--tag NAME]

DEMO_OUT is the output of `rlhf demo --preset micro|tiny --seeds 0 --out DEMO_OUT`: its world, and the SFT policy and
reward model of its seed 0, shared by every PPO run here. Each PPO run is the demo's own PPO stage (the preset's
iterations, batch, minibatch and learning rate; β 0.05), one per K and PPO seed, run one after another, then the
demo's evaluation of the final policy on the preset's held-out prompts (mean gold reward, KL to SFT, RM score). One
JSON line per run; the mean and sample standard deviation of gold per K at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from rlhfkit.eval.policy import load_policy
from rlhfkit.recipes import pipeline as stages
from rlhfkit.recipes.configs import PLANS
from rlhfkit.recipes.pipeline import Judge
from rlhfkit.world.build import World


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demo", type=Path)
    parser.add_argument("--k", default="0,1", help="--async-rollouts values, comma-separated")
    parser.add_argument("--seeds", default="0,1,2", help="PPO seeds, comma-separated")
    parser.add_argument("--tag", default="", help="suffix of the PPO run directories (DEMO_OUT/async-accept/...)")
    args = parser.parse_args()
    world = World(args.demo / "world")
    plan = PLANS[json.loads((args.demo / "report.json").read_text())["preset"]]
    shared, out_root = args.demo / "seed-0", args.demo / "async-accept"
    gold: dict[int, list[float]] = {}
    for k in map(int, args.k.split(",")):
        for seed in map(int, args.seeds.split(",")):
            out = out_root / f"k{k}-s{seed}{args.tag}"
            start = time.time()
            stages.ppo(shared / "sft", shared / "rm", world, out, steps=plan.ppo_steps, batch=plan.ppo_batch,
                       minibatch=plan.ppo_minibatch, lr=plan.ppo_lr, kl_coef=0.05, save_every=0, seed=seed, threads=1,
                       async_rollouts=k)
            wall = time.time() - start
            judge = Judge.load(shared / "sft", shared / "rm", world.prompts("heldout")[:plan.eval_prompts],
                               world.response_limit, seed)
            s = judge.measure(load_policy(out)[0]).summary()
            gold.setdefault(k, []).append(s["gold"])
            print(json.dumps({"k": k, "seed": seed, "gold": s["gold"], "kl": s["kl"], "rm": s["rm"],
                              "ppo_wall_s": round(wall, 1)}), flush=True)
    for k, values in gold.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(json.dumps({"k": k, "gold_mean": round(statistics.mean(values), 4), "gold_sd": round(spread, 4),
                          "runs": len(values)}))


if __name__ == "__main__":
    main()
