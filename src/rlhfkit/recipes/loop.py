"""`rlhf loop`: the online RLHF loop of summarize-from-feedback (Stiennon et al. 2020, §3.1 and Fig. 2).

    round r:  1. sample K outputs per prompt from the current policy and the initial (SFT) policy, at several
                 temperatures
              2. labels: the toy world's simulated labelers, or people in the labeling app (--labels app: the
                 loop adds the round's items to its project and waits for them; --labels files: an export put
                 at LABELS_DIR/round-r.jsonl), each export checked against the round's candidates
                 (loop_labels.py)
              3. retrain the reward model from the SFT model on *all* comparisons so far
              4. PPO against the new RM, from the SFT policy (or, with --continue-policy, from the current one);
                 the KL penalty stays anchored to the SFT policy
              5. evaluate on held-out prompts by the gold reward

Running the same command again goes on where the last run stopped, inside a round too: OUT/round-r/state.json
records the round's finished stages (samples, labels with their export's hash, RM, PPO) and the settings the
round started with, and PPO writes checkpoints (--checkpoint-every), so a loop killed during PPO continues from
the last one. A waiting round is never sampled again. OUT/config.toml is the loop's config (`rlhf loop --config
OUT/config.toml` reruns it); a rerun that changes what finished rounds computed is refused with the difference,
and the keys of RERUN_CHANGES apply from the next round that has not started. A finished round is
OUT/round-r/round.json.
"""

from __future__ import annotations

import json
import math
import shutil
import time
import tomllib
from dataclasses import asdict, replace
from pathlib import Path

from rlhfkit.config import load_toml, to_toml
from rlhfkit.data.jsonl import read_jsonl, write_jsonl
from rlhfkit.data.prelabels import is_judge
from rlhfkit.data.schemas import candidate_record, ranking_record
from rlhfkit.errors import UserError, Waiting
from rlhfkit.eval import report as R
from rlhfkit.eval.policy import load_policy
from rlhfkit.recipes import loop_labels as labels_io
from rlhfkit.recipes import loop_select as chooser
from rlhfkit.recipes import pipeline as stages
from rlhfkit.recipes.configs import PLANS, LoopConfig
from rlhfkit.recipes.judges import check_judge
from rlhfkit.runtime.trackers import reporting
from rlhfkit.stats import win_rate
from rlhfkit.storage import write_text_atomic
from rlhfkit.world.build import World, build_world
from rlhfkit.world.configs import WorldConfig

# Keys a rerun may change at any time: how the loop runs and waits, not what a round computes.
RERUN_ANY_TIME = ("rounds", "threads", "wait", "poll_seconds", "min_coverage", "allow_partial", "redo_round",
                  "invite", "public_url", "checkpoint_every", "report_to", "judge_draft")
# Keys a rerun may change from the next round on: a round keeps the settings it started with (its state.json).
RERUN_CHANGES = ("prompts_per_round", "k", "temperatures", "ppo_steps", "kl_coef", "continue_policy",
                 "rollout_engine", "select", "random_share", "pool_factor", "ensemble", "judge", "judge_threshold",
                 "judge_confidence")  # the engine samples the same distribution: any round may change it


def saved_config(cfg: LoopConfig) -> str:
    """config.toml of the loop: `--redo-round` is an action of one run, never repeated by a rerun."""
    return to_toml(replace(cfg, redo_round=None))


def check_rerun(out: Path, cfg: LoopConfig) -> list[str]:
    """Refuse a rerun whose flags change what the loop computed (one line with the difference); the keys of
    RERUN_CHANGES that changed (they apply from the next round that has not started)."""
    path = out / "config.toml"
    if not path.is_file():
        return []
    saved, now = load_toml(path), tomllib.loads(saved_config(cfg))
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k) and k not in RERUN_ANY_TIME)
    refused = [k for k in changed if k not in RERUN_CHANGES]
    if refused:
        shown = ", ".join(f"{k} ({saved.get(k)!r} -> {now.get(k)!r})" for k in refused)
        raise UserError(f"{path}: this loop ran with other settings: {shown}; rerun with its own (`rlhf loop "
                        f"--config {path}`) or start another --out")
    return [f"{k} ({saved.get(k)!r} -> {now.get(k)!r})" for k in changed]


# -------------------------------------------------------------------------------------------- rounds

class RoundState:
    """OUT/round-r/state.json: the settings the round started with and its finished stages, written atomically
    after each stage (a kill leaves the previous version or the new one)."""

    def __init__(self, rd: Path):
        self.path = rd / "state.json"
        self.data = json.loads(self.path.read_text(encoding="utf-8")) if self.path.exists() else {"stages": {}}

    def done(self, stage: str) -> bool:
        return stage in self.data["stages"]

    def get(self, stage: str) -> dict:
        return self.data["stages"][stage]

    def mark(self, stage: str, info: dict | None = None) -> None:
        self.data["stages"][stage] = info or {}
        self.save()

    def forget(self, *names: str) -> None:
        for name in names:
            self.data["stages"].pop(name, None)
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.path, json.dumps(self.data, indent=2) + "\n")


def _round_dir(out: Path, r: int) -> Path:
    return out / f"round-{r}"


def round_settings(cfg: LoopConfig, plan, previous: dict | None) -> dict:
    """What round r samples and trains with, fixed when it starts: the prompts after the previous round's."""
    prompts = cfg.prompts_per_round or plan.label_prompts
    offset = previous["offset"] + previous.get("pool", previous["prompts"]) if previous else 0
    settings = {"prompts": prompts, "offset": offset, "k": cfg.k, "temperatures": list(cfg.temperatures),
                "ppo_steps": cfg.ppo_steps or plan.ppo_steps, "kl_coef": cfg.kl_coef,
                "continue_policy": cfg.continue_policy}
    if cfg.select != "random":  # --select: a pool of prompts × candidates to choose from (loop_select.py)
        settings |= {"select": cfg.select, "random_share": cfg.random_share, "pool": prompts * cfg.pool_factor,
                     "pool_k": cfg.k * cfg.pool_factor, "ensemble": cfg.ensemble, "judge": cfg.judge,
                     "judge_threshold": cfg.judge_threshold, "judge_confidence": cfg.judge_confidence}
    return settings


def redo_from(out: Path, n: int, rounds: int) -> None:
    """--redo-round N: round N reads its labels again; it and every later round retrain their RM and PPO."""
    for r in range(n, rounds + 1):
        rd = _round_dir(out, r)
        if not rd.exists():
            break
        RoundState(rd).forget(*(["labels"] if r == n else []), "rm", "ppo")
        for name in ("round.json", "rm", "ppo") + (("rankings.jsonl",) if r == n else ()):
            path = rd / name
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


class Labels:
    """Round r's rankings from the configured source (loop_labels.py), checked, with their hash."""

    def __init__(self, cfg: LoopConfig, out: Path, world_dir: Path, rerun: str):
        self.cfg, self.out, self.world_dir, self.rerun = cfg, out, world_dir, rerun
        self.app = labels_io.LabelingApp(cfg.db or str(out / "labels.db"), cfg.project) if cfg.source == "app" else None

    def export_path(self, r: int) -> Path:
        if self.cfg.source == "files":
            return Path(self.cfg.labels_dir) / f"round-{r}.jsonl"
        return _round_dir(self.out, r) / "export.jsonl"

    def offer(self, r: int, candidates: Path, state: RoundState) -> None:
        """Make round r's items labelable: add them to the app's project (printing the runbook when the loop
        creates it), or print what to do with the file."""
        if self.app is None or state.done("offered"):
            return
        cfg, app = self.cfg, self.app
        new_project = not app.exists()
        added = app.add_round(candidates, cfg.per_item)
        items = len(read_jsonl(candidates, candidate_record))
        known = app.people()
        people = [(n, "labeler") for n in cfg.invite] + [(labels_io.ADMIN, "admin")]
        links = {name: f"{cfg.public_url.rstrip('/')}/invite/{app.invite(name, role)}"
                 for name, role in people if name not in known}
        need = math.ceil(cfg.min_coverage * items - 1e-9)
        if new_project:
            print(labels_io.app_runbook(app, items=items, overlap=cfg.per_item, need=need, links=links,
                                public_url=cfg.public_url, rerun=self.rerun), flush=True)
        else:
            print(f"round {r}: {added} new items in project {cfg.project!r} of {app.db}; labelers keep their links "
                  "and find them in the same queue (reload the page)", flush=True)
            for name, link in links.items():
                print(f"  new invite: {name}: {link}", flush=True)
        state.mark("offered", {"items": items})

    def rankings(self, r: int, candidates: Path, state: RoundState) -> tuple[list[dict], dict]:
        """Round r's checked rankings and what state.json records of them; `Waiting` until they exist."""
        cfg = self.cfg
        if cfg.source == "simulated":
            rankings = stages.simulate(self.world_dir, candidates, _round_dir(self.out, r) / "rankings.jsonl",
                                       labelers=cfg.labelers, per_item=cfg.per_item, seed=cfg.seed + r)
            return rankings, {"source": "simulated"}
        items = read_jsonl(candidates, candidate_record)
        export = self.export_path(r)
        if self.app is not None:
            ids = {c["id"] for c in items}
            need = math.ceil(cfg.min_coverage * len(ids) - 1e-9)
            labels_io.wait_for(self.app, r, ids, cfg.per_item, need, wait=cfg.wait, poll_seconds=cfg.poll_seconds,
                       rerun=self.rerun)
            self.app.export(ids, export)
        elif not export.exists():
            print(labels_io.files_runbook(candidates, export, r, overlap=cfg.per_item, rerun=self.rerun), flush=True)
            raise Waiting(f"round {r}: no {export} yet")
        rankings, cov, digest = labels_io.check_export(export, items, r, overlap=cfg.per_item,
                                               min_coverage=cfg.min_coverage, allow_partial=cfg.allow_partial)
        return rankings, {"source": str(export), "sha256": digest, "coverage": asdict(cov)}

    def changed(self, r: int, state: RoundState) -> str | None:
        """A note when round r's export is no longer the one it trained on."""
        info = state.get("labels") if state.done("labels") else {}
        if "sha256" not in info:
            return None
        if self.app is not None:
            ids = {c["id"] for c in read_jsonl(_round_dir(self.out, r) / "candidates.jsonl", candidate_record)}
            records = self.app.records(ids)
            now, count = labels_io.sha256(labels_io.jsonl_bytes(records)), len(records)
        else:
            path = self.export_path(r)
            now = labels_io.file_digest(path)
            count = len(path.read_text(encoding="utf-8").splitlines()) if now else 0
        if now == info["sha256"]:
            return None
        return (f"round {r}: its labels changed since the round trained on them ({info['coverage']['rankings']} "
                f"rankings then, {count} now); rerun with --redo-round {r} to retrain from round {r} on")


def run_loop(cfg: LoopConfig) -> dict:
    with reporting(cfg.report_to):  # the trainers it runs report there too
        return _run_loop(cfg)


def _run_loop(cfg: LoopConfig) -> dict:
    cfg.check()
    cfg.preset = stages.preset_of(cfg.preset, cfg.world)
    plan = PLANS[cfg.preset]
    out = Path(cfg.out)
    later = check_rerun(out, cfg)
    world_dir = Path(cfg.world) if cfg.world else out / "world"
    sft = Path(cfg.sft) if cfg.sft else out / "sft"
    if cfg.world and not (world_dir / "world.json").exists():  # refused before OUT or its config.toml is written
        raise UserError(f"{world_dir}: not a world directory (no world.json; run `rlhf world build`)")
    if cfg.sft and not (sft / "config.json").exists():
        raise UserError(f"{sft}: no such policy directory")
    if cfg.judge:
        check_judge(cfg.judge)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "config.toml", saved_config(cfg))
    rerun = f"rlhf loop --config {out / 'config.toml'}"
    say = stages.Progress()
    if later:
        say(f"changed since the last run: {', '.join(later)}: applies from the next round that has not started")
    if not (world_dir / "world.json").exists():
        say(f"world: building the '{cfg.preset}' toy world")
        stages.quiet(build_world, WorldConfig(out=str(world_dir), preset=cfg.preset, seed=cfg.seed, overwrite=True))
    world = World(world_dir)
    if not (sft / "config.json").exists():
        say("SFT on the world's demonstrations")
        stages.sft(world, sft, epochs=plan.sft_epochs, lr=plan.sft_lr, seed=cfg.seed, threads=cfg.threads)
    if cfg.redo_round:
        say(f"redo: round {cfg.redo_round} reads its labels again; it and later rounds retrain their RM and PPO")
        redo_from(out, cfg.redo_round, cfg.rounds)

    labels = Labels(cfg, out, world_dir, rerun)
    prompts = world.prompts("heldout")[:plan.eval_prompts]
    rows, policy, previous = [], sft, None
    for r in range(1, cfg.rounds + 1):
        rd, state = _round_dir(out, r), RoundState(_round_dir(out, r))
        if (rd / "round.json").exists():  # finished earlier
            if (note := labels.changed(r, state)) is not None:
                say(note)
            rows.append(json.loads((rd / "round.json").read_text()))
            # a round finished before state.json existed sampled (r-1)·prompts_per_round prompts before its own
            policy, previous = rd / "ppo", state.data.get("settings") or round_settings(cfg, plan, previous)
            continue
        t0 = time.time()
        if "settings" not in state.data:
            state.data["settings"] = round_settings(cfg, plan, previous)
            state.save()
        s = previous = state.data["settings"]
        if not state.done("samples"):
            sources = [policy] if policy == sft else [policy, sft]
            pool, k = (s["pool"], s["pool_k"]) if "select" in s else (s["prompts"], s["k"])
            say(f"round {r}: 1. sample K={k} for {pool} prompts from {', '.join(p.name for p in sources)}")
            stages.sample(sources, world.train_prompts_path, rd / ("pool.jsonl" if "select" in s else
                                                                   "candidates.jsonl"),
                          k=k, temperatures=s["temperatures"], limit=pool, max_new_tokens=world.response_limit,
                          seed=cfg.seed + r, offset=s["offset"], id_prefix=f"r{r}-",
                          rollout_engine=cfg.rollout_engine)
            if "select" in s:
                say(f"round {r}:    --select {s['select']}: {s['prompts']} prompts x {s['k']} candidates of them, "
                    f"{s['random_share']:.0%} at random")
                so_far = [rec for q in range(1, r) for rec in read_jsonl(_round_dir(out, q) / "rankings.jsonl",
                                                                         ranking_record)]
                chooser.choose(rd / "pool.jsonl", rd / "candidates.jsonl", n=s["prompts"], k=s["k"],
                               strategy=s["select"], random_share=s["random_share"], seed=cfg.seed + r,
                               rm=_round_dir(out, r - 1) / "rm" if r > 1 else None, tokenizer_dir=sft,
                               rankings=so_far, heads=s["ensemble"], say=say)
            state.mark("samples", {"sources": [str(p) for p in sources]})
        people = rd / "candidates.jsonl"
        if s.get("judge"):
            people = rd / "people.jsonl"
            if not state.done("judge"):
                info = chooser.prelabel(rd / "candidates.jsonl", s["judge"], sft, s["judge_confidence"],
                                        rd / "judge.jsonl", people)
                say(f"round {r}:    judge {info['judge']} ranked {info['items']} items; {info['to_people']} go to "
                    "people (the random share and those it is unsure of)")
                state.mark("judge", info)
        if not state.done("labels"):
            labels.offer(r, people, state)
            if s.get("judge") and labels.app is not None and not state.done("drafts"):
                chooser.store_drafts(labels.app, rd / "judge.jsonl", people, state.get("judge")["judge"],
                                     cfg.judge_draft == "shown")
                state.mark("drafts")
            say(f"round {r}: 2. labels ({cfg.source})")
            rankings, info = labels.rankings(r, people, state)
            if s.get("judge"):
                name, app = state.get("judge")["judge"], labels.app
                gold = chooser.measure_gold(app.store.gold_items(app.project), s["judge"], sft) if app else (0, 0, 0)
                # each app answer says whether its labeler was shown the judge's draft; elsewhere nobody was
                check = chooser.measure(rd / "judge.jsonl", rankings, name, s["judge_threshold"], gold,
                                        unknown="unknown" if app is not None else "hidden")
                say(f"round {r}:    {check.line()}")
                ids = {c["id"] for c in read_jsonl(people)}
                judged = chooser.judge_rankings(rd / "judge.jsonl", rd / "candidates.jsonl", ids, name) \
                    if check.used else []
                info |= {"judge": check.summary(), "judge_rankings": len(judged), "human_rankings": len(rankings)}
                rankings = rankings + judged
            write_jsonl(rd / "rankings.jsonl", rankings)
            state.mark("labels", info)
            if "coverage" in info:
                say(f"round {r}:    {labels_io.Coverage(**info['coverage']).describe()}")
        all_rankings = [rec for k in range(1, r + 1) for rec in read_jsonl(_round_dir(out, k) / "rankings.jsonl",
                                                                           ranking_record)]
        if not state.done("rm"):
            held = None
            if "select" in s:  # held out: people's rankings of random-share items only (loop_select.py)
                train, kept = chooser.split_heldout(all_rankings, [_round_dir(out, q) / "candidates.jsonl"
                                                                   for q in range(1, r + 1)], cfg.seed)
                held = rd / "heldout-rankings.jsonl" if kept else None
                if held:
                    write_jsonl(held, kept)
            write_jsonl(rd / "all-rankings.jsonl", train if held else all_rankings)
            say(f"round {r}: 3. reward model on all {len(all_rankings)} rankings so far")
            rm = stages.reward_model(sft, rd / "all-rankings.jsonl", rd / "rm", world, lr=plan.rm_lr,
                                     epochs=plan.rm_epochs, seed=cfg.seed, threads=cfg.threads, eval_data=held)
            state.mark("rm", {k: rm.get(k) for k in ("heldout_accuracy", "noise_ceiling", "n_pairs")})
        rm = state.get("rm")
        start = policy if s["continue_policy"] else sft
        if not state.done("ppo"):
            every = cfg.checkpoint_every or plan.save_every
            resumed = (rd / "ppo" / "config.toml").exists()
            say(f"round {r}: 4. PPO from {start.name}, {s['ppo_steps']} iterations (KL to the SFT policy)"
                + (", continuing from its last checkpoint" if resumed else ""))
            stages.ppo(start, rd / "rm", world, rd / "ppo", steps=s["ppo_steps"], batch=plan.ppo_batch,
                       minibatch=plan.ppo_minibatch, lr=plan.ppo_lr, kl_coef=s["kl_coef"], save_every=0,
                       seed=cfg.seed + r, reference=sft, threads=cfg.threads, checkpoint_every=every, resume=True,
                       rollout_engine=cfg.rollout_engine)
            state.mark("ppo")
        policy = rd / "ppo"
        say(f"round {r}: 5. evaluation on {len(prompts)} held-out prompts")
        row = evaluate_round(r, sft, rd, policy, prompts, world, cfg.seed, len(all_rankings), rm)
        row["coverage"] = state.get("labels").get("coverage")
        if "select" in s:  # labelers' agreement on the random share, as the RM's held-out accuracy is measured
            row["select"] = s["select"]
            row["labeler_agreement"], drafts = chooser.random_share_agreement(
                rd / "candidates.jsonl", rd / "rankings.jsonl", rd / "random-rankings.jsonl",
                unknown="unknown" if cfg.source == "app" else "hidden")
            if s.get("judge"):  # answers per judge's draft state: measured on the hidden ones when others exist
                row["labeler_agreement_drafts"] = drafts
        # the label budget spent so far: people's rankings, and the judge's (labeler judge:NAME), every round
        judged = sum(is_judge(rec["labeler"]) for rec in all_rankings)
        row |= {"human_rankings": len(all_rankings) - judged, "judge_rankings": judged}
        if "judge" in state.get("labels"):
            row["judge"] = state.get("labels")["judge"]
        row["wall_s"] = round(time.time() - t0, 1)
        write_text_atomic(rd / "round.json", json.dumps(row, indent=2) + "\n")  # a killed write leaves none
        say(f"round {r}: gold {row['gold']:.3f} (SFT {row['gold_sft']:.3f}), win rate vs SFT "
            f"{row['win_vs_sft']['rate']:.3f}, KL {row['kl']:.2f}")
        rows.append(row)
    return write_loop_report(out, rows)


def evaluate_round(r: int, sft: Path, rd: Path, policy: Path, prompts, world, seed: int, n_rankings: int,
                   rm: dict) -> dict:
    judge = stages.Judge.load(sft, rd / "rm", prompts, world.response_limit, seed)
    base = judge.measure(judge.sft)
    now = judge.measure(load_policy(policy)[0])
    return {"round": r, "rankings": n_rankings, "rm_heldout_accuracy": rm.get("heldout_accuracy"),
            "rm_noise_ceiling": rm.get("noise_ceiling"), "rm_heldout_pairs": rm.get("n_pairs"),
            "gold": now.summary()["gold"], "gold_sft": base.summary()["gold"],
            "win_vs_sft": win_rate(now.totals, base.totals, seed=seed), "kl": now.summary()["kl"],
            "labeler_agreement": stages.agreement(rd / "rankings.jsonl")}


# Below this many held-out comparisons the RM's accuracy and the noise ceiling are too noisy to compare: the
# 95% interval of an accuracy near 0.5 is ±1.96·0.5/√n, ±0.1 at n = 96.
FEW_HELDOUT_PAIRS = 100


def write_loop_report(out: Path, rows: list[dict]) -> dict:
    report = {"rounds": rows}
    write_text_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
    table = [{"round": r["round"], "rankings": r["rankings"], "RM accuracy": r["rm_heldout_accuracy"],
              "noise ceiling": r["rm_noise_ceiling"], "held-out comparisons": r.get("rm_heldout_pairs"),
              "gold": r["gold"], "gold SFT": r["gold_sft"], "win vs SFT": r["win_vs_sft"]["rate"], "KL": r["kl"]}
             for r in rows]
    few = [t for t in table if (t["held-out comparisons"] or 0) < FEW_HELDOUT_PAIRS]
    caveat = (f"RM accuracy and noise ceiling marked * rest on fewer than {FEW_HELDOUT_PAIRS} held-out comparisons "
              f"(their 95% interval is wider than ±0.1): too few to tell them apart" if few else "")
    images = [R.plot_rounds(rows, out / "rounds.png")] if rows else []
    title = "One row per round (held-out prompts)" + (f". {caveat}." if caveat else "")
    R.write_html(out / "report.html", "rlhfkit online loop", [(title, table)], images, report)
    if rows:
        print("\n  round  rankings  RM acc  ceiling  compared   gold  win vs SFT    KL")
        for t in table:
            mark = "*" if t in few else " "
            print(f"  {t['round']:>5}  {t['rankings']:>8}  {_num(t['RM accuracy']):>6}{mark} "
                  f"{_num(t['noise ceiling']):>6}{mark} {t['held-out comparisons'] or 0:>8}  {t['gold']:>5.3f}  "
                  f"{t['win vs SFT']:>10.3f}  {t['KL']:>4.2f}")
        if caveat:
            print(f"  * {caveat}")
    print(f"\nreport: {out / 'report.json'}, {out / 'report.html'}")
    return report


def _num(value) -> str:
    return "–" if value is None else f"{value:.3f}"
