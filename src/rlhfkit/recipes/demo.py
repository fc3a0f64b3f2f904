"""`rlhf demo`: the whole InstructGPT loop on the toy world, measured against the hidden gold reward.

    world → SFT → sample K=4 → simulated rankings → reward model → PPO → evaluation on held-out prompts

For each seed the same world is used (the world's own seed is `--world-seed`); every stage after it
(SFT, sampling, labels, RM, PPO, evaluation) is seeded by the run's seed. Outputs in OUT:
`report.json`, `report.html`, `ppo_curves.png`, `reward_vs_sqrt_kl.png`, `win_rates.png`, and one
directory per seed with every stage's run directory.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from rlhfkit.eval import report as R
from rlhfkit.eval.policy import load_policy, run_checkpoints
from rlhfkit.models.loading import pick_device
from rlhfkit.models.precision import bf16_support, precision_line
from rlhfkit.recipes import pipeline as stages
from rlhfkit.recipes.configs import METHODS, PLANS, DemoConfig, MethodSettings, Plan
from rlhfkit.recipes.pipeline import Judge, Progress, mean, point
from rlhfkit.runtime.optim import set_threads
from rlhfkit.runtime.trackers import reporting
from rlhfkit.stats import win_rate
from rlhfkit.world.build import World, build_world
from rlhfkit.world.configs import WorldConfig


def use_bf16(choice: str, native: bool) -> bool:
    """--bf16 auto|yes|no: auto is bf16 exactly where this machine multiplies bf16 in hardware."""
    return choice == "yes" or (choice == "auto" and native)


def run_pipeline(world_dir: Path, out: Path, plan: Plan, cfg: DemoConfig, seed: int, say: Progress,
                 bf16: bool = False) -> dict:
    """world → SFT → sample K → simulated rankings → RM → PPO → evaluation, for one seed; returns its report."""
    world = World(world_dir)
    t0 = time.time()
    shared = stages.sft_and_reward_model(world, out, plan, seed=seed, threads=cfg.threads, say=say, bf16=bf16)
    steps = cfg.ppo_steps or plan.ppo_steps
    say(f"seed {seed}: 5. PPO, {steps} iterations x {plan.ppo_batch} episodes, β = {cfg.kl_coef}")
    t_ppo = time.time()
    ppo = stages.ppo(out / "sft", out / "rm", world, out / "ppo", steps=steps, batch=plan.ppo_batch,
                     minibatch=plan.ppo_minibatch, lr=plan.ppo_lr, kl_coef=cfg.kl_coef, save_every=plan.save_every,
                     seed=seed, threads=cfg.threads, bf16=bf16)
    ppo_wall_s = round(time.time() - t_ppo, 1)
    say(f"seed {seed}: 6. evaluation on {plan.eval_prompts} held-out prompts")
    evaluation = evaluate(world, out, plan, seed)
    rm = shared["rm"]
    report = {"seed": seed, "wall_s": round(time.time() - t0, 1), "bf16": bf16, **evaluation["report"],
              "rm": {"heldout_accuracy": rm["heldout_accuracy"], "noise_ceiling": rm["noise_ceiling"],
                     "n_pairs": rm["n_pairs"], "spearman_gold": rm["spearman_gold"],
                     "by_component": rm["by_component"]},
              "labelers": {"pairwise_agreement": stages.agreement(out / "rankings.jsonl")},
              "sft": {"heldout_loss": shared["sft"]["eval_loss"]}}
    report["ppo"] |= {"steps": steps, "episodes": steps * plan.ppo_batch, "last_batch_kl": ppo["kl"]}
    if cfg.methods:
        say(f"seed {seed}: 7. the same preferences through {', '.join(cfg.methods)} (rlhf compare)")
        report["methods"] = compare_methods(world, out, plan, cfg, seed, shared, ppo_wall_s)
    (out / "curves.json").write_text(json.dumps(evaluation["curves"], indent=1) + "\n", encoding="utf-8")
    return report


def compare_methods(world, out: Path, plan: Plan, cfg: DemoConfig, seed: int, shared: dict, ppo_wall_s: float) -> dict:
    """`rlhf compare`'s table for this seed: SFT, best-of-n, PPO (the demo's run) and the extra methods, trained
    on the same SFT model and rankings and evaluated on the same held-out prompts."""
    methods = tuple(m for m in METHODS if m in {"sft", "bon", "ppo", *cfg.methods})
    settings = MethodSettings(methods=methods, kl_coef=cfg.kl_coef, ppo_steps=cfg.ppo_steps, threads=cfg.threads)
    trained = {"ppo": {"wall_s": ppo_wall_s, "episodes": (cfg.ppo_steps or plan.ppo_steps) * plan.ppo_batch}}
    for method in cfg.methods:
        trained[method] = stages.train_method(method, world, out, plan, settings, seed, shared["rankings"])
    result = stages.evaluate_methods(world, out, settings, plan.eval_prompts, seed, trained, shared["wall_s"]["sft"])
    return result["methods"]


def evaluate(world, out: Path, plan: Plan, seed: int) -> dict:
    """Win rates, gold and RM reward, KL to SFT, best-of-n, and the reward-vs-√KL curves of PPO checkpoints."""
    judge = Judge.load(out / "sft", out / "rm", world.prompts("heldout")[:plan.eval_prompts], world.response_limit,
                       seed)

    def measure(path):
        return judge.measure(load_policy(path)[0] if path != out / "sft" else judge.sft)

    base, sft_eval, ppo = measure(world.base), measure(out / "sft"), measure(out / "ppo")
    bon = judge.best_of_n(plan.bon_n)
    bon4 = bon.gold_of(4).tolist()
    ppo_curve = [point(sft_eval, step=0)]
    for step, path in run_checkpoints(out / "ppo"):
        ppo_curve.append(point(measure(path), step=step))
    ppo_curve.append(point(ppo, step="final"))
    report = {
        "win_rates": {"sft_vs_base": win_rate(sft_eval.totals, base.totals, seed=seed),
                      "ppo_vs_sft": win_rate(ppo.totals, sft_eval.totals, seed=seed),
                      "ppo_vs_bon": win_rate(ppo.totals, bon4, seed=seed)},
        "gold": {"base": mean(base.totals), "sft": mean(sft_eval.totals), "bon": mean(bon4),
                 "ppo": mean(ppo.totals)},
        "ppo": {"kl": mean(ppo.kl), "rm": mean(ppo.rm), "eos_rate": ppo.summary()["eos_rate"],
                "length": ppo.summary()["length"]},
        "bon": {"n": 4, "kl": round(bon.curve((4,))[0]["kl"], 4)},
        "components": {name: e.summary() for name, e in (("base", base), ("sft", sft_eval), ("ppo", ppo))},
        "examples": [{"prompt": p, "sft": s, "ppo": q}
                     for p, s, q in zip(judge.prompts[:8], sft_eval.texts, ppo.texts)],
    }
    return {"report": report, "curves": {"ppo": ppo_curve, "bon": bon.curve()}}


# ------------------------------------------------------------------------------------------- reporting

FIGURES = ("win_rates", "gold", "rm", "ppo", "labelers", "bon", "components", "sft", "methods")


def across_seeds(reports: list[dict], reduce) -> dict:
    """The figure trees of several seeds' reports combined leaf by leaf with `reduce` (e.g. mean, std)."""
    def merge(values):
        if all(isinstance(v, dict) for v in values):
            return {k: merge([v[k] for v in values]) for k in values[0] if all(k in v for v in values)}
        if all(isinstance(v, int) and not isinstance(v, bool) for v in values) and len(set(values)) == 1:
            return values[0] if reduce is np.mean else 0  # a count that every seed shares (n, steps)
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            return round(float(reduce(values)), 4)
        return None
    return {k: merge([r[k] for r in reports]) for k in FIGURES if all(k in r for r in reports)}


def write_report(out: Path, cfg: DemoConfig, reports: list[dict], wall_s: float) -> dict:
    first = reports[0]
    report = {"preset": cfg.preset, "seed": first["seed"], "wall_s": round(wall_s, 1), "kl_coef": cfg.kl_coef,
              "bf16": first["bf16"],
              **{k: first[k] for k in FIGURES if k in first}}
    if len(reports) > 1:  # every figure becomes the mean over seeds; `std` has the same shape
        report |= {"seed": [r["seed"] for r in reports], **across_seeds(reports, np.mean),
                   "std": across_seeds(reports, lambda v: np.std(v, ddof=1)), "per_seed": reports}
    curves = {r["seed"]: json.loads((out / f"seed-{r['seed']}" / "curves.json").read_text()) for r in reports}
    metrics = {f"seed {s}": _read_metrics(out / f"seed-{s}" / "ppo" / "metrics.jsonl") for s in curves}
    images = [R.plot_ppo_curves(metrics, out / "ppo_curves.png")]
    kl_curves, groups = {}, {}
    for s, c in curves.items():
        for label, points in ((f"PPO (β={cfg.kl_coef}) seed {s}", c["ppo"]), (f"best-of-n seed {s}", c["bon"])):
            kl_curves[label], groups[label] = points, str(s)
    images.append(R.plot_reward_vs_sqrt_kl(kl_curves, out / "reward_vs_sqrt_kl.png", groups))
    images.append(R.plot_win_rates(report["win_rates"], out / "win_rates.png"))
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    sections = [("Win rates by the hidden gold reward (held-out prompts)", _win_rows(reports)),
                ("Mean gold reward", [{"seed": r["seed"], **r["gold"]} for r in reports]),
                ("Reward model", [{"seed": r["seed"], **{k: v for k, v in r["rm"].items() if k != "by_component"},
                                   **r["labelers"]} for r in reports]),
                ("Reward model by the gold component that decides each held-out pair",
                 [{"seed": r["seed"], "component": name, **row} for r in reports
                  for name, row in r["rm"]["by_component"].items()]),
                ("PPO", [{"seed": r["seed"], **r["ppo"]} for r in reports]),
                ("Examples (seed %s)" % first["seed"], first["examples"])]
    if "methods" in report:
        sections.insert(5, ("Methods on the same preferences (held-out prompts)", stages.table_rows(report["methods"])))
    R.write_html(out / "report.html", f"rlhfkit demo — preset {cfg.preset}", sections, images, report)
    return report


def _win_rows(reports: list[dict]) -> list[dict]:
    rows = []
    for r in reports:
        for name, w in r["win_rates"].items():
            rows.append({"seed": r["seed"], "comparison": name, "rate": w["rate"],
                         "95% CI": f"{w['ci_low']:.3f}–{w['ci_high']:.3f}", "n": w["n"]})
    return rows


def _read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def print_table(report: dict, reports: list[dict]) -> None:
    def cell(key, sub, fmt="{:.3f}", field=None):
        values = [r[key][sub] if field is None else r[key][sub][field] for r in reports]
        values = [v["rate"] if isinstance(v, dict) else v for v in values]
        if len(values) == 1:
            return fmt.format(values[0])
        return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"
    rows = [("SFT beats base (gold win rate)", cell("win_rates", "sft_vs_base"), "≥ 0.90"),
            ("PPO beats SFT (gold win rate)", cell("win_rates", "ppo_vs_sft"), "≥ 0.75"),
            ("PPO beats best-of-4 (gold win rate)", cell("win_rates", "ppo_vs_bon"), "> 0.50"),
            ("mean gold: base", cell("gold", "base"), ""), ("mean gold: SFT", cell("gold", "sft"), ""),
            ("mean gold: best-of-4", cell("gold", "bon"), ""), ("mean gold: PPO", cell("gold", "ppo"), ""),
            # where the gain comes from: right answers (the gold reward's correctness) beside the win rates
            ("gold correctness: SFT", cell("components", "sft", field="gold_correctness"), ""),
            ("gold correctness: PPO", cell("components", "ppo", field="gold_correctness"), "≥ SFT + 0.03"),
            ("RM held-out accuracy", cell("rm", "heldout_accuracy"), ""),
            ("RM noise ceiling", cell("rm", "noise_ceiling"), ""),
            ("labeler agreement", cell("labelers", "pairwise_agreement"), "≈ 0.73"),
            ("PPO KL(π‖π_SFT), nats", cell("ppo", "kl"), "")]
    width = max(len(r[0]) for r in rows)
    print()
    print(f"  {'held-out prompts, preset ' + report['preset']:<{width}}  {'value':>15}  target")
    for name, value, target in rows:
        print(f"  {name:<{width}}  {value:>15}  {target}")
    if len(reports) == 1:
        w = reports[0]["win_rates"]
        print("\n  95% intervals: " + ", ".join(f"{k} {v['ci_low']:.2f}–{v['ci_high']:.2f} (n={v['n']})"
                                               for k, v in w.items()))


def run_demo(cfg: DemoConfig) -> dict:
    with reporting(cfg.report_to):  # the trainers it runs report there too
        return _run_demo(cfg)


def _run_demo(cfg: DemoConfig) -> dict:
    cfg.check()
    if cfg.world:
        World(cfg.world)  # a user error if it is not a world
    out = stages.fresh_out_dir(cfg.out, cfg.overwrite)
    set_threads(cfg.threads)
    cfg.preset = stages.preset_of(cfg.preset, cfg.world)
    plan = PLANS[cfg.preset]
    say = Progress()
    support = bf16_support(pick_device("auto"))  # the trainers' device (their --device auto)
    bf16 = use_bf16(cfg.bf16, support.native)
    say(precision_line(bf16, support))
    world_dir = Path(cfg.world) if cfg.world else out / "world"
    if not cfg.world:
        say(f"world: building the '{cfg.preset}' toy world (the base LM is cached after the first build)")
        stages.quiet(build_world, WorldConfig(out=str(world_dir), preset=cfg.preset, seed=cfg.world_seed,
                                              arch=cfg.arch))
    reports = [run_pipeline(world_dir, out / f"seed-{seed}", plan, cfg, seed, say, bf16) for seed in cfg.seeds]
    report = write_report(out, cfg, reports, time.time() - say.start)
    print_table(report, reports)
    print(f"\nreport: {out / 'report.json'}, {out / 'report.html'}; plots: ppo_curves.png, reward_vs_sqrt_kl.png, "
          f"win_rates.png  [{time.time() - say.start:.0f}s]")
    return report
