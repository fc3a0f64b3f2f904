"""`rlhf compare`: best-of-n, DPO, PPO and RLOO on the same SFT model, the same rankings and the same held-out
prompts, judged by the toy world's hidden gold reward (docs/design.md §5). The methods' training and evaluation live
in `pipeline.py` (`train_method`, `evaluate_methods`), which `rlhf demo --methods` uses too. With `--label-budget
ARMS` the command runs the label-efficiency experiment instead (`label_budget.py`, where the CLI enters `rlhf
compare`: one `rlhf loop` per arm and seed, gold and RM accuracy against human labels).

For each seed:

    world → SFT → K samples → simulated rankings → reward model        (shared: `pipeline.sft_and_reward_model`)
      ├─ bon   best-of-n: n SFT samples per held-out prompt, the RM keeps one (no training; curve n = 1 … bon_n)
      ├─ dpo   DPO on the same rankings (Rafailov et al. 2023)
      ├─ ppo   PPO against the RM with the KL penalty β to SFT; value model from the RM
      ├─ rloo  the same trainer with `--advantage rloo` (Ahmadian et al. 2024): k samples per prompt, no value model
      └─ grpo  the same trainer with `--advantage grpo` (Shao et al. 2024): k samples per prompt, group-normalized
               reward, the KL as a loss term

`--trained-on rm,fn,rm+fn` trains each RL method once per reward source: on the RM (rows `ppo`, `rloo`, `grpo`), on
the reward functions (`--reward-fn`, by default the world's verifier: rows `ppo-fn`, ...) and on their sum (rows
`ppo-rm+fn`, ...). PPO's value model starts from the RM's weights in all three.

Then every policy is sampled once per held-out prompt (the same prompts, the same sampling seed) and scored by gold,
by the RM and by its KL to SFT (k1); its win rate against SFT compares the two samples of each prompt by gold. The
SFT row's win rate is a second, independent SFT sample against the first: what "no difference" looks like.

`wall_s` is each method's own cost (training; for best-of-n, drawing and ranking its samples); the shared SFT,
labels and RM are reported once, under `stages_wall_s`. `episodes` counts the responses sampled from a policy to
train it (best-of-n: to answer the held-out prompts). Checkpoints along each run give the gold-vs-√KL curves.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from rlhfkit.config import to_toml
from rlhfkit.errors import UserError
from rlhfkit.eval import report as R
from rlhfkit.recipes import pipeline as stages
from rlhfkit.recipes.configs import METHODS, PLANS, RL_METHODS, CompareConfig
from rlhfkit.recipes.pipeline import runs, split_run, table_rows
from rlhfkit.rewards.functions import load_reward_function
from rlhfkit.runtime.optim import set_threads
from rlhfkit.runtime.trackers import reporting
from rlhfkit.stats import mean_std, win_rate
from rlhfkit.world.build import World

# ------------------------------------------------------------------------------------- across seeds

FIGURES = ("gold", "rm", "kl", "wall_s", "episodes")


def combine(per_seed: list[dict], methods: list[str]) -> dict:
    """`methods` of report.json. One seed: that seed's rows. Several: each figure is the mean over seeds, with
    `across_seeds` giving {mean, std, values} per figure, and the win rate is pooled over seeds × prompts (its
    bootstrap interval resamples prompts, not seeds: the seed-to-seed spread is `across_seeds.win_rate.std`)."""
    if len(per_seed) == 1:
        return {m: per_seed[0]["methods"][m] for m in methods}
    out = {}
    for m in methods:
        rows = [s["methods"][m] for s in per_seed]
        spread = {k: mean_std([r[k] for r in rows]) for k in FIGURES}
        spread["win_rate"] = mean_std([r["win_vs_sft"]["rate"] for r in rows])
        pooled = win_rate([g for s in per_seed for g in s["golds"][m]],
                          [g for s in per_seed for g in s["golds"]["reference"]])
        out[m] = {**{k: spread[k]["mean"] for k in FIGURES}, "win_vs_sft": pooled, "across_seeds": spread}
    return out


def mean_curves(per_seed: list[dict], method: str) -> list[dict]:
    """A method's curve averaged over seeds point by point (runs of one config save the same checkpoints; if a
    seed saved fewer, the later checkpoints are dropped and the final points still meet)."""
    runs = [s["curves"][method] for s in per_seed]
    n = min(len(r) for r in runs)
    runs = [r[:n - 1] + r[-1:] for r in runs]
    return [{**points[0], **{k: round(float(np.mean([p[k] for p in points])), 4) for k in ("kl", "gold", "rm")}}
            for points in zip(*runs)]


# ------------------------------------------------------------------------------------------ reporting

def labels(cfg: CompareConfig) -> dict[str, str]:
    base = {"sft": "SFT", "bon": f"best-of-n (n = 1…{cfg.bon_n})", "dpo": f"DPO (β = {cfg.dpo_beta})",
            "ppo": f"PPO (β = {cfg.kl_coef})", "rloo": f"RLOO (k = {cfg.num_generations}, β = {cfg.kl_coef})",
            "grpo": f"GRPO (k = {cfg.num_generations}, β = {cfg.kl_coef})"}
    on = {"rm": "", "fn": ", on the verifier", "rm+fn": ", on RM + verifier"}
    return {name: base[split_run(name)[0]][:-1] + on[split_run(name)[1]] + ")" if split_run(name)[0] in RL_METHODS
            else base[name] for name in runs(cfg.settings())}


def write_report(out: Path, cfg: CompareConfig, preset: str, per_seed: list[dict], wall_s: float) -> dict:
    rows_of = runs(cfg.settings())
    methods = combine(per_seed, rows_of)
    names = labels(cfg)
    curves = {m: mean_curves(per_seed, m) for m in rows_of}
    report = {"world": str(cfg.world), "preset": preset, "seeds": cfg.seeds, "wall_s": round(wall_s, 1),
              "methods": methods, "curves": curves,
              "settings": {k: getattr(cfg, k) for k in ("kl_coef", "ppo_steps", "rl_lr", "num_generations",
                                                         "trained_on", "reward_fn", "dpo_beta", "dpo_lr",
                                                         "dpo_epochs", "bon_n", "eval_prompts")},
              "per_seed": [{k: v for k, v in s.items() if k != "golds"} for s in per_seed]}
    suffix = f" (mean of {len(per_seed)} seeds)" if len(per_seed) > 1 else ""
    images = [R.plot_reward_vs_sqrt_kl({names[m] + suffix: c for m, c in curves.items()},
                                       out / "reward_vs_sqrt_kl.png"),
              R.plot_win_rates({m: methods[m]["win_vs_sft"] for m in rows_of}, out / "win_rates.png")]
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    rows = table_rows(methods)
    points = [{"method": m, "at": p.get("step", p.get("n")), "√KL": math.sqrt(max(0.0, p["kl"])), "KL": p["kl"],
               "gold": p["gold"], "RM": p["rm"]} for m, c in curves.items() for p in c]
    shared = [{"seed": s["seed"], "rankings": s["rankings"], "RM accuracy": s["rm"]["heldout_accuracy"],
               "noise ceiling": s["rm"]["noise_ceiling"], **{f"{k} s": v for k, v in s["stages_wall_s"].items()}}
              for s in per_seed]
    R.write_html(out / "report.html", f"rlhfkit compare — {preset} world, seeds {cfg.seeds}",
                 [("Methods on the held-out prompts" + suffix, rows), ("Shared stages (per seed)", shared),
                  ("Gold vs KL: checkpoints (step) and best-of-n (n)" + suffix, points)], images, report)
    print_table(rows, preset, suffix)
    return report


def print_table(rows: list[dict], preset: str, suffix: str) -> None:
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    print(f"\n  held-out prompts, {preset} world{suffix}")
    print("  " + "  ".join(f"{k:>{widths[k]}}" for k in keys))
    for r in rows:
        print("  " + "  ".join(f"{str(r[k]):>{widths[k]}}" for k in keys))


# ---------------------------------------------------------------------------------------------- run

def run_seed(world, out: Path, plan, cfg: CompareConfig, seed: int, say) -> dict:
    """The shared stages, each method's training, then the evaluation of every method, for one seed."""
    shared = stages.sft_and_reward_model(world, out, plan, seed=seed, threads=cfg.threads, say=say)
    settings = cfg.settings()
    trained = {}
    for method in runs(settings):
        if method not in ("sft", "bon"):
            say(f"seed {seed}: 5. {method}")
            trained[method] = stages.train_method(method, world, out, plan, settings, seed, shared["rankings"])
    n_prompts = cfg.eval_prompts or plan.eval_prompts
    say(f"seed {seed}: 6. evaluation of {', '.join(runs(settings))} on {n_prompts} held-out prompts")
    result = stages.evaluate_methods(world, out, settings, n_prompts, seed, trained, shared["wall_s"]["sft"])
    return {"seed": seed, "rankings": shared["rankings"], "stages_wall_s": shared["wall_s"],
            "rm": {k: shared["rm"].get(k) for k in ("heldout_accuracy", "noise_ceiling", "n_pairs")}, **result}


def check_rl_runs(cfg: CompareConfig, world, plan) -> None:
    """The PPO, RLOO and GRPO runs the comparison will make, checked as `rlhf ppo` checks them (e.g. num_generations
    must divide the preset's batch; every reward function loads) before anything is trained."""
    if set(cfg.trained_on) - {"rm"}:
        for spec in cfg.reward_fn:
            load_reward_function(spec)
    for method in runs(cfg.settings()):
        if split_run(method)[0] in RL_METHODS:
            seed = cfg.seeds[0]
            stages.rl_config(method, world, Path(cfg.out) / f"seed-{seed}", plan, cfg.settings(), seed).check()


def run_compare(cfg: CompareConfig) -> dict:
    with reporting(cfg.report_to):  # the trainers it runs report there too
        return _run_compare(cfg)


def _run_compare(cfg: CompareConfig) -> dict:
    cfg.check()
    world = World(cfg.world)
    preset = world.meta.get("preset")
    if preset not in PLANS:
        raise UserError(f"{cfg.world}: world preset {preset!r} has no stage sizes (one of {', '.join(PLANS)})")
    plan = PLANS[preset]
    check_rl_runs(cfg, world, plan)
    cfg.methods = [m for m in METHODS if m in cfg.methods]  # the table's order, each method once
    out = stages.fresh_out_dir(cfg.out, cfg.overwrite)
    (out / "config.toml").write_text(to_toml(cfg), encoding="utf-8")
    set_threads(cfg.threads)
    say = stages.Progress()
    per_seed = []
    for seed in cfg.seeds:
        result = run_seed(world, out / f"seed-{seed}", plan, cfg, seed, say)
        (out / f"seed-{seed}" / "evaluation.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
        per_seed.append(result)
    report = write_report(out, cfg, preset, per_seed, time.time() - say.start)
    print(f"\nreport: {out / 'report.json'}, {out / 'report.html'}; plots: reward_vs_sqrt_kl.png, win_rates.png  "
          f"[{time.time() - say.start:.0f}s]")
    return report
