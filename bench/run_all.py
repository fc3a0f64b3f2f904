"""`make bench`: rlhfkit against TRL on the same work, in one run, with this CPU's matmul peak beside it.

    .venv/bin/python bench/run_all.py [--quick] [--repeats N] [--threads N] [--bf16 auto|yes|no] [--skip-table]
                                      [--out FILE]

1. the ceiling: this CPU's fp32 and bf16 matmul GFLOP/s at the shapes each PPO benchmark's models run
   (`rlhf bench matmul`: a decoding step's 64 rows, a minibatch's batch × sequence rows), and whether bf16 is
   native here (AVX512-BF16 / AMX; `models/precision.py`);
2. PPO: `rlhf bench ppo` vs TRL 0.29.1's `trl.experimental.ppo.PPOTrainer` (bench/peer_ppo.py), on the default
   shape and on `--dim 256 --resp 64`; episodes/s, ratio, peak RSS, and each phase's share of the matmul rate of
   its dtype and shape. With bf16 (`--bf16 auto`, the default: where native) the `--dim 256 --resp 64` pair runs
   again with bf16 autocast on both sides (ours `--bf16`, TRL `bf16=True`), so like is compared with like, and
   ours in bf16 is set beside ours and TRL's in fp32, with what bounds that ratio here (`bf16_limits`);
3. reward-model training vs the latest TRL's `RewardTrainer`, SFT vs its `SFTTrainer` (bench/peer_train.py; TRL
   1.16.0, the newest release when this was written, which no longer has PPOTrainer): tokens/s on the
   same JSONL file and the same random GPT-2 directory; for the RM also rankings of K=4 (pairs/s: rlhfkit puts
   a ranking's 6 pairs in one batch and scores its 4 outputs once, TRL trains on the 6 pairs = 12 sequences);
4. our episodes/s as the response length (16 … 128) and the width (128 … 512) grow;
5. padded vs packed (`--packing`): seconds and FLOPs per PPO update and per SFT epoch on the toy world's lengths and
   on a long-tailed distribution, beside the padding fraction (bench/packing.py).
6. the overlap of asynchronous rollouts: `rlhf bench ppo --async-rollouts 1` against `--async-rollouts 0` at the
   default shape, alternating in this run: seconds per iteration of each, and how long the trainer waited for
   rollouts and the sampling thread for weights (train/async_rollouts.py).

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


def matmul_rates(shape: dict, batch: int, seq: int, env: dict) -> dict:
    """`rlhf bench matmul` at a PPO benchmark's shapes: rows = the batch (a decoding step) and batch × seq (scoring
    and the update), fp32 and bf16, in a fresh process with the benchmarks' thread settings."""
    return run_json(OURS + ["bench", "matmul", "--json", *shape_flags(**shape), "--rows", f"{batch},{batch * seq}"],
                    env)


def phase_fractions(result: dict, matmul: dict) -> dict:
    """Each PPO phase's GFLOP/s as a fraction of the matmul rate that applies: its dtype (bf16 under --bf16), its
    rows (generation: one decoding step's batch; scoring and update: the whole batch × sequence); by the wall
    clock and per CPU-second."""
    dtype = "bfloat16" if result["bf16"] else "float32"
    small, large = (r[dtype] for r in matmul["rates"])
    return {phase: {"wall": round(result[f"{phase}_gflops_per_s"] / rate["gflops"], 3),
                    "cpu": round(result[f"{phase}_gflop_per_cpu_s"] / rate["gflop_per_cpu_s"], 3), "dtype": dtype}
            for phase, rate in (("generation", small), ("scoring", large), ("update", large))}


def matmul_seconds(result: dict, matmul: dict) -> float:
    """The seconds a PPO run's matmuls take at the measured rates of its dtype and rows (`phase_fractions`)."""
    dtype = "bfloat16" if result["bf16"] else "float32"
    small, large = (r[dtype]["gflops"] for r in matmul["rates"])
    return result["generation_gflop"] / small + (result["scoring_gflop"] + result["update_gflop"]) / large


def bf16_limits(fp32: dict, half: dict, trl_fp32: dict, matmul: dict) -> dict:
    """What bounds ours bf16 ÷ ours fp32 on this CPU (Amdahl): each run's timed seconds split into its matmuls at
    the measured rates and the rest (norms, GELU, casts, attention's small ops, sampling, Python). bf16 speeds up
    the first part only and the rest is the same work in both modes, so matmul_fp32 / matmul_bf16 is the ratio's
    ceiling, reached were the rest gone from both; and the seconds of the rest a bf16 run may keep to be 2× ours
    fp32 as measured, or 3× TRL's fp32, at the same episodes."""
    m32, m16 = matmul_seconds(fp32, matmul), matmul_seconds(half, matmul)
    episodes = half["episodes"]
    return {"matmul_s_fp32": round(m32, 2), "matmul_s_bf16": round(m16, 2),
            "rest_s_fp32": round(fp32["total_s"] - m32, 2), "rest_s_bf16": round(half["total_s"] - m16, 2),
            "ceiling_vs_ours_fp32": round(m32 / m16, 2),
            "rest_s_bf16_allowed_for_2x_ours_fp32": round(episodes / (2 * fp32["episodes_per_s"]) - m16, 2),
            "rest_s_bf16_allowed_for_3x_trl_fp32": round(episodes / (3 * trl_fp32["episodes_per_s"]) - m16, 2)}


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


def async_overlap(episodes: int, repeats: int, env: dict) -> dict:
    """`rlhf bench ppo` with --async-rollouts 0 and 1, alternating `repeats` times: the best of each, by seconds per
    iteration."""
    runs = {0: [], 1: []}
    for i in range(repeats):
        for k in (0, 1):
            log(f"async rollouts: --async-rollouts {k} (run {i + 1}/{repeats})")
            runs[k].append(run_json(OURS + ["bench", "ppo", "--json", "--episodes", episodes, "--async-rollouts", k],
                                    env))
    sync, overlap = (min(runs[k], key=lambda r: r["iteration_s"]) for k in (0, 1))
    return {"sync": sync, "async": overlap, "threads": sync["threads"],
            "speedup": round(sync["iteration_s"] / overlap["iteration_s"], 2),
            "sync_all": [r["iteration_s"] for r in runs[0]], "async_all": [r["iteration_s"] for r in runs[1]]}


def shape_flags(**kw) -> list[str]:
    return [x for k, v in kw.items() for x in (f"--{k}", str(v))]


# ------------------------------------------------------------------------------------------ report

def print_report(summary: dict) -> None:
    print()
    for name, mm in summary["matmul"].items():
        print(f"matmul at the shapes of {name} (d={mm['dim']}, {mm['threads']} threads), GFLOP/s fp32 / bf16 "
              "(per CPU-s): " + "; ".join(
                  f"{r['rows']} rows {r['float32']['gflops']} / {r['bfloat16']['gflops']} "
                  f"({r['float32']['gflop_per_cpu_s']} / {r['bfloat16']['gflop_per_cpu_s']})" for r in mm["rates"]))
    b = summary["bf16"]
    print(f"bf16: {'native (' + b['found'] + ')' if b['native'] else 'not native'} on this CPU; --bf16 {b['asked']}: "
          f"the bf16 PPO pair {'ran' if b['on'] else 'was left out'}")
    print(f"\n{'benchmark':<30}{'metric':<16}{'rlhfkit':>10}{'TRL':>10}{'peer':>12}{'ratio':>8}{'CPU-s ratio':>13}"
          f"   {'peak RSS MB ours/TRL':>20}")
    for c in summary["comparisons"]:
        print(f"{c['name']:<30}{c['metric']:<16}{c['ours'][c['metric']]:>10}{c['trl'][c['metric']]:>10}"
              f"{c['trl']['impl']:>12}{c['ratio']:>7}x{c['cpu_ratio']:>12}x   "
              f"{c['ours']['peak_rss_mb']:>10}/{c['trl']['peak_rss_mb']:<8}")
    print("(ratio: best run of each side, wall clock; CPU-s ratio: TRL's CPU-seconds / ours for the same work)")
    for c in summary["comparisons"]:
        if c["metric"] == "episodes_per_s":
            o, f = c["ours"], c["fractions"]
            print(f"{c['name']}: ours spends generation {o['generation_s']} s, scoring {o['scoring_s']} s, "
                  f"update {o['update_s']} s (update {o['update_gflops_per_s']} GFLOP/s, "
                  f"{o['update_gflop_per_cpu_s']} per CPU-s); share of the {f['update']['dtype']} matmul rate, "
                  "wall / per CPU-s: " + ", ".join(f"{p} {x['wall']:.0%} / {x['cpu']:.0%}" for p, x in f.items()))
    if "bf16_speedup" in summary:
        x = summary["bf16_speedup"]
        print(f"bf16 at --dim 256 --resp 64, episodes/s: ours bf16 ÷ ours fp32 {x['ours_bf16_vs_ours_fp32']}x, "
              f"ours bf16 ÷ TRL fp32 {x['ours_bf16_vs_trl_fp32']}x, TRL bf16 ÷ TRL fp32 {x['trl_bf16_vs_trl_fp32']}x "
              f"(CPU-seconds: {x['cpu_ours_fp32_vs_ours_bf16']}x, {x['cpu_trl_fp32_vs_ours_bf16']}x, "
              f"{x['cpu_trl_fp32_vs_trl_bf16']}x)")
    if "bf16_limits" in summary:
        x = summary["bf16_limits"]
        print(f"  bounds: matmuls at the measured rates take {x['matmul_s_fp32']} s in fp32 and {x['matmul_s_bf16']} s "
              f"in bf16 (ceiling of bf16 ÷ fp32: {x['ceiling_vs_ours_fp32']}x, were the rest gone from both); the rest "
              f"takes {x['rest_s_fp32']} s and {x['rest_s_bf16']} s. 2x ours fp32 allows the bf16 run "
              f"{x['rest_s_bf16_allowed_for_2x_ours_fp32']} s of the rest, 3x TRL fp32 "
              f"{x['rest_s_bf16_allowed_for_3x_trl_fp32']} s")
    if summary.get("async"):
        a = summary["async"]
        print(f"\nasync rollouts at the default shape ({a['threads']} threads): s per PPO iteration, sync "
              f"{a['sync']['iteration_s']}, async K=1 {a['async']['iteration_s']} ({a['speedup']}x); async: trainer "
              f"waited {a['async']['rollout_wait_s']} s for rollouts, the thread {a['async']['weight_wait_s']} s for "
              f"weights (all runs, s/iteration: sync {a['sync_all']}, async {a['async_all']})")
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
    parser.add_argument("--bf16", choices=("auto", "yes", "no"), default="auto",
                        help="also run the --dim 256 --resp 64 PPO pair in bf16: auto (where this CPU has native "
                        "bf16), yes, no")
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
    # name, width, response length, episodes (prompt 16, batch 64: `rlhf bench ppo`'s and peer_ppo.py's defaults)
    ppo_shapes = [("PPO default shape", 128, 32, 128 if args.quick else 256),
                  ("PPO --dim 256 --resp 64", 256, 64, 64 if args.quick else 128)]
    summary["matmul"] = {}
    for name, dim, resp, _ in ppo_shapes:
        log(f"matmul rates at the shapes of {name}")
        summary["matmul"][name] = matmul_rates({"dim": dim}, 64, 16 + resp, env)
    native = summary["matmul"][ppo_shapes[0][0]]["bf16_native"]
    bf16 = args.bf16 == "yes" or (args.bf16 == "auto" and native)
    summary["bf16"] = {"asked": args.bf16, "native": native, "on": bf16,
                       "found": summary["matmul"][ppo_shapes[0][0]]["bf16_found"]}
    if bf16:  # like with like: ours --bf16 against TRL's bf16=True, on the larger shape
        ppo_shapes.append(("PPO --dim 256 --resp 64, bf16", 256, 64, ppo_shapes[1][3]))
    for name, dim, resp, episodes in ppo_shapes:
        flags = shape_flags(dim=dim, resp=resp, episodes=episodes) + (["--bf16"] if name.endswith("bf16") else [])
        c = compare(name, OURS + ["bench", "ppo", "--json", *flags], [ppo_python, "peer_ppo.py", *flags],
                    "episodes_per_s", repeats, env)
        c["fractions"] = phase_fractions(c["ours"], summary["matmul"][name.removesuffix(", bf16")])
        summary["comparisons"].append(c)
    if bf16:
        fp32, half = summary["comparisons"][1], summary["comparisons"][2]
        summary["bf16_speedup"] = {
            "ours_bf16_vs_ours_fp32": round(half["ours"]["episodes_per_s"] / fp32["ours"]["episodes_per_s"], 2),
            "ours_bf16_vs_trl_fp32": round(half["ours"]["episodes_per_s"] / fp32["trl"]["episodes_per_s"], 2),
            "trl_bf16_vs_trl_fp32": round(half["trl"]["episodes_per_s"] / fp32["trl"]["episodes_per_s"], 2),
            "cpu_ours_fp32_vs_ours_bf16": round(fp32["ours"]["cpu_s"] / half["ours"]["cpu_s"], 2),
            "cpu_trl_fp32_vs_ours_bf16": round(fp32["trl"]["cpu_s"] / half["ours"]["cpu_s"], 2),
            "cpu_trl_fp32_vs_trl_bf16": round(fp32["trl"]["cpu_s"] / half["trl"]["cpu_s"], 2)}
        summary["bf16_limits"] = bf16_limits(fp32["ours"], half["ours"], fp32["trl"],
                                             summary["matmul"][ppo_shapes[1][0]])

    summary["async"] = async_overlap(128 if args.quick else 256, repeats, env)

    with tempfile.TemporaryDirectory(prefix="rlhf-bench-data-") as tmp:
        tmp = Path(tmp)
        examples = 512 if args.quick else 1024
        prep = (f"from pathlib import Path\nfrom rlhfkit.recipes.bench import *\n"
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

    log("packing: padded vs packed, per PPO update and per SFT epoch (bench/packing.py)")
    with tempfile.TemporaryDirectory(prefix="rlhf-bench-packing-") as tmp:
        flags = ["--quick"] if args.quick else ["--repeats", str(repeats)]
        packing = subprocess.run([sys.executable, str(BENCH / "packing.py"), *flags, "--out", f"{tmp}/packing.json"],
                                 env=env, capture_output=True, text=True, check=True)
        summary["packing"] = json.loads(Path(f"{tmp}/packing.json").read_text())
        summary["packing"]["lines"] = packing.stdout.splitlines()

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
    print("\npadded vs packed (--packing; CPU seconds, one thread; bench/packing.py)")
    print("\n".join(summary["packing"]["lines"]))
    print(f"\nload average before/after: {summary['load_before'][0]:.1f}/{summary['load_after'][0]:.1f} "
          f"(2 cores: above ~2 other processes share the CPU); {summary['total_s']} s in all; raw results -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
