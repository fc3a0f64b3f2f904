"""`make bench`: rlhfkit against TRL on the same work, in one run, with this CPU's matmul peak beside it.

    .venv/bin/python bench/run_all.py [--quick] [--repeats N] [--threads N] [--skip-table] [--out FILE]

1. this CPU's fp32 matmul GFLOP/s (the ceiling for the update phase);
2. PPO: `rlhf bench ppo` vs TRL 0.29.1's `trl.experimental.ppo.PPOTrainer` (bench/peer_ppo.py), on the default
   shape and on `--dim 256 --resp 64`; episodes/s, ratio, peak RSS, and the share of the matmul peak that our
   update phase reaches;
3. reward-model training vs the latest TRL's `RewardTrainer`, SFT vs its `SFTTrainer` (bench/peer_train.py; TRL
   1.16.0, the newest release when this was written, which no longer has PPOTrainer): tokens/s on the
   same JSONL file and the same random GPT-2 directory; for the RM also rankings of K=4 (pairs/s: rlhfkit puts
   a ranking's 6 pairs in one batch and scores its 4 outputs once, TRL trains on the 6 pairs = 12 sequences);
4. our episodes/s as the response length (16 … 128) and the width (128 … 512) grow.

The TRL side runs in its own virtualenvs, `.venv-peer` (TRL 0.29.1, for PPO) and `.venv-peer-latest` (TRL 1.16.0,
for RM and SFT), created here when missing (torch first, pinned to the CPU build, then TRL), so the project's pins
stay free. Every benchmark is a separate process (peak RSS is
per process); ours and TRL's alternate, `--repeats` times each, and the best run of each side is compared, so
a burst of load from other processes on the machine hurts neither side alone. Both sides get the same
thread settings: torch's thread count (or `--threads`) and OMP_WAIT_POLICY=PASSIVE, because on a shared
machine spinning OpenMP workers make *both* several times slower and the figures meaningless.
Results print as a table; every raw measurement is also written as JSON to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
TORCH = "torch==2.13.0"   # the CPU build on this machine's disk; installed first so no CUDA build is pulled
PEER_PPO = (ROOT / ".venv-peer", "trl==0.29.1")                 # the last release with PPOTrainer (trl.experimental)
PEER_LATEST = (ROOT / ".venv-peer-latest", "trl==1.16.0")      # the newest release: RewardTrainer, SFTTrainer
OURS = [sys.executable, "-m", "rlhfkit.cli"]


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------- the peer's venv

def ensure_peer_env(venv: Path, trl: str) -> tuple[Path, str]:
    """A virtualenv with torch (pinned, CPU) and `trl`; returns its python and TRL's version."""
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import trl, torch; print(trl.__version__)"]
    if python.exists():
        found = subprocess.run(probe, capture_output=True, text=True)
        if found.returncode == 0 and found.stdout.strip() == trl.split("==")[1]:
            return python, found.stdout.strip()
    log(f"creating {venv.name} ({TORCH}, then {trl}); a few minutes, once")
    if not python.exists():
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    pip = [str(python), "-m", "pip", "install", "-q"]
    subprocess.run(pip + [TORCH], check=True)
    subprocess.run(pip + [trl], check=True)
    return python, subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()


# ------------------------------------------------------------------------------------ measurements

def bench_env(threads: int) -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    env.update(TRANSFORMERS_VERBOSITY="error", HF_HUB_OFFLINE="1", HF_HUB_DISABLE_PROGRESS_BARS="1",
               TRL_EXPERIMENTAL_SILENCE="1", PYTHONWARNINGS="ignore", TQDM_DISABLE="1",
               PYTHONPATH=str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def run_json(cmd: list[str], env: dict, cwd: Path = ROOT) -> dict:
    """Run a benchmark process; its last stdout line that is a JSON object is the result."""
    started = time.time()
    done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, cwd=cwd)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{\"bench\"")]
    if done.returncode != 0 or not lines:
        tail = (done.stdout + done.stderr)[-3000:]
        raise SystemExit(f"benchmark failed ({done.returncode}): {' '.join(map(str, cmd))}\n{tail}")
    result = json.loads(lines[-1])
    result["wall_s"] = round(time.time() - started, 1)
    return result


def matmul_gflops(env: dict) -> dict:
    """Best fp32 matmul GFLOP/s over a few square sizes, in a fresh process with the benchmarks' thread settings."""
    code = """
import json, time, torch
best = {}
for n in (512, 1024, 2048):
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    reps = max(3, int(4e9 / (2 * n ** 3)))
    rate, per_cpu = 0.0, 0.0
    for _ in range(5):
        t, c = time.perf_counter(), time.process_time()
        for _ in range(reps):
            a @ b
        rate = max(rate, 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9)
        per_cpu = max(per_cpu, 2 * n ** 3 * reps / (time.process_time() - c) / 1e9)
    best[n] = (round(rate, 1), round(per_cpu, 1))
print(json.dumps({"bench": "matmul", "threads": torch.get_num_threads(), "gflops_by_size": best,
                  "peak_gflops": max(r for r, _ in best.values()),
                  "peak_gflop_per_cpu_s": max(c for _, c in best.values())}))
"""
    return run_json([sys.executable, "-c", code], env)


def best_of(results: list[dict], key: str) -> dict:
    return max(results, key=lambda r: r[key])


def compare(name: str, ours_cmd: list, peer_cmd: list, key: str, repeats: int, env: dict) -> dict:
    """Alternate ours and TRL's `repeats` times; compare the best run of each."""
    ours, peer = [], []
    for i in range(repeats):
        log(f"{name}: rlhfkit (run {i + 1}/{repeats})")
        ours.append(run_json(ours_cmd, env))
        log(f"{name}: TRL (run {i + 1}/{repeats})")
        peer.append(run_json(peer_cmd, env, cwd=BENCH))
    a, b = best_of(ours, key), best_of(peer, key)
    cpu = min(r["cpu_s"] for r in peer) / min(r["cpu_s"] for r in ours)  # same work: CPU-seconds, robust to load
    return {"name": name, "metric": key, "ours": a, "trl": b, "ratio": round(a[key] / b[key], 2),
            "cpu_ratio": round(cpu, 2),
            "rss_ratio": round(a["peak_rss_mb"] / b["peak_rss_mb"], 2),
            "ours_all": [r[key] for r in ours], "trl_all": [r[key] for r in peer]}


def shape_flags(**kw) -> list[str]:
    return [x for k, v in kw.items() for x in (f"--{k}", str(v))]


# ------------------------------------------------------------------------------------------ report

def print_report(summary: dict) -> None:
    mm = summary["matmul"]
    print(f"\nfp32 matmul: {mm['peak_gflops']} GFLOP/s peak with {mm['threads']} threads, "
          f"{mm['peak_gflop_per_cpu_s']} GFLOP per CPU-second (by size: wall, per CPU-s {mm['gflops_by_size']})")
    print(f"\n{'benchmark':<30}{'metric':<16}{'rlhfkit':>10}{'TRL':>10}{'peer':>12}{'ratio':>8}{'CPU-s ratio':>13}"
          f"   {'peak RSS MB ours/TRL':>20}")
    for c in summary["comparisons"]:
        print(f"{c['name']:<30}{c['metric']:<16}{c['ours'][c['metric']]:>10}{c['trl'][c['metric']]:>10}"
              f"{c['trl']['impl']:>12}{c['ratio']:>7}x{c['cpu_ratio']:>12}x   "
              f"{c['ours']['peak_rss_mb']:>10}/{c['trl']['peak_rss_mb']:<8}")
    print("(ratio: best run of each side, wall clock; CPU-s ratio: TRL's CPU-seconds / ours for the same work)")
    for c in summary["comparisons"]:
        if c["metric"] == "episodes_per_s":
            o = c["ours"]
            print(f"{c['name']}: ours spends generation {o['generation_s']} s, scoring {o['scoring_s']} s, "
                  f"update {o['update_s']} s; update at {o['update_gflops_per_s']} GFLOP/s = "
                  f"{o['update_gflops_per_s'] / mm['peak_gflops']:.0%} of the matmul peak "
                  f"({o['update_gflop_per_cpu_s']} GFLOP per CPU-s = "
                  f"{o['update_gflop_per_cpu_s'] / mm['peak_gflop_per_cpu_s']:.0%} of matmul's)")
    if summary.get("table"):
        widths = sorted({r["dim"] for r in summary["table"]})
        print("\nrlhfkit PPO episodes/s (rows: response length, columns: width d; 4 layers, batch 64)")
        print("resp " + "".join(f"{f'd={w}':>10}" for w in widths))
        for resp in sorted({r["resp"] for r in summary["table"]}):
            cells = {r["dim"]: r["episodes_per_s"] for r in summary["table"] if r["resp"] == resp}
            print(f"{resp:<5}" + "".join(f"{cells.get(w, '-'):>10}" for w in widths))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one run per side, fewer episodes, smaller table")
    parser.add_argument("--repeats", type=int, default=None, help="runs per side (default 2; 1 with --quick)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads for every benchmark (0: default)")
    parser.add_argument("--skip-table", action="store_true", help="leave out the episodes/s table")
    parser.add_argument("--out", default=str(ROOT / "runs" / "bench" / "summary.json"), help="raw results (JSON)")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 2)
    started = time.time()

    ppo_python, ppo_trl = ensure_peer_env(*PEER_PPO)
    train_python, train_trl = ensure_peer_env(*PEER_LATEST)
    env = bench_env(args.threads)
    summary = {"trl": {"ppo": ppo_trl, "rm_sft": train_trl}, "repeats": repeats,
               "omp_wait_policy": env["OMP_WAIT_POLICY"], "load_before": os.getloadavg(), "comparisons": [],
               "table": []}
    log("fp32 matmul peak")
    summary["matmul"] = matmul_gflops(env)

    ppo_shapes = [("PPO default shape", {}, 256),
                  ("PPO --dim 256 --resp 64", {"dim": 256, "resp": 64}, 64 if args.quick else 128)]
    for name, shape, episodes in ppo_shapes:
        flags = shape_flags(**shape, episodes=episodes if not args.quick else min(episodes, 128))
        summary["comparisons"].append(compare(name, OURS + ["bench", "ppo", "--json", *flags],
                                              [ppo_python, "peer_ppo.py", *flags], "episodes_per_s", repeats, env))

    with tempfile.TemporaryDirectory(prefix="rlhf-bench-data-") as tmp:
        tmp = Path(tmp)
        examples = 512 if args.quick else 1024
        prep = (f"from pathlib import Path\nfrom rlhfkit.bench import *\n"
                f"cfg = BenchTrainConfig(examples={examples})\ntok = bench_tokenizer(cfg.vocab)\n"
                f"save_random_policy(Path({str(tmp / 'model')!r}), cfg, tok, cfg.prompt + cfg.completion + 1, 0)\n"
                f"write_pairs(Path({str(tmp / 'pairs.jsonl')!r}), cfg)\n"
                f"write_pairs(Path({str(tmp / 'rankings.jsonl')!r}), BenchTrainConfig(examples={examples // 2}, k=4))\n"
                f"write_demos(Path({str(tmp / 'demos.jsonl')!r}), cfg)\n")
        subprocess.run([sys.executable, "-c", prep], env=env, check=True, capture_output=True)
        # name, our command, TRL's, metric: the same JSONL file and model directory on both sides
        train_runs = [("reward model, pairs", ["rm", "--examples", examples], ["rm"], "pairs.jsonl", "tokens_per_s"),
                      ("reward model, rankings K=4", ["rm", "--examples", examples // 2, "--k", 4, "--batch", 16],
                       ["rm", "--batch", 16], "rankings.jsonl", "pairs_per_s"),
                      ("SFT", ["sft", "--examples", examples], ["sft"], "demos.jsonl", "tokens_per_s")]
        for name, ours, peer, data, metric in train_runs:
            files = ["--model", tmp / "model", "--data", tmp / data]
            summary["comparisons"].append(compare(name, OURS + ["bench", *ours, "--json", *files],
                                                  [train_python, "peer_train.py", *peer, *files], metric, repeats, env))

    if not args.skip_table:
        grid = [(16, 128), (32, 128), (64, 128), (128, 128), (32, 256), (32, 512)]
        if args.quick:
            grid = [(16, 128), (32, 128), (64, 128), (32, 256)]
        for resp, dim in grid:
            log(f"table: resp {resp}, d {dim}")
            summary["table"].append(run_json(OURS + ["bench", "ppo", "--json", "--resp", resp, "--dim", dim,
                                                     "--episodes", 64, "--warmup", 1], env))
    summary["load_after"] = os.getloadavg()
    summary["total_s"] = round(time.time() - started, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print_report(summary)
    print(f"\nload average before/after: {summary['load_before'][0]:.1f}/{summary['load_after'][0]:.1f} "
          f"(2 cores: above ~2 other processes share the CPU); {summary['total_s']} s in all; raw results -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
