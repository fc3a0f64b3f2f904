"""`rlhf compare --label-budget ARMS`: what a human label is worth, measured on the toy world (issue 34 item 5).

For each seed, one SFT policy (OUT/seed-s/sft); then, for each arm, `rlhf loop` (the library call) on the same world
from that same SFT policy, so that the arms of a seed differ only in which items people labeled:

    random            rlhf loop --select random
    uncertain         rlhf loop --select uncertain      (or disagree, mixed: any --select strategy)
    uncertain+judge   rlhf loop --select uncertain --judge LABEL_JUDGE --judge-confidence LABEL_JUDGE_CONFIDENCE

Each round of a loop trains its RM on every ranking so far and a fresh PPO run from SFT against it (the loop's
default), so round r's row is a point of the curve: (human labels so far, gold of that round's policy, the RM's
held-out accuracy, win rate vs SFT). Human labels are people's (here: simulated people's) rankings; a judge's
rankings (labeler `judge:NAME`) are counted apart, never as human labels.

The judge must be an AI labeler, not the truth: the default is the world's verifier (`world/verify.py`: exact
answer checks for the 5 rule-based families; no score, so people label, for the others). Its ranking orders only
correct over incorrect answers; two different wrong answers tie (no pair), so its confidence, the weakest pair's
σ(|Δs|), is 0.5 on most items: `--label-judge-confidence 0.5` lets it label every item it can check. The loop's
check still decides: the verifier is measured against people on the random share (agreement, Wilson interval) and
is used only when the interval's lower end reaches the threshold; a refused judge's arm runs on people's labels
alone, and its points say so (`judge_used`).

Two RM accuracies per round. The loop's held-out accuracy is unbiased within an arm: with --select, only items of
the uniformly drawn random share (half of it) are held out, never an actively chosen or judge-labeled one; with
--select random the RM holds out a uniform 10% of the prompts; both estimate the accuracy on uniformly drawn items
of that arm's own rounds, whose candidates its own policies sampled. To compare arms and rounds on the same
comparisons, each seed also has one test set (`fixed_test_set`: K SFT samples on the held-out prompts, ranked by the
simulated people once) on which every round's RM of every arm is measured (`rm_test_accuracy`).

Writes OUT/label_budget.json (every point, the mean curves with 95% intervals, the acceptance figure),
OUT/label_budget.txt (the table printed) and OUT/label_budget.png.

Resuming (--resume). A run is units: per seed its SFT and its test set, per arm × seed a loop whose rounds are
the loop's own (OUT/seed-s/ARM/round-r: state.json after each stage, PPO checkpoints, round.json), each round's
RM measured on the test set, and the arm's points. OUT/seed-s/done.json records the seed's finished units and
their results; it is rewritten whole after each unit into a temporary file renamed into place, so a kill leaves
the previous record or the next, never half of one. `--resume` with the same flags reuses every recorded unit,
continues an unfinished loop where it stopped (`rlhf loop` resumes inside a round) and redoes any other unfinished
unit from its start; the report is made from the records, the same as an uninterrupted run's but for the wall
times (`runs_wall_s`: the time of the invocation that finished the unit; `wall_s`: this invocation's). OUT's
config.toml and world.sha256 (its world's world.json) are the settings: a resume that changes any other than
RESUMABLE, or names a rebuilt world, is refused before anything is written. Seeds and arms may be added or left
out (each unit depends only on its seed, its arm and the settings, never on another unit): the report covers
the ones named, finished ones reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from pathlib import Path

from rlhfkit.config import load_toml, to_toml, upgrade_saved
from rlhfkit.errors import UserError
from rlhfkit.eval.commands import eval_rm
from rlhfkit.eval.configs import EvalRMConfig
from rlhfkit.eval.label_budget import efficiency, mean_curves, mean_interval, plot_label_budget
from rlhfkit.recipes import pipeline as stages
from rlhfkit.recipes.compare import run_compare
from rlhfkit.recipes.configs import PLANS, CompareConfig, LoopConfig, parse_arm
from rlhfkit.recipes.judges import check_judge
from rlhfkit.recipes.loop import run_loop
from rlhfkit.runtime.directory import config_changes, prepare_out_dir
from rlhfkit.storage import write_text_atomic
from rlhfkit.world.build import World

TEST_SEED = 10_000  # the test set's sampling and labeling seeds: seed + TEST_SEED, apart from every loop's seed + r
# Keys a --resume may change: bookkeeping, and which seeds and arms the report covers (units are independent).
RESUMABLE = ("out", "overwrite", "resume", "threads", "report_to", "seeds", "label_budget")
WORLD_DIGEST = "world.sha256"  # OUT's record of its world: the sha256 of the world's world.json


def compare(cfg: CompareConfig) -> dict:
    """`rlhf compare`: the methods (`compare.run_compare`), or with --label-budget this experiment. The CLI enters
    compare here because this module composes two commands (a loop per arm), and the commands themselves never
    import each other (tests/test_structure.py)."""
    if not cfg.label_budget:
        return run_compare(cfg)
    cfg.check()
    return run_label_budget(cfg)


def prompts_per_round(cfg: CompareConfig, preset: str) -> int:
    """--prompts-per-round, by default a fifth of the preset's labeled prompts (tiny: 300): --rounds 4 spends less
    than one `make demo`'s labels."""
    return cfg.prompts_per_round or max(1, PLANS[preset].label_prompts // 5)


def arm_config(cfg: CompareConfig, preset: str, arm: str, seed: int, out: Path, sft: Path) -> LoopConfig:
    """The `rlhf loop` settings of one (arm, seed): the compare's world and its preset's stage sizes, that seed's
    SFT, the arm's selection."""
    select, judged = parse_arm(arm)  # absolute paths: a resume that spells OUT or the world otherwise is the same loop
    return LoopConfig(out=str(out.resolve()), world=str(Path(cfg.world).resolve()), preset=preset,
                      sft=str(sft.resolve()), rounds=cfg.rounds,
                      prompts_per_round=prompts_per_round(cfg, preset), seed=seed, select=select,
                      judge=cfg.label_judge if judged else None, judge_confidence=cfg.label_judge_confidence,
                      judge_threshold=cfg.label_judge_threshold,
                      kl_coef=cfg.kl_coef, ppo_steps=cfg.ppo_steps, threads=cfg.threads)


def fixed_test_set(world, sft: Path, out: Path, plan, seed: int) -> Path:
    """One test set per seed, the same for every arm and round: K SFT samples on the held-out prompts (never
    labeled or trained on by a loop), ranked by the simulated people. The loop's own held-out items are its
    rounds' random share, sampled by that arm's policies: each arm and round is measured on other items, which
    get harder as the policies improve; this set compares every RM on the same comparisons."""
    candidates = out / "test-candidates.jsonl"
    stages.sample([sft], world.path / "prompts" / "heldout.jsonl", candidates, k=plan.k,
                  temperatures=plan.temperatures, limit=plan.eval_prompts, max_new_tokens=world.response_limit,
                  seed=seed + TEST_SEED)
    stages.simulate(world.path, candidates, out / "test-rankings.jsonl", labelers=plan.labelers,
                    per_item=plan.per_item, seed=seed + TEST_SEED)
    return out / "test-rankings.jsonl"


def rm_accuracy_on(rm: Path, data: Path, threads: int) -> float:
    return stages.quiet(eval_rm, EvalRMConfig(rm=str(rm), data=str(data), threads=threads))["heldout_accuracy"]


def points_of(arm: str, seed: int, rows: list[dict]) -> list[dict]:
    """One point per round of a loop's report: labels spent so far and what they bought."""
    out = []
    for row in rows:
        judge = row.get("judge")
        out.append({"arm": arm, "seed": seed, "round": row["round"],
                    "human_labels": row.get("human_rankings", row["rankings"]),
                    "judge_labels": row.get("judge_rankings", 0), "gold": row["gold"], "gold_sft": row["gold_sft"],
                    "rm_accuracy": row["rm_heldout_accuracy"], "rm_heldout_pairs": row.get("rm_heldout_pairs"),
                    "win_vs_sft": row["win_vs_sft"]["rate"], "kl": row["kl"],
                    "judge_used": None if judge is None else bool(judge.get("used")),
                    "judge_agreement": None if judge is None else judge.get("rate"),
                    "wall_s": row.get("wall_s")})
    return out


class Record:
    """OUT/seed-s/done.json: the seed's finished units and what they gave, written whole into a temporary file
    renamed into place after each unit (a kill leaves the previous record or the next one)."""

    def __init__(self, path: Path):
        self.path, self.data = path, {}
        if path.is_file():
            try:
                self.data = json.loads(path.read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise UserError(f"{path}: unreadable record of finished units ({exc}); remove it to redo the "
                                "seed's units") from None
            if not isinstance(self.data, dict):
                raise UserError(f"{path}: not a record of finished units (expected a JSON object)")

    def get(self, unit: str):
        return self.data.get(unit)

    def put(self, unit: str, value) -> None:
        self.data[unit] = value
        write_text_atomic(self.path, json.dumps(self.data, indent=2) + "\n")


def world_digest(world: World) -> str:
    return hashlib.sha256((world.path / "world.json").read_bytes()).hexdigest()


def open_out(cfg: CompareConfig, digest: str) -> tuple[Path, bool]:
    """OUT and whether a run is resumed in it: without --resume (or into an empty OUT) a fresh, empty directory
    (refused when it holds files, unless --overwrite); with --resume, the run there, refused with one line when
    its settings (config.toml, world.sha256) are not these. Writes nothing before the checks pass."""
    out = Path(cfg.out)
    if not (cfg.resume and out.is_dir() and any(out.iterdir())):
        return stages.fresh_out_dir(out, cfg.overwrite), False
    prepare_out_dir(out, overwrite=False, resume=True)  # refused without a config.toml
    saved = upgrade_saved(CompareConfig, load_toml(out / "config.toml"))
    if not saved.get("label_budget"):
        raise UserError(f"{out}: cannot resume: not a run of `rlhf compare --label-budget` (its config.toml has no "
                        "label_budget)")
    shown = config_changes(saved, cfg, RESUMABLE)
    if shown:
        raise UserError(f"{out}: cannot resume with other settings: {shown} (only --seeds, --label-budget and "
                        "--threads may change; resume with the run's flags or start another --out)")
    recorded = out / WORLD_DIGEST
    if recorded.is_file() and recorded.read_text(encoding="utf-8").strip() != digest:
        raise UserError(f"{cfg.world}: cannot resume {out}: this world's world.json is not the one the run used "
                        f"({recorded}); the world was rebuilt: start another --out")
    return out, True


def run_label_budget(cfg: CompareConfig) -> dict:
    world = World(cfg.world)
    preset = world.meta.get("preset")
    if preset not in PLANS:
        raise UserError(f"{cfg.world}: world preset {preset!r} has no stage sizes (one of {', '.join(PLANS)})")
    plan = PLANS[preset]
    if any(parse_arm(a)[1] for a in cfg.label_budget):
        check_judge(cfg.label_judge)
    digest = world_digest(world)
    out, resumed = open_out(cfg, digest)
    write_text_atomic(out / "config.toml", to_toml(cfg))
    write_text_atomic(out / WORLD_DIGEST, digest + "\n")
    say = stages.Progress()
    if resumed:
        say(f"resuming {out}: finished units are reused, unfinished ones redone or continued")
    points, walls = [], []
    for seed in cfg.seeds:
        record = Record(out / f"seed-{seed}" / "done.json")
        sft = out / f"seed-{seed}" / "sft"
        if record.get("sft") is None:
            say(f"seed {seed}: SFT on the world's demonstrations (shared by every arm)")
            stages.sft(world, sft, epochs=plan.sft_epochs, lr=plan.sft_lr, seed=seed, threads=cfg.threads)
            record.put("sft", str(sft.name))
        if record.get("test set") is None:
            record.put("test set", str(fixed_test_set(world, sft, out / f"seed-{seed}", plan, seed).name))
        test = out / f"seed-{seed}" / record.get("test set")
        for arm in cfg.label_budget:
            points.append(run_arm(cfg, preset, arm, seed, out, sft, test, record, say))
            walls.append({"arm": arm, "seed": seed, "wall_s": record.get(f"arm {arm}")["wall_s"]})
    return write_report(out, cfg, preset, [p for arm in points for p in arm], walls, time.time() - say.start)


def run_arm(cfg: CompareConfig, preset: str, arm: str, seed: int, out: Path, sft: Path, test: Path, record: Record,
            say) -> list[dict]:
    """One arm × seed: its loop (continued where it stopped), each round's RM on the seed's test set, its points;
    recorded once all are there, and then reused."""
    done = record.get(f"arm {arm}")
    if done is not None:
        say(f"seed {seed}: arm {arm}: finished earlier, reused")
        return done["points"]
    t0, where = time.time(), out / f"seed-{seed}" / arm.replace("+", "-")
    going_on = (where / "config.toml").is_file()
    say(f"seed {seed}: arm {arm}: rlhf loop, {cfg.rounds} rounds{', continuing' if going_on else ''} (its progress: "
        f"{where}.log)")
    with open(f"{where}.log", "a" if going_on else "w", encoding="utf-8") as log, contextlib.redirect_stdout(log):
        report = run_loop(arm_config(cfg, preset, arm, seed, where, sft))
    new = points_of(arm, seed, report["rounds"])
    for p in new:  # every round's RM on the seed's common test set
        unit = f"arm {arm} round {p['round']} rm_test_accuracy"
        if record.get(unit) is None:
            record.put(unit, rm_accuracy_on(where / f"round-{p['round']}" / "rm", test, cfg.threads))
        p["rm_test_accuracy"] = record.get(unit)
    record.put(f"arm {arm}", {"points": new, "wall_s": round(time.time() - t0, 1)})
    last = new[-1]
    say(f"seed {seed}: arm {arm}: {last['human_labels']} human labels, {last['judge_labels']} judge's; "
        f"gold {last['gold']:.3f}, RM accuracy {_f(last['rm_test_accuracy'])} on the test set, "
        f"{_f(last['rm_accuracy'])} on the loop's held-out  [{record.get(f'arm {arm}')['wall_s']:.0f}s]")
    return new


def write_report(out: Path, cfg: CompareConfig, preset: str, points: list[dict], walls: list[dict],
                 wall_s: float) -> dict:
    curves = mean_curves(points)
    curves = {arm: curves[arm] for arm in cfg.label_budget}  # the order given
    sft_gold = mean_interval([p["gold_sft"] for p in points if p["round"] == 1 and p["arm"] == cfg.label_budget[0]])
    reach = efficiency(curves, sft_gold["mean"]) if "random" in curves else {}
    report = {"world": str(cfg.world), "preset": preset, "seeds": cfg.seeds, "arms": cfg.label_budget,
              "rounds": cfg.rounds, "prompts_per_round": prompts_per_round(cfg, preset),
              "judge": cfg.label_judge, "judge_confidence": cfg.label_judge_confidence,
              "judge_threshold": cfg.label_judge_threshold, "sft_gold": sft_gold,
              "points": points, "curves": curves, "reach_random_final_gold": reach, "runs_wall_s": walls,
              "wall_s": round(wall_s, 1)}
    write_text_atomic(out / "label_budget.json", json.dumps(report, indent=2) + "\n")
    plot_label_budget(curves, sft_gold, out / "label_budget.png")
    text = table_text(report)
    write_text_atomic(out / "label_budget.txt", text + "\n")
    print("\n" + text)
    print(f"\nreport: {out / 'label_budget.json'}, {out / 'label_budget.txt'}, {out / 'label_budget.png'}  "
          f"[{wall_s:.0f}s]")
    return report


def _f(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _ci(m: dict | None, digits: int = 3) -> str:
    if m is None:
        return "–"
    if m["n"] == 1:
        return _f(m["mean"], digits)
    return f"{m['mean']:.{digits}f} ({m['low']:.{digits}f}–{m['high']:.{digits}f})"


def table_text(report: dict) -> str:
    """The table: per arm and round, means over seeds with 95% t intervals; then the acceptance figure."""
    n = len(report["seeds"])
    lines = [f"label budget, {report['preset']} world, seeds {','.join(map(str, report['seeds']))}: "
             f"mean{' (95% t interval)' if n > 1 else ''} over seeds; SFT gold {_ci(report['sft_gold'])}",
             "",
             "| arm | round | human labels | judge labels | gold | RM accuracy (test set) | RM accuracy (loop's "
             "held-out) | win vs SFT | judge used |",
             "|---|---|---|---|---|---|---|---|---|"]
    for arm, rows in report["curves"].items():
        for r in rows:
            used = [p["judge_used"] for p in report["points"] if p["arm"] == arm and p["round"] == r["round"]]
            judge = "–" if all(u is None for u in used) else f"{sum(bool(u) for u in used)}/{len(used)} seeds"
            lines.append(f"| {arm} | {r['round']} | {r['human_labels']['mean']:.0f} | {r['judge_labels']['mean']:.0f} "
                         f"| {_ci(r['gold'])} | {_ci(r.get('rm_test_accuracy'))} | {_ci(r['rm_accuracy'])} "
                         f"| {_ci(r['win_vs_sft'])} | {judge} |")
    for arm, e in report["reach_random_final_gold"].items():
        if e["labels_needed"] is None:
            lines.append(f"{arm}: does not reach random's final mean gold {e['target_gold']:.3f} "
                         f"(random: {e['baseline_labels']:.0f} human labels)")
        else:
            lines.append(f"{arm}: reaches random's final mean gold {e['target_gold']:.3f} with "
                         f"{e['labels_needed']:.0f} human labels, {e['ratio']:.2f} x random's "
                         f"{e['baseline_labels']:.0f}" + (" (at most half)" if e["at_most_half"] else ""))
    return "\n".join(lines)
