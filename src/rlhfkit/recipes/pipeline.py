"""What `rlhf demo`, `rlhf compare` and `rlhf loop` share; the three import it and never each other.

- the stages of the RLHF loop as calls of the commands' own library functions: each stage builds the same config
  the command line would and runs the command's function, so the demo is literally `rlhf sft`, `rlhf sample`,
  `rlhf label simulate`, `rlhf rm` and `rlhf ppo` in a row; each stage's own summary goes to its run directory,
  not to the terminal;
- how much of each stage a preset runs (`Plan`, `PLANS`) and the reset of an output directory;
- the held-out evaluation (`Judge`) and its seeds: every policy is sampled with the same seed on the same prompts,
  so that a win rate compares two samples of each prompt (docs/design.md §5);
- the methods of `rlhf compare` (DPO, PPO, RLOO, GRPO, best-of-n) trained and evaluated on one SFT model and one set
  of rankings: `rlhf demo --methods` adds the same table to its report. Each RL method can be trained on the reward
  model, on reward functions (the world's verifier by default) or on both (`trained_on`): one run each, e.g. `ppo`,
  `ppo-fn`, `ppo-rm+fn`. Every policy is judged by the world's gold reward, never trained on it.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rlhfkit.data.formats import read_prompts
from rlhfkit.data.jsonl import write_jsonl
from rlhfkit.data.pairs import read_preferences
from rlhfkit.eval.bon import BestOfN, best_of_n, bon_kl
from rlhfkit.eval.policy import PolicyEval, evaluate_policy, load_policy, run_checkpoints
from rlhfkit.models.reward_model import RewardModel
from rlhfkit.recipes.configs import DEFAULT_PRESET, METHODS, PLANS, RL_METHODS, MethodSettings, Plan, SampleConfig
from rlhfkit.recipes.sample import sample_candidates
from rlhfkit.rewards.accuracy import labeler_agreement
from rlhfkit.rewards.sources import WORLD_JUDGE
from rlhfkit.runtime.directory import prepare_out_dir
from rlhfkit.stats import win_rate
from rlhfkit.train.configs import DPOConfig, PPOConfig, RewardConfig, SFTConfig
from rlhfkit.train.dpo import train_dpo
from rlhfkit.train.ppo import train_ppo
from rlhfkit.train.reward import train_reward_model
from rlhfkit.train.sft import train_sft
from rlhfkit.world.configs import SimulateConfig
from rlhfkit.world.gold import gold_reward
from rlhfkit.world.simulate import simulate_labels

# ------------------------------------------------------------------------------------------- presets


def preset_of(preset: str | None, world_dir: str | Path | None) -> str:
    """The plan's preset: the one given, else the world's own (its world.json), else tiny — so that a command run
    on a built world sizes its stages for that world, not for the default one."""
    if preset is not None:
        return preset
    meta = Path(world_dir) / "world.json" if world_dir else None
    if meta is not None and meta.is_file():
        built = json.loads(meta.read_text(encoding="utf-8")).get("preset")
        if built in PLANS:
            return built
    return DEFAULT_PRESET


def fresh_out_dir(out: str | Path, overwrite: bool) -> Path:
    """The output directory of a demo or comparison, empty: refused when it holds files and `overwrite` is off
    (`prepare_out_dir`), emptied when it is on."""
    out = prepare_out_dir(out, overwrite)
    if out.exists() and overwrite:
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    return out


class Progress:
    """One line per stage, with the wall time since the run started."""

    def __init__(self):
        self.start = time.time()

    def __call__(self, message: str) -> None:
        print(f"[{time.time() - self.start:6.0f}s] {message}", flush=True)


def quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


# -------------------------------------------------------------------------------------------- stages

def sft(world, out: Path, *, epochs: int, lr: float, seed: int, threads: int = 0, bf16: bool = False) -> dict:
    return quiet(train_sft, SFTConfig(model=str(world.base), data=str(world.demos_path), out=str(out), epochs=epochs,
                                      lr=lr, seed=seed, threads=threads, bf16=bf16, overwrite=True))


def sample(models: list[Path], prompts: Path, out: Path, *, k: int, temperatures, limit: int, max_new_tokens: int,
           seed: int, offset: int = 0, id_prefix: str = "", rollout_engine: str = "hf") -> list[dict]:
    """K candidates for `limit` prompts, starting at `offset` of the prompts file (wrapping around); item ids get
    `id_prefix` so that the rounds of the online loop never share one."""
    if offset or id_prefix:
        records = read_prompts(prompts)
        chosen = [records[(offset + i) % len(records)] for i in range(min(limit, len(records)))]
        prompts = out.with_name(out.stem + "-prompts.jsonl")
        write_jsonl(prompts, ({**r, "id": f"{id_prefix}{r.get('id', n)}"} for n, r in enumerate(chosen)))
    return quiet(sample_candidates, SampleConfig(models=[str(m) for m in models], prompts=str(prompts), out=str(out),
                                                 k=k, temperatures=list(temperatures), limit=limit,
                                                 max_new_tokens=max_new_tokens, seed=seed,
                                                 rollout_engine=rollout_engine))


def simulate(world_dir: Path, candidates: Path, out: Path, *, labelers: int, per_item: int, seed: int) -> list[dict]:
    return quiet(simulate_labels, SimulateConfig(world=str(world_dir), candidates=str(candidates), out=str(out),
                                                 labelers=labelers, per_item=per_item, seed=seed))


def reward_model(policy: Path, data: Path, out: Path, world, *, lr: float, epochs: int, seed: int,
                 threads: int = 0, bf16: bool = False, eval_data: Path | None = None) -> dict:
    """`rlhf rm`; `eval_data`: its held-out rankings (default: it holds out a share of `data`'s prompts)."""
    return quiet(train_reward_model, RewardConfig(model=str(policy), data=str(data), out=str(out),
                                                  eval_data=str(eval_data) if eval_data else None,
                                                  demos=str(world.demos_path), world=str(world.path), lr=lr,
                                                  epochs=epochs, seed=seed, threads=threads, bf16=bf16,
                                                  overwrite=True))


def ppo_config(policy: Path, reward: Path, world, out: Path, *, steps: int, batch: int, minibatch: int, lr: float,
               kl_coef: float, save_every: int, seed: int, reference: Path | None = None, threads: int = 0,
               **options) -> PPOConfig:
    """The config of `rlhf ppo`; `options` are further PPOConfig fields, e.g. advantage="rloo", num_generations=4
    for RLOO."""
    return PPOConfig(policy=str(policy), reference=str(reference) if reference else None,
                     reward=str(reward) if reward else None, judge=[WORLD_JUDGE],
                     prompts=str(world.train_prompts_path), out=str(out), ppo_steps=steps,
                     batch_size=batch, minibatch_size=minibatch, lr=lr, kl_coef=kl_coef,
                     max_new_tokens=world.response_limit, save_every=save_every, seed=seed, threads=threads,
                     overwrite=True, **options)


def ppo(policy: Path, reward: Path, world, out: Path, **kwargs) -> dict:
    """`rlhf ppo` with `ppo_config(policy, reward, world, out, **kwargs)`."""
    return quiet(train_ppo, ppo_config(policy, reward, world, out, **kwargs))


def dpo(policy: Path, rankings: Path, out: Path, *, beta: float, lr: float, epochs: int, save_every: int, seed: int,
        threads: int = 0) -> dict:
    """`rlhf dpo` on the reward model's rankings (and its held-out split)."""
    return quiet(train_dpo, DPOConfig(policy=str(policy), data=str(rankings), out=str(out), beta=beta, lr=lr,
                                      epochs=epochs, save_every=save_every, seed=seed, threads=threads,
                                      overwrite=True))


def sft_and_reward_model(world, out: Path, plan: Plan, *, seed: int, threads: int, say: Progress,
                         bf16: bool = False) -> dict:
    """Steps 1–2, shared by every method that follows: SFT on the world's demonstrations (OUT/sft), K samples per
    prompt from it, simulated rankings (OUT/rankings.jsonl) and the reward model (OUT/rm), SFT and RM trained
    under bf16 autocast with `bf16`. Returns the stages' summaries and wall times."""
    clock = time.time()
    say(f"seed {seed}: 1. SFT on {len(world.demos())} demonstrations")
    sft_summary = sft(world, out / "sft", epochs=plan.sft_epochs, lr=plan.sft_lr, seed=seed, threads=threads,
                      bf16=bf16)
    wall = {"sft": time.time() - clock}
    clock = time.time()
    say(f"seed {seed}: 2. sample K={plan.k} outputs for {plan.label_prompts} prompts at T={plan.temperatures}")
    sample([out / "sft"], world.train_prompts_path, out / "candidates.jsonl", k=plan.k, temperatures=plan.temperatures,
           limit=plan.label_prompts, max_new_tokens=world.response_limit, seed=seed)
    say(f"seed {seed}: 3. {plan.labelers} simulated labelers rank them ({plan.per_item} per item)")
    rankings = simulate(world.path, out / "candidates.jsonl", out / "rankings.jsonl", labelers=plan.labelers,
                        per_item=plan.per_item, seed=seed)
    wall["labels"] = time.time() - clock
    clock = time.time()
    say(f"seed {seed}: 4. reward model on {len(rankings)} rankings")
    rm = reward_model(out / "sft", out / "rankings.jsonl", out / "rm", world, lr=plan.rm_lr, epochs=plan.rm_epochs,
                      seed=seed, threads=threads, bf16=bf16)
    wall["rm"] = time.time() - clock
    say(f"seed {seed}:    held-out accuracy {rm['heldout_accuracy']:.3f}, noise ceiling {rm['noise_ceiling']:.3f} "
        f"({rm['n_pairs']} comparisons)")
    return {"sft": sft_summary, "rankings": len(rankings), "rm": rm,
            "wall_s": {k: round(v, 1) for k, v in wall.items()}}


def agreement(rankings: Path) -> float | None:
    return labeler_agreement(read_preferences(rankings))["labeler_agreement"]


# ---------------------------------------------------------------------------------------- evaluation

SEED_EVAL = 10_000  # evaluation samples (seed SEED_EVAL + the run's seed) never reuse a training stream


@dataclass
class Judge:
    """Held-out prompts, the SFT policy as the KL reference and a reward model: `measure` samples a policy once
    per prompt and scores each sample by gold, by the RM and by its KL to SFT (k1)."""
    sft: object
    tokenizer: object
    reward: RewardModel
    prompts: list[str]
    max_new_tokens: int
    seed: int                 # SEED_EVAL + the run's seed

    @classmethod
    def load(cls, sft: Path, rm: Path, prompts: list[str], max_new_tokens: int, seed: int) -> Judge:
        policy, tokenizer = load_policy(sft)
        return cls(policy, tokenizer, RewardModel.load(rm, tokenizer), list(prompts), max_new_tokens,
                   SEED_EVAL + seed)

    def measure(self, model, offset: int = 0) -> PolicyEval:
        """`offset` > 0 draws an independent sample (a second SFT sample is what "no difference" looks like)."""
        return evaluate_policy(model, self.sft, self.reward, self.tokenizer, self.prompts, temperature=1.0,
                               max_new_tokens=self.max_new_tokens, seed=self.seed + offset, gold=gold_reward)

    def best_of_n(self, n: int) -> BestOfN:
        return best_of_n(self.sft, self.tokenizer, self.reward, self.prompts, n=n,
                         max_new_tokens=self.max_new_tokens, seed=self.seed + 1, gold=gold_reward)


def point(e: PolicyEval, **where) -> dict:
    """One point of a gold-vs-KL curve: `where` (the step) and the mean KL, gold and RM score."""
    s = e.summary()
    return {**where, "kl": s["kl"], "gold": s["gold"], "rm": s["rm"]}


def mean(values) -> float:
    return round(float(np.mean(values)), 4)


# ------------------------------------------------------------------------- the methods of `rlhf compare`

def run_name(method: str, trained_on: str = "rm") -> str:
    """The row (and run directory) of a method trained on a reward source: `ppo`, `ppo-fn`, `ppo-rm+fn`."""
    return method if trained_on == "rm" or method not in RL_METHODS else f"{method}-{trained_on}"


def split_run(name: str) -> tuple[str, str]:
    """`ppo-rm+fn` -> ("ppo", "rm+fn"); `dpo` -> ("dpo", "rm")."""
    method, _, on = name.partition("-")
    return method, on or "rm"


def runs(settings: MethodSettings) -> list[str]:
    """Every row of the comparison, in the table's order: each method, each RL method once per reward source."""
    return [run_name(m, on) for m in METHODS if m in settings.methods
            for on in (settings.trained_on if m in RL_METHODS else ("rm",))]


def rl_config(name: str, world, out: Path, plan: Plan, settings: MethodSettings, seed: int) -> PPOConfig:
    """The `rlhf ppo` config of run `name` (`runs`) into OUT/NAME: "ppo", "rloo" or "grpo" (the same trainer with
    `--advantage rloo|grpo`), on the RM, on the reward functions (PPO's value model still starts from the RM's
    weights, as InstructGPT's) or on their sum."""
    method, on = split_run(name)
    steps = settings.ppo_steps or plan.ppo_steps
    options = {"advantage": method, "num_generations": settings.num_generations} if method != "ppo" else {}
    if on != "rm":
        options["reward_fn"] = list(settings.reward_fn)
        if method == "ppo":
            options["value_model"] = str(out / "rm")
    reward = out / "rm" if "rm" in on.split("+") else None
    return ppo_config(out / "sft", reward, world, out / name, steps=steps, batch=plan.ppo_batch,
                      minibatch=plan.ppo_minibatch, lr=settings.rl_lr or plan.ppo_lr, kl_coef=settings.kl_coef,
                      save_every=max(1, steps // settings.curve_points), seed=seed, threads=settings.threads,
                      **options)


def train_method(method: str, world, out: Path, plan: Plan, settings: MethodSettings, seed: int,
                 n_rankings: int) -> dict:
    """Train one method from OUT/sft into OUT/METHOD, with checkpoints along the way; its wall time and episodes."""
    t0 = time.time()
    if method == "dpo":
        # DPO's default batch (16 rankings) and held-out share (10 %) give about this many steps: spaced checkpoints.
        steps = math.ceil(n_rankings * 0.9 / 16) * settings.dpo_epochs
        dpo(out / "sft", out / "rankings.jsonl", out / "dpo", beta=settings.dpo_beta, lr=settings.dpo_lr,
            epochs=settings.dpo_epochs, save_every=max(1, steps // settings.curve_points), seed=seed,
            threads=settings.threads)
        return {"wall_s": round(time.time() - t0, 1), "episodes": 0}
    cfg = rl_config(method, world, out, plan, settings, seed)  # `method`: a run name, e.g. ppo-fn
    quiet(train_ppo, cfg)
    return {"wall_s": round(time.time() - t0, 1), "episodes": cfg.ppo_steps * plan.ppo_batch}


def evaluate_methods(world, out: Path, settings: MethodSettings, n_prompts: int, seed: int, trained: dict,
                     sft_wall_s: float) -> dict:
    """One row per method ({gold, rm, kl, wall_s, episodes, win_vs_sft}), its gold-vs-KL curve, and the per-prompt
    gold of the samples behind each win rate (`golds`, for pooling over seeds)."""
    judge = Judge.load(out / "sft", out / "rm", world.prompts("heldout")[:n_prompts], world.response_limit, seed)
    reference = judge.measure(judge.sft)  # the SFT sample every method is compared with, prompt by prompt
    rows, curves, golds = {}, {}, {"reference": reference.totals}

    def row(gold, rm, kl, **extra) -> dict:
        return {"gold": mean(gold), "rm": mean(rm), "kl": mean(kl), **extra,
                "win_vs_sft": win_rate(gold, reference.totals, seed=seed)}

    if "sft" in settings.methods:
        again = judge.measure(judge.sft, offset=2)
        rows["sft"] = row(reference.totals, reference.rm, reference.kl, wall_s=sft_wall_s, episodes=0)
        rows["sft"]["win_vs_sft"] = win_rate(again.totals, reference.totals, seed=seed)
        curves["sft"], golds["sft"] = [point(reference, step=0)], again.totals
    if "bon" in settings.methods:
        t0 = time.time()
        n = settings.bon_n
        bon = judge.best_of_n(n)
        pick, gold = bon.chosen(n), bon.gold_of(n).tolist()
        rows["bon"] = row(gold, bon.rm[np.arange(len(judge.prompts)), pick], [bon_kl(n)], n=n,
                          wall_s=round(time.time() - t0, 1), episodes=n * len(judge.prompts))
        curves["bon"], golds["bon"] = bon.curve(range(1, n + 1)), gold
    for method in runs(settings):
        if method not in trained:
            continue
        final = judge.measure(load_policy(out / method)[0])
        points = [point(reference, step=0)]
        points += [point(judge.measure(load_policy(path)[0]), step=step)
                   for step, path in run_checkpoints(out / method)]
        points.append(point(final, step="final"))
        rows[method] = row(final.totals, final.rm, final.kl, **trained[method])
        curves[method], golds[method] = points, final.totals
    return {"methods": rows, "curves": curves, "golds": golds}


def table_rows(methods: dict) -> list[dict]:
    """The methods table of report.html (compare's, and the demo's with --methods): mean ± std over seeds."""
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
