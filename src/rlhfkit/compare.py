"""`rlhf compare`: best-of-n, DPO, PPO and RLOO on the same SFT model, the same rankings and the same held-out
prompts, judged by the toy world's hidden gold reward (DESIGN §5).

For each seed:

    world → SFT → K samples → simulated rankings → reward model        (shared: `pipeline.sft_and_reward_model`)
      ├─ bon   best-of-n: n SFT samples per held-out prompt, the RM keeps one (no training; curve n = 1 … bon_n)
      ├─ dpo   DPO on the same rankings (Rafailov et al. 2023)
      ├─ ppo   PPO against the RM with the KL penalty β to SFT; value model from the RM
      └─ rloo  the same trainer with `--advantage rloo` (Ahmadian et al. 2024): k samples per prompt, no value model

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
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlhfkit import pipeline as stages
from rlhfkit.config import option, to_toml
from rlhfkit.errors import UserError

METHODS = ("sft", "bon", "dpo", "ppo", "rloo")
SEED_EVAL = 10_000  # evaluation samples never reuse a training stream (as in `rlhf demo`)


@dataclass
class CompareConfig:
    world: str = option(None, "built toy world (rlhf world build); its preset sizes the shared stages", required=True)
    out: str = option(None, "output directory (report.json, report.html, plots, one folder per seed)",
                      required=True)
    methods: list[str] = option(list(METHODS), "methods, comma-separated, from: sft, bon, dpo, ppo, rloo")
    seeds: list[int] = option([0], "pipeline seeds, comma-separated; several give means and standard deviations")
    kl_coef: float = option(0.05, "β of the KL penalty to SFT, for PPO and RLOO")
    rl_steps: int | None = option(None, "PPO and RLOO iterations (default: the preset's PPO iterations)")
    rl_lr: float | None = option(None, "PPO and RLOO learning rate (default: the preset's)")
    rloo_k: int = option(4, "RLOO: samples per prompt (a batch is batch/k prompts x k samples)")
    dpo_beta: float = option(0.1, "β of DPO")
    dpo_lr: float = option(1e-4, "DPO learning rate")
    dpo_epochs: int = option(1, "DPO passes over the rankings")
    bon_n: int = option(16, "best-of-n: largest n; its curve runs n = 1 … bon_n and its table row is n = bon_n")
    curve_points: int = option(4, "checkpoints saved along each DPO, PPO and RLOO run for the gold-vs-√KL curve")
    eval_prompts: int | None = option(None, "held-out prompts evaluated (default: the preset's)")
    overwrite: bool = option(False, "replace an existing output directory")
    threads: int = option(0, "torch CPU threads (0: torch's default)")


# ------------------------------------------------------------------------------------------ training

def train_method(method: str, world, out: Path, plan, cfg: CompareConfig, seed: int, n_rankings: int) -> dict:
    """Train one method from OUT/sft into OUT/METHOD, with checkpoints along the way; its wall time and episodes."""
    t0 = time.time()
    if method == "dpo":
        # DPO's default batch (16 rankings) and held-out share (10 %) give about this many steps: spaced checkpoints.
        steps = math.ceil(n_rankings * 0.9 / 16) * cfg.dpo_epochs
        stages.dpo(out / "sft", out / "rankings.jsonl", out / "dpo", beta=cfg.dpo_beta, lr=cfg.dpo_lr,
                   epochs=cfg.dpo_epochs, save_every=max(1, steps // cfg.curve_points), seed=seed,
                   threads=cfg.threads)
        return {"wall_s": round(time.time() - t0, 1), "episodes": 0}
    steps = cfg.rl_steps or plan.ppo_steps
    options = {"advantage": "rloo", "rloo_k": cfg.rloo_k} if method == "rloo" else {}
    stages.ppo(out / "sft", out / "rm", world, out / method, steps=steps, batch=plan.ppo_batch,
               minibatch=plan.ppo_minibatch, lr=cfg.rl_lr or plan.ppo_lr, kl_coef=cfg.kl_coef,
               save_every=max(1, steps // cfg.curve_points), seed=seed, threads=cfg.threads, **options)
    return {"wall_s": round(time.time() - t0, 1), "episodes": steps * plan.ppo_batch}


# ---------------------------------------------------------------------------------------- evaluation

def evaluate_methods(world, out: Path, cfg: CompareConfig, n_prompts: int, seed: int, trained: dict,
                     sft_wall_s: float) -> dict:
    """One row per method ({gold, rm, kl, wall_s, episodes, win_vs_sft}), its gold-vs-KL curve, and the per-prompt
    gold of the samples behind each win rate (`golds`, for pooling over seeds)."""
    from rlhfkit.eval.bon import best_of_n, bon_kl
    from rlhfkit.eval.policy import evaluate_policy, load_policy, run_checkpoints
    from rlhfkit.eval.stats import win_rate
    from rlhfkit.models.scalar import ScalarModel

    prompts = world.prompts("heldout")[:n_prompts]
    sft, tokenizer = load_policy(out / "sft")
    reward = ScalarModel.from_pretrained(out / "rm").eval()
    kwargs = dict(temperature=1.0, max_new_tokens=world.response_limit, seed=SEED_EVAL + seed)

    def measure(model):
        return evaluate_policy(model, sft, reward, tokenizer, prompts, **kwargs)

    reference = measure(sft)  # the SFT sample every method is compared with, prompt by prompt
    rows, curves, golds = {}, {}, {"reference": reference.totals}

    def row(gold, rm, kl, **extra) -> dict:
        return {"gold": _mean(gold), "rm": _mean(rm), "kl": _mean(kl), **extra,
                "win_vs_sft": win_rate(gold, reference.totals, seed=seed)}

    if "sft" in cfg.methods:
        again = evaluate_policy(sft, sft, reward, tokenizer, prompts, **{**kwargs, "seed": SEED_EVAL + seed + 2})
        rows["sft"] = row(reference.totals, reference.rm, reference.kl, wall_s=sft_wall_s, episodes=0)
        rows["sft"]["win_vs_sft"] = win_rate(again.totals, reference.totals, seed=seed)
        curves["sft"], golds["sft"] = [_point(reference, step=0)], again.totals
    if "bon" in cfg.methods:
        t0 = time.time()
        bon = best_of_n(sft, tokenizer, reward, prompts, n=cfg.bon_n, max_new_tokens=world.response_limit,
                        seed=SEED_EVAL + seed + 1)
        pick, n = bon.chosen(cfg.bon_n), cfg.bon_n
        gold = bon.gold_of(n).tolist()
        rows["bon"] = row(gold, bon.rm[np.arange(len(prompts)), pick], [bon_kl(n)], n=n,
                          wall_s=round(time.time() - t0, 1), episodes=n * len(prompts))
        curves["bon"], golds["bon"] = bon.curve(range(1, n + 1)), gold
    for method in ("dpo", "ppo", "rloo"):
        if method not in cfg.methods:
            continue
        final = measure(load_policy(out / method)[0])
        points = [_point(reference, step=0)]
        points += [_point(measure(load_policy(path)[0]), step=step) for step, path in run_checkpoints(out / method)]
        points.append(_point(final, step="final"))
        rows[method] = row(final.totals, final.rm, final.kl, **trained[method])
        curves[method], golds[method] = points, final.totals
    return {"methods": rows, "curves": curves, "golds": golds}


def _point(e, **where) -> dict:
    s = e.summary()
    return {**where, "kl": s["kl"], "gold": s["gold"], "rm": s["rm"]}


def _mean(values) -> float:
    return round(float(np.mean(values)), 4)


# ------------------------------------------------------------------------------------- across seeds

FIGURES = ("gold", "rm", "kl", "wall_s", "episodes")


def combine(per_seed: list[dict], methods: list[str]) -> dict:
    """`methods` of report.json. One seed: that seed's rows. Several: each figure is the mean over seeds, with
    `across_seeds` giving {mean, std, values} per figure, and the win rate is pooled over seeds × prompts (its
    bootstrap interval resamples prompts, not seeds: the seed-to-seed spread is `across_seeds.win_rate.std`)."""
    from rlhfkit.eval.stats import mean_std, win_rate

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
    return {"sft": "SFT", "bon": f"best-of-n (n = 1…{cfg.bon_n})", "dpo": f"DPO (β = {cfg.dpo_beta})",
            "ppo": f"PPO (β = {cfg.kl_coef})", "rloo": f"RLOO (k = {cfg.rloo_k}, β = {cfg.kl_coef})"}


def table_rows(methods: dict) -> list[dict]:
    rows = []
    for name, m in methods.items():
        spread, w = m.get("across_seeds"), m["win_vs_sft"]

        def cell(k, m=m, spread=spread):
            return f"{m[k]:.3f} ± {spread[k]['std']:.3f}" if spread else f"{m[k]:.3f}"
        rows.append({"method": name, "gold": cell("gold"), "RM": cell("rm"), "KL": cell("kl"),
                     "win vs SFT": f"{w['rate']:.3f}" + (f" ± {spread['win_rate']['std']:.3f}" if spread else ""),
                     "95% CI": f"{w['ci_low']:.3f}–{w['ci_high']:.3f}", "n": w["n"],
                     "wall s": f"{m['wall_s']:.0f}", "episodes": int(m["episodes"])})
    return rows


def write_report(out: Path, cfg: CompareConfig, preset: str, per_seed: list[dict], wall_s: float) -> dict:
    from rlhfkit.eval import report as R

    methods = combine(per_seed, cfg.methods)
    names = labels(cfg)
    curves = {m: mean_curves(per_seed, m) for m in cfg.methods}
    report = {"world": str(cfg.world), "preset": preset, "seeds": cfg.seeds, "wall_s": round(wall_s, 1),
              "methods": methods, "curves": curves,
              "settings": {k: getattr(cfg, k) for k in ("kl_coef", "rl_steps", "rl_lr", "rloo_k", "dpo_beta",
                                                         "dpo_lr", "dpo_epochs", "bon_n", "eval_prompts")},
              "per_seed": [{k: v for k, v in s.items() if k != "golds"} for s in per_seed]}
    suffix = f" (mean of {len(per_seed)} seeds)" if len(per_seed) > 1 else ""
    images = [R.plot_reward_vs_sqrt_kl({names[m] + suffix: c for m, c in curves.items()},
                                       out / "reward_vs_sqrt_kl.png"),
              R.plot_win_rates({m: methods[m]["win_vs_sft"] for m in cfg.methods}, out / "win_rates.png")]
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
    trained = {}
    for method in ("dpo", "ppo", "rloo"):
        if method in cfg.methods:
            say(f"seed {seed}: 5. {method}")
            trained[method] = train_method(method, world, out, plan, cfg, seed, shared["rankings"])
    n_prompts = cfg.eval_prompts or plan.eval_prompts
    say(f"seed {seed}: 6. evaluation of {', '.join(cfg.methods)} on {n_prompts} held-out prompts")
    result = evaluate_methods(world, out, cfg, n_prompts, seed, trained, shared["wall_s"]["sft"])
    return {"seed": seed, "rankings": shared["rankings"], "stages_wall_s": shared["wall_s"],
            "rm": {k: shared["rm"].get(k) for k in ("heldout_accuracy", "noise_ceiling", "n_pairs")}, **result}


def _check(cfg: CompareConfig, plan) -> None:
    unknown = [m for m in cfg.methods if m not in METHODS]
    if unknown or not cfg.methods:
        raise UserError(f"config key 'methods': unknown or none ({', '.join(unknown)}); "
                        f"choose from {', '.join(METHODS)}")
    if not cfg.seeds:
        raise UserError("config key 'seeds': give at least one seed")
    for key in ("bon_n", "curve_points", "dpo_epochs"):
        if getattr(cfg, key) < 1:
            raise UserError(f"config key '{key}' must be at least 1")
    if cfg.kl_coef < 0:
        raise UserError("config key 'kl_coef' must be >= 0")
    if "rloo" in cfg.methods and (cfg.rloo_k < 2 or plan.ppo_batch % cfg.rloo_k):
        raise UserError(f"config key 'rloo_k' must be at least 2 and divide the batch of {plan.ppo_batch} episodes")


def run_compare(cfg: CompareConfig) -> dict:
    from rlhfkit.demo import PLANS
    from rlhfkit.train.common import prepare_out_dir, set_threads
    from rlhfkit.world.build import World

    world = World(cfg.world)
    preset = world.meta.get("preset")
    if preset not in PLANS:
        raise UserError(f"{cfg.world}: world preset {preset!r} has no stage sizes (one of {', '.join(PLANS)})")
    plan = PLANS[preset]
    _check(cfg, plan)
    cfg.methods = [m for m in METHODS if m in cfg.methods]  # the table's order, each method once
    out = prepare_out_dir(cfg.out, cfg.overwrite)
    if out.exists() and cfg.overwrite:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
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
