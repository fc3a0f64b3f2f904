"""PPO with the SFT policy's likelihood added to the reward: what it does to gold correctness (a diagnostic).

    OMP_NUM_THREADS=1 PYTHONPATH=src .venv/bin/python bench/ppo_likelihood.py \
        --world runs/demo/world --runs runs/demo --seeds 0 1 2 --alphas 0 0.1 0.3 [--out runs/bench/ppo_likelihood.json]

RUNS holds `rlhf demo`'s seed directories (RUNS/seed-S/sft, RUNS/seed-S/rm); nothing in them is written. For each
seed and α, PPO runs with the demo's plan and β (`recipes.pipeline.ppo`, the demo's stage 5) on per-token rewards

    R_t = −β·(log π(y_t) − log π_SFT(y_t)) + α·log π_SFT(y_t)  (+ r(x, y) on the last token)

i.e. the reward r(x, y) + α·log π_SFT(y|x) under the usual KL penalty. Summed over t that is r − β·log π +
(β + α)·log π_SFT, whose maximizer is π* ∝ π_SFT^{1 + α/β}·exp(r/β) (Korbak et al. 2022's RL-with-KL posterior with
a sharpened prior): the SFT policy as if sampled at temperature β/(β + α), reweighted by the reward model. The
SFT policy's answers are more often right at a lower temperature, and the reward model is at chance on
correctness (bench/rm_correctness.py), so this is the one lever on correctness the demo's models hold.

The term is added by wrapping `losses.per_token_rewards` in this process (a bench-only diagnostic, not an rlhfkit
option; α = 0 is the demo's PPO exactly). Each policy is evaluated as the demo evaluates (`Judge`: one sample
per held-out prompt at T = 1, gold win rate against the SFT policy's sample with a bootstrap interval), beside
the SFT policy sampled at the equivalent temperature β/(β + α) with no reward model at all.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from rlhfkit import losses
from rlhfkit.eval.policy import evaluate_policy, load_policy
from rlhfkit.recipes import pipeline
from rlhfkit.recipes.configs import PLANS
from rlhfkit.stats import win_rate
from rlhfkit.world.build import World
from rlhfkit.world.gold import gold_reward

DEMO_PER_TOKEN_REWARDS = losses.per_token_rewards


def with_likelihood(alpha: float):
    """`losses.per_token_rewards` plus α·log π_SFT(y_t) on every response token."""
    def rewards(score, logp, ref_logp, mask, kl_coef):
        return DEMO_PER_TOKEN_REWARDS(score, logp, ref_logp, mask, kl_coef) + alpha * ref_logp * mask
    return rewards


def run_one(world: World, seed_dir: Path, work: Path, plan, *, seed: int, alpha: float, beta: float,
            threads: int, steps: int) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    for name in ("sft", "rm"):  # the demo's models, linked, never written
        if not (work / name).exists():
            (work / name).symlink_to((seed_dir / name).resolve())
    losses.per_token_rewards = with_likelihood(alpha)
    try:
        clock = time.time()
        pipeline.ppo(work / "sft", work / "rm", world, work / "ppo", steps=steps, batch=plan.ppo_batch,
                     minibatch=plan.ppo_minibatch, lr=plan.ppo_lr, kl_coef=beta, save_every=plan.save_every, seed=seed,
                     threads=threads)
        ppo_s = time.time() - clock
    finally:
        losses.per_token_rewards = DEMO_PER_TOKEN_REWARDS
    judge = pipeline.Judge.load(work / "sft", work / "rm", world.prompts("heldout")[:plan.eval_prompts],
                                world.response_limit, seed)
    sft, ppo = judge.measure(judge.sft), judge.measure(load_policy(work / "ppo")[0])
    temperature = beta / (beta + alpha)
    tempered = evaluate_policy(judge.sft, judge.sft, judge.reward, judge.tokenizer, judge.prompts,
                               temperature=temperature, max_new_tokens=judge.max_new_tokens, seed=judge.seed,
                               gold=gold_reward)
    return {"seed": seed, "alpha": alpha, "beta": beta, "ppo_steps": steps, "ppo_wall_s": round(ppo_s, 1),
            "ppo_vs_sft": win_rate(ppo.totals, sft.totals, seed=seed),
            "sft": sft.summary(), "ppo": ppo.summary() | {"kl": round(sum(ppo.kl) / len(ppo.kl), 4)},
            "sft_tempered": {"temperature": round(temperature, 4), **tempered.summary(),
                             "vs_sft": win_rate(tempered.totals, sft.totals, seed=seed)}}


def print_table(rows: list[dict]) -> None:
    print(f"  {'alpha':>5} {'seed':>4}  {'PPO vs SFT':>16}  {'correct SFT':>11} {'PPO':>6}  {'gold PPO':>8} "
          f"{'KL':>5} {'words':>5}  {'SFT at T':>8} {'correct':>7} {'vs SFT':>6}")
    for r in rows:
        w, t = r["ppo_vs_sft"], r["sft_tempered"]
        print(f"  {r['alpha']:>5} {r['seed']:>4}  {w['rate']:.3f} [{w['ci_low']:.2f},{w['ci_high']:.2f}]  "
              f"{r['sft']['gold_correctness']:>11.3f} {r['ppo']['gold_correctness']:>6.3f}  {r['ppo']['gold']:>8.3f} "
              f"{r['ppo']['kl']:>5.2f} {r['ppo']['length']:>5.2f}  {t['temperature']:>8.3f} "
              f"{t['gold_correctness']:>7.3f} {t['vs_sft']['rate']:>6.3f}")
    for alpha in sorted({r["alpha"] for r in rows}):
        m = mean_row([r for r in rows if r["alpha"] == alpha])
        print(f"  {alpha:>5} mean  {m['win']:.3f}{'':>12}{m['sft']:>11.3f} {m['ppo']:>6.3f}  {m['gold']:>8.3f} "
              f"{m['kl']:>5.2f} {m['length']:>5.2f}  {'':>8} {m['tempered']:>7.3f} {m['tempered_vs_sft']:>6.3f}")


def mean_row(rows: list[dict]) -> dict:
    """The means over seeds of the table's columns."""
    columns = {"win": lambda r: r["ppo_vs_sft"]["rate"], "sft": lambda r: r["sft"]["gold_correctness"],
               "ppo": lambda r: r["ppo"]["gold_correctness"], "gold": lambda r: r["ppo"]["gold"],
               "kl": lambda r: r["ppo"]["kl"], "length": lambda r: r["ppo"]["length"],
               "tempered": lambda r: r["sft_tempered"]["gold_correctness"],
               "tempered_vs_sft": lambda r: r["sft_tempered"]["vs_sft"]["rate"]}
    return {name: sum(f(r) for r in rows) / len(rows) for name, f in columns.items()}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", default="runs/demo/world")
    parser.add_argument("--runs", default="runs/demo", help="a directory of `rlhf demo` seed directories")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.1, 0.3])
    parser.add_argument("--beta", type=float, default=0.05, help="the KL coefficient (the demo's)")
    parser.add_argument("--ppo-steps", type=int, default=None, help="PPO iterations (default: the plan's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="runs/bench/ppo_likelihood.json")
    args = parser.parse_args(argv)
    clock = time.time()
    world = World(args.world)
    plan = PLANS[world.meta.get("preset", "tiny")]
    out = Path(args.out)
    steps = args.ppo_steps or plan.ppo_steps
    rows = []
    for seed in args.seeds:
        for alpha in args.alphas:
            rows.append(run_one(world, Path(args.runs) / f"seed-{seed}", out.with_suffix("") / f"seed-{seed}-a{alpha}",
                                plan, seed=seed, alpha=alpha, beta=args.beta, threads=args.threads, steps=steps))
            print(f"  done: seed {seed}, alpha {alpha} ({time.time() - clock:.0f} s)", flush=True)
    print(f"\nPPO on r + alpha·log pi_SFT, beta = {args.beta}, {steps} iterations x {plan.ppo_batch} "
          f"episodes; {plan.eval_prompts} held-out prompts:")
    print_table(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"rows": rows, "wall_s": round(time.time() - clock, 1), "command": " ".join(sys.argv)},
                              indent=2) + "\n", encoding="utf-8")
    print(f"ppo_likelihood: {time.time() - clock:.0f} s -> {out}")
    return rows


if __name__ == "__main__":
    main()
