"""`rlhf loop`: the online RLHF loop of summarize-from-feedback (Stiennon et al. 2020, §3.1 and Fig. 2).

    round r:  1. sample K outputs per prompt from the current policy and the initial (SFT) policy, at several
                 temperatures
              2. labels: the toy world's simulated labelers, or — with --labels-dir — the labeling app's export
                 `LABELS/round-r.jsonl` (the loop writes the candidates and stops until that file exists)
              3. retrain the reward model from the SFT model on *all* comparisons so far
              4. PPO against the new RM, from the SFT policy (or, with --continue-policy, from the current one);
                 the KL penalty stays anchored to the SFT policy
              5. evaluate on held-out prompts by the gold reward

Every finished round leaves `OUT/round-r/round.json`; running the command again continues after the last one.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from rlhfkit import pipeline as stages
from rlhfkit.config import check_at_least, option, required
from rlhfkit.data.jsonl import read_jsonl, write_jsonl
from rlhfkit.data.pairs import read_preference_records
from rlhfkit.data.readers import DataOptions
from rlhfkit.data.schemas import ranking_record
from rlhfkit.engines import check_engine
from rlhfkit.errors import UserError
from rlhfkit.eval import report as R
from rlhfkit.eval.policy import load_policy
from rlhfkit.eval.stats import win_rate
from rlhfkit.pipeline import PLANS, check_preset
from rlhfkit.world.build import World, WorldConfig, build_world


@dataclass
class LoopConfig(DataOptions):
    out: str | None = required("loop directory (one folder per round, report.json, report.html)")
    rounds: int = option(3, "rounds of sample → label → RM → PPO")
    world: str | None = option(None, "toy world directory (default: build the preset's world into OUT/world)")
    preset: str = option("tiny", "world and stage sizes when the loop builds them (micro, tiny, small)")
    sft: str | None = option(None, "initial policy (default: SFT on the world's demonstrations into OUT/sft)")
    prompts_per_round: int | None = option(None, "prompts sampled for labeling each round (default: the preset's)")
    k: int = option(4, "outputs per prompt")
    temperatures: list[float] = option([0.7, 1.0], "sampling temperatures, comma-separated")
    labelers: int = option(5, "simulated labelers in the pool")
    per_item: int = option(2, "simulated labelers per item")
    labels_dir: str | None = option(None, "take round r's rankings from LABELS_DIR/round-r.jsonl (an export of "
                                    "`rlhf label export --format rankings`) instead of simulating them")
    ppo_steps: int | None = option(None, "PPO iterations per round (default: the preset's)")
    kl_coef: float = option(0.05, "β of the KL penalty to the SFT policy")
    continue_policy: bool = option(False, "each round's PPO continues from the last round's policy (default: a "
                                   "fresh PPO run from the SFT policy against each new RM, so rounds differ only "
                                   "in their reward model's data)")
    seed: int = option(0, "random seed")
    threads: int = option(0, "torch CPU threads (0: torch's default)")
    rollout_engine: str = option("hf", "what samples the candidates and PPO's rollouts: hf, hf-static or vllm "
                                 "(README 'Rollout engines'; the evaluation samples with hf)")

    def check(self) -> None:
        check_preset(self.preset)
        check_engine(self.rollout_engine)
        if self.rounds < 1 or self.k < 2:
            raise UserError("config keys: need rounds >= 1 and k >= 2")
        if not self.temperatures or any(t <= 0 for t in self.temperatures):
            raise UserError("config key 'temperatures' must be one or more values > 0")
        if self.labelers < 1 or not 1 <= self.per_item <= self.labelers:
            raise UserError("config keys: need labelers >= 1 and 1 <= per_item <= labelers")
        if self.kl_coef < 0:
            raise UserError("config key 'kl_coef' must be >= 0")
        check_at_least(self, 1, "prompts_per_round", "ppo_steps")


def _round_dir(out: Path, r: int) -> Path:
    return out / f"round-{r}"


def labels_for_round(cfg: LoopConfig, r: int, world_dir: Path, candidates: Path, out: Path) -> bool:
    """Write round r's rankings to `out`; False when they must come from the labeling app and are not there yet."""
    if cfg.labels_dir is None:
        stages.simulate(world_dir, candidates, out, labelers=cfg.labelers, per_item=cfg.per_item, seed=cfg.seed + r)
        return True
    export = Path(cfg.labels_dir) / f"round-{r}.jsonl"
    if not export.exists():
        print(f"round {r}: waiting for labels. Put the candidates into the labeling app and export the rankings:\n"
              f"  rlhf label import --db labels.db --project round-{r} --mode rank --overlap 2 {candidates}\n"
              f"  rlhf label export --db labels.db --project round-{r} --format rankings --out {export}\n"
              f"then run the same `rlhf loop` command again.")
        return False
    kind, rankings = read_preference_records(export, cfg, command="loop")
    if kind != "rankings":
        raise UserError(f"{export}: holds pairs; the loop needs rankings (`rlhf label export --format rankings`)")
    write_jsonl(out, rankings)
    return True


def run_loop(cfg: LoopConfig) -> dict:
    cfg.check()
    plan = PLANS[cfg.preset]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    say = stages.Progress()
    world_dir = Path(cfg.world) if cfg.world else out / "world"
    if not (world_dir / "world.json").exists():
        if cfg.world:
            raise UserError(f"{world_dir}: not a world directory (no world.json; run `rlhf world build`)")
        say(f"world: building the '{cfg.preset}' toy world")
        stages.quiet(build_world, WorldConfig(out=str(world_dir), preset=cfg.preset, seed=cfg.seed, overwrite=True))
    world = World(world_dir)
    sft = Path(cfg.sft) if cfg.sft else out / "sft"
    if not (sft / "config.json").exists():
        if cfg.sft:
            raise UserError(f"{sft}: no such policy directory")
        say("SFT on the world's demonstrations")
        stages.sft(world, sft, epochs=plan.sft_epochs, lr=plan.sft_lr, seed=cfg.seed, threads=cfg.threads)

    n_prompts = cfg.prompts_per_round or plan.label_prompts
    prompts = world.prompts("heldout")[:plan.eval_prompts]
    rows, policy = [], sft
    for r in range(1, cfg.rounds + 1):
        rd = _round_dir(out, r)
        if (rd / "round.json").exists():  # finished earlier
            rows.append(json.loads((rd / "round.json").read_text()))
            policy = rd / "ppo"
            continue
        rd.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        sources = [policy] if policy == sft else [policy, sft]
        say(f"round {r}: 1. sample K={cfg.k} for {n_prompts} prompts from {', '.join(p.name for p in sources)}")
        stages.sample(sources, world.train_prompts_path, rd / "candidates.jsonl", k=cfg.k,
                      temperatures=cfg.temperatures, limit=n_prompts, max_new_tokens=world.response_limit,
                      seed=cfg.seed + r, offset=(r - 1) * n_prompts, id_prefix=f"r{r}-",
                      rollout_engine=cfg.rollout_engine)
        say(f"round {r}: 2. labels")
        if not labels_for_round(cfg, r, world_dir, rd / "candidates.jsonl", rd / "rankings.jsonl"):
            break
        all_rankings = [rec for k in range(1, r + 1) for rec in read_jsonl(_round_dir(out, k) / "rankings.jsonl",
                                                                           ranking_record)]
        write_jsonl(rd / "all-rankings.jsonl", all_rankings)
        say(f"round {r}: 3. reward model on all {len(all_rankings)} rankings so far")
        rm = stages.reward_model(sft, rd / "all-rankings.jsonl", rd / "rm", world, lr=plan.rm_lr,
                                 epochs=plan.rm_epochs, seed=cfg.seed, threads=cfg.threads)
        steps = cfg.ppo_steps or plan.ppo_steps
        start = policy if cfg.continue_policy else sft
        say(f"round {r}: 4. PPO from {start.name}, {steps} iterations (KL to the SFT policy)")
        stages.ppo(start, rd / "rm", world, rd / "ppo", steps=steps, batch=plan.ppo_batch,
                   minibatch=plan.ppo_minibatch, lr=plan.ppo_lr, kl_coef=cfg.kl_coef, save_every=0,
                   seed=cfg.seed + r, reference=sft, threads=cfg.threads, rollout_engine=cfg.rollout_engine)
        policy = rd / "ppo"
        say(f"round {r}: 5. evaluation on {len(prompts)} held-out prompts")
        judge = stages.Judge.load(sft, rd / "rm", prompts, world.response_limit, cfg.seed)
        base = judge.measure(judge.sft)
        now = judge.measure(load_policy(policy)[0])
        row = {"round": r, "rankings": len(all_rankings), "rm_heldout_accuracy": rm.get("heldout_accuracy"),
               "rm_noise_ceiling": rm.get("noise_ceiling"), "gold": now.summary()["gold"],
               "gold_sft": base.summary()["gold"], "win_vs_sft": win_rate(now.totals, base.totals, seed=cfg.seed),
               "kl": now.summary()["kl"], "labeler_agreement": stages.agreement(rd / "rankings.jsonl"),
               "wall_s": round(time.time() - t0, 1)}
        (rd / "round.json").write_text(json.dumps(row, indent=2) + "\n", encoding="utf-8")
        say(f"round {r}: gold {row['gold']:.3f} (SFT {row['gold_sft']:.3f}), win rate vs SFT "
            f"{row['win_vs_sft']['rate']:.3f}, KL {row['kl']:.2f}")
        rows.append(row)
    return write_loop_report(out, rows)


def write_loop_report(out: Path, rows: list[dict]) -> dict:
    report = {"rounds": rows}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    table = [{"round": r["round"], "rankings": r["rankings"], "RM accuracy": r["rm_heldout_accuracy"],
              "noise ceiling": r["rm_noise_ceiling"], "gold": r["gold"], "gold SFT": r["gold_sft"],
              "win vs SFT": r["win_vs_sft"]["rate"], "KL": r["kl"]} for r in rows]
    images = [R.plot_rounds(rows, out / "rounds.png")] if rows else []
    R.write_html(out / "report.html", "rlhfkit online loop", [("One row per round (held-out prompts)", table)],
                 images, report)
    if rows:
        print("\n  round  rankings  RM acc  ceiling   gold  win vs SFT    KL")
        for t in table:
            print(f"  {t['round']:>5}  {t['rankings']:>8}  {_num(t['RM accuracy']):>6}  {_num(t['noise ceiling']):>7}  "
                  f"{t['gold']:>5.3f}  {t['win vs SFT']:>10.3f}  {t['KL']:>4.2f}")
    print(f"\nreport: {out / 'report.json'}, {out / 'report.html'}")
    return report


def _num(value) -> str:
    return "–" if value is None else f"{value:.3f}"
