"""Throughput benchmarks (docs/design.md §7): `rlhf bench ppo|rm|sft` each print one line of JSON.

Every benchmark runs the toolkit's real code on randomly initialised GPT-2 models of a given shape and a
random word-level vocabulary, so it needs no world, no download and no training data:

- `bench ppo`   one PPO iteration is `rlhf ppo`'s own (`train.ppo.ppo_iteration`: `collect`, every response to
                full length → `measure` + `advantages` → `ppo_update`), with separate policy, reference, value and
                reward models loaded by `train.ppo_setup.load_models`; one minibatch per batch. Reports episodes/s
                and the seconds spent in generation, scoring and update. `--rollout-engine hf-static|vllm`
                generates with that engine (`engines/`; vllm: the weights pushed after every update, its seconds
                as `sync_s`); `gen_tokens_per_s` is response tokens per second of generation. `--device cuda` runs
                it on a GPU (clocks read after a synchronize; peak GPU memory reported) and `--bf16` under
                bfloat16 autocast, as `rlhf ppo`.
- `bench rm`    `train.reward.train_reward_model` on (prompt, chosen, rejected) pairs, or with `--k K` on
                rankings of K outputs (all C(K,2) pairs of a ranking in one batch, each output scored once);
                reports tokens/s and pairs/s.
- `bench sft`   `train.sft.train_sft` on (prompt, completion) demonstrations; reports tokens/s.
- `bench matmul` the ceiling: torch's fp32 and bf16 matmul rates at the shapes a model of the given width runs
                (`model_matmul_shapes`), so that each phase's GFLOP/s can be read as a fraction of the rate of
                its dtype; says whether this machine has native bf16 (`models/precision.py`).

The first `warmup` batches (PPO) or optimizer steps (RM, SFT) are run but not timed, as `bench/run_all.py`
does for the TRL peers, so both sides are measured over the same steady-state work. RM and SFT sequences all
have the same length, so tokens/s is exact whatever batches the shuffle makes. Beside wall-clock rates each
result gives the CPU-seconds of the timed part (`cpu_s`), which other processes on the machine barely change.

On a machine shared with other jobs, run with OMP_WAIT_POLICY=PASSIVE (`bench/run_all.py` sets it for both
sides): by default idle OpenMP workers spin, and with other processes on the cores that made PPO 3× slower
(generation 12×) in our measurements.
"""

from __future__ import annotations

import json
import random
import resource
import tempfile
import time
from contextlib import contextmanager
from dataclasses import asdict
from math import comb
from pathlib import Path

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook
from transformers import AutoModelForCausalLM, Qwen2Config

from rlhfkit.engines.core import make_engine
from rlhfkit.engines.options import check_engine
from rlhfkit.errors import UserError
from rlhfkit.models.loading import pick_device
from rlhfkit.models.precision import bf16_support, warn_if_emulated
from rlhfkit.models.scalar import ScalarModel
from rlhfkit.recipes.configs import BenchMatmulConfig, BenchPPOConfig, BenchTrainConfig, ModelShape
from rlhfkit.runtime.optim import make_optimizer, seed_everything, set_threads
from rlhfkit.train.async_rollouts import AsyncRollouts
from rlhfkit.train.configs import PPOConfig, RewardConfig, SFTConfig
from rlhfkit.train.distributed import Parallel
from rlhfkit.train.ppo import collect, ppo_iteration
from rlhfkit.train.ppo_setup import PPOModels, load_models
from rlhfkit.train.reward import train_reward_model
from rlhfkit.train.rollout import mean_stats, rollout_metrics
from rlhfkit.train.sft import train_sft
from rlhfkit.world.pretrain import base_config
from rlhfkit.world.tokenizer import build_tokenizer

# ------------------------------------------------------------------------------------ random world

def bench_tokenizer(vocab: int):
    """A word-level tokenizer of exactly `vocab` tokens: <pad>, <eos>, <unk> and the words w0, w1, ..."""
    if vocab < 8:
        raise UserError("config key 'vocab' must be at least 8")
    return build_tokenizer(f"w{i}" for i in range(vocab - 3))


def random_text(rng: random.Random, vocab: int, n: int) -> str:
    """n random words of the benchmark vocabulary: exactly n tokens."""
    return " ".join(f"w{rng.randrange(vocab - 3)}" for _ in range(n))


def gpt2_config(shape: ModelShape, tokenizer, n_positions: int):
    """The config of the random policy: GPT-2, or a Qwen2 of the shape (intermediate size 4864/896 of d, as
    Qwen2.5-0.5B's)."""
    if shape.dim % shape.heads:
        raise UserError("config key 'dim' must be a multiple of 'heads'")
    if shape.arch == "qwen2":
        kv_heads = shape.kv_heads or shape.heads
        if shape.heads % kv_heads:
            raise UserError("config key 'kv_heads' must divide 'heads'")
        return Qwen2Config(hidden_size=shape.dim, intermediate_size=shape.dim * 4864 // 896,
                           num_hidden_layers=shape.layers, num_attention_heads=shape.heads,
                           num_key_value_heads=kv_heads, max_position_embeddings=n_positions,
                           tie_word_embeddings=True, use_sliding_window=False, vocab_size=len(tokenizer),
                           bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                           pad_token_id=tokenizer.pad_token_id)
    if shape.arch != "gpt2":
        raise UserError(f"config key 'arch': expected gpt2 or qwen2, got {shape.arch!r}")
    return base_config("gpt2", tokenizer, shape.dim, shape.layers, shape.heads, n_positions=n_positions)


def save_random_policy(path: Path, shape: ModelShape, tokenizer, n_positions: int, seed: int) -> Path:
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(gpt2_config(shape, tokenizer, n_positions)).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def save_random_scalar(path: Path, policy_dir: Path, tokenizer, seed: int) -> Path:
    """A reward model as `rlhf rm` would start it: the policy's transformer with a fresh scalar head."""
    torch.manual_seed(seed)
    ScalarModel.from_backbone(policy_dir, tokenizer, seed=seed).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def forward_flops(shape: ModelShape, tokens: int, seq: int, logit_positions: int) -> float:
    """Matmul FLOPs of one forward pass of a GPT-2 backbone over `tokens` tokens of sequences of length `seq`,
    plus an LM head on `logit_positions` positions: 2·12·L·d² per token for the weights, 4·L·seq·d per token
    for attention (QKᵀ and AV), 2·d·V per logit (Kaplan et al. 2020, Table 1)."""
    d, L = shape.dim, shape.layers
    return tokens * (24 * L * d * d + 4 * L * seq * d) + logit_positions * 2 * d * shape.vocab


def model_matmul_shapes(shape: ModelShape, rows: int) -> list[tuple[int, int, int]]:
    """(m, k, n) of the weight matmuls of a transformer layer and the LM head over `rows` token positions, forward
    and backward: x·W is (rows, k, n) for W = d→3d (QKV), d→d (attention out), d→4d and 4d→d (MLP), d→V (head);
    backward multiplies dY·Wᵀ (rows, n, k) and Xᵀ·dY (k, rows, n). Attention's own QKᵀ and AV are left out: 4·seq·d
    of the 24·d² + 4·seq·d FLOPs per token and layer (5% at d = 256, seq = 80)."""
    d = shape.dim
    forward = [(rows, d, 3 * d), (rows, d, d), (rows, d, 4 * d), (rows, 4 * d, d), (rows, d, shape.vocab)]
    return [mkn for m, k, n in forward for mkn in ((m, k, n), (m, n, k), (k, m, n))]


def dtype_matmul_gflops(shapes: list[tuple[int, int, int]], dtype: torch.dtype, seconds: float) -> dict:
    """GFLOP/s of torch's matmul in `dtype` over `shapes` (each once per round, rounds for `seconds`, best of 3
    such runs), by the wall clock and per CPU-second (the latter barely moved by other processes' load)."""
    pairs = [(torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)) for m, k, n in shapes]
    flop = sum(2 * m * k * n for m, k, n in shapes)
    for a, b in pairs:  # warm-up: oneDNN picks and caches its kernels
        a @ b
    wall_rate = cpu_rate = 0.0
    for _ in range(3):
        rounds, t0, c0 = 0, time.perf_counter(), time.process_time()
        while rounds == 0 or time.perf_counter() - t0 < seconds:
            for a, b in pairs:
                a @ b
            rounds += 1
        wall, cpu = time.perf_counter() - t0, max(time.process_time() - c0, 1e-9)
        wall_rate, cpu_rate = max(wall_rate, flop * rounds / wall / 1e9), max(cpu_rate, flop * rounds / cpu / 1e9)
    return {"gflops": round(wall_rate, 1), "gflop_per_cpu_s": round(cpu_rate, 1)}


@contextmanager
def maybe_profile(path: str | None):
    if not path:
        yield
        return
    from pyinstrument import Profiler
    profiler = Profiler(interval=0.001)
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        Path(path).write_text(profiler.output_text(unicode=False, color=False, show_all=False), encoding="utf-8")


def emit(result: dict, as_json: bool, sentence: str) -> dict:
    print(json.dumps(result) if as_json else sentence, flush=True)
    return result


# ------------------------------------------------------------------------------------------- PPO

def bench_ppo(cfg: BenchPPOConfig) -> dict:

    for key in ("prompt", "resp", "batch", "episodes", "epochs", "layers", "dim", "heads"):
        if getattr(cfg, key) < 1:
            raise UserError(f"config key '{key}' must be at least 1")
    if cfg.episodes % cfg.batch:
        raise UserError("config key 'episodes' must be a multiple of 'batch'")
    if cfg.minibatch < 0 or cfg.batch % (cfg.minibatch or cfg.batch):
        raise UserError("config key 'minibatch' must divide 'batch'")
    check_engine(cfg.rollout_engine, cfg.vllm_gpu_memory, cfg.rollout_server)
    if cfg.async_rollouts and cfg.rollout_engine not in ("hf", "hf-static"):
        raise UserError("--async-rollouts runs with --rollout-engine hf or hf-static")
    if cfg.async_rollouts < 0:
        raise UserError("config key 'async_rollouts' must be at least 0")
    set_threads(cfg.threads)
    parallel = Parallel(pick_device(cfg.device), cfg.bf16)
    device = parallel.device
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("config key 'device': CUDA is not available on this machine")
    warn_if_emulated(cfg.bf16, device)
    generator = seed_everything(cfg.seed)
    tokenizer = bench_tokenizer(cfg.vocab)
    with tempfile.TemporaryDirectory(prefix="rlhf-bench-") as tmp:
        policy_dir = save_random_policy(Path(tmp) / "policy", cfg, tokenizer, cfg.prompt + cfg.resp, cfg.seed)
        reward_dir = save_random_scalar(Path(tmp) / "reward", policy_dir, tokenizer, cfg.seed + 1)
        ppo = PPOConfig(out=str(Path(tmp) / "run"), policy=str(policy_dir), reward=str(reward_dir), prompts="-",
                        batch_size=cfg.batch, minibatch_size=cfg.minibatch or cfg.batch, ppo_epochs=cfg.epochs,
                        max_new_tokens=cfg.resp, max_prompt_length=cfg.prompt, temperature=1.0,
                        async_rollouts=cfg.async_rollouts)
        # the word-level tokenizer itself: loaded back from a qwen2 directory, AutoTokenizer takes the model type's
        # own tokenizer class (BPE, no merges here), which encodes the words to nothing
        _, policy, reference, value_model, reward_model = load_models(ppo, device)
    for model in (policy, reference, value_model, reward_model.model):
        parallel.autocast(model)  # a no-op without --bf16, as in `rlhf ppo`
    optimizer = make_optimizer(list(policy.parameters()) + list(value_model.parameters()), ppo.lr, eps=ppo.adam_eps)
    engine = make_engine(cfg.rollout_engine, policy, tokenizer, max_len=cfg.prompt + cfg.resp,
                         gpu_memory=cfg.vllm_gpu_memory, seed=cfg.seed, server=cfg.rollout_server)
    rng = random.Random(cfg.seed)
    if cfg.async_rollouts:  # a snapshot samples the batches ahead, in a thread of its own; one batch more than the
        # run takes, so that the last timed iteration shares the machine with sampling, as every iteration of a run does
        engine = AsyncRollouts(policy, tokenizer, ppo, parallel, collect, lambda: [
            random_text(rng, cfg.vocab, cfg.prompt) for _ in range(cfg.batch)], list,
            cfg.warmup + cfg.episodes // cfg.batch + 1, ignore_eos=True)
    models = PPOModels(tokenizer, policy, policy, reference, value_model, value_model, reward_model, optimizer, engine)
    waits = {"rollout_wait_s": 0.0, "weight_wait_s": 0.0}
    sampler = torch.Generator(device=device).manual_seed(cfg.seed)
    clock_now = _clock(device)
    seconds = {"generation_s": 0.0, "scoring_s": 0.0, "update_s": 0.0, "logging_s": 0.0,
               "generation_cpu_s": 0.0, "scoring_cpu_s": 0.0, "update_cpu_s": 0.0, "sync_s": 0.0}

    def iteration(clock: dict) -> None:
        """`rlhf ppo`'s own iteration (train.ppo.ppo_iteration), every response to full length, timed by phase."""
        prompts = engine.next_batch() if cfg.async_rollouts else [random_text(rng, cfg.vocab, cfg.prompt)
                                                                  for _ in range(cfg.batch)]
        marks = [(clock_now(), time.process_time())]
        rollout, rewards, stats, _ = ppo_iteration(models, prompts, ppo, ppo.kl_coef, generator, sampler, parallel,
                                                   mark=lambda: marks.append((clock_now(), time.process_time())),
                                                   ignore_eos=True)  # 1–5 and the vllm sync
        marks.append((clock_now(), time.process_time()))
        _ = rollout_metrics(rollout, rewards, ppo.kl_coef) | mean_stats(stats)                      # what ppo logs
        t5 = clock_now()
        (t0, c0), (t1, c1), (t2, c2), (t3, c3), (t4, _) = marks
        for key, dt in zip(clock, (t1 - t0, t2 - t1, t3 - t2, t5 - t4, c1 - c0, c2 - c1, c3 - c2, t4 - t3)):
            clock[key] += dt
        if cfg.async_rollouts and clock is seconds:
            for key in waits:
                waits[key] += engine.metrics()[key]

    for _ in range(cfg.warmup):
        iteration(dict.fromkeys(seconds, 0.0))
    start, cpu_start = clock_now(), time.process_time()
    with maybe_profile(cfg.profile):
        for _ in range(cfg.episodes // cfg.batch):
            iteration(seconds)
    total, cpu = clock_now() - start, time.process_time() - cpu_start
    engine.close()

    seq = cfg.prompt + cfg.resp
    tokens = cfg.episodes * seq
    # scoring: policy and reference with the LM head on the R + 1 kept positions, value and reward backbones;
    # update: policy and value, forward + backward (≈ 3× forward), K epochs; generation: every position once (the
    # KV cache), the head on each new token (attention counted over the whole sequence: a slight overcount)
    with_head = forward_flops(cfg, tokens, seq, cfg.episodes * (cfg.resp + 1))
    backbone = forward_flops(cfg, tokens, seq, 0)
    flops = {"generation": forward_flops(cfg, tokens, seq, cfg.episodes * cfg.resp),
             "scoring": 2 * with_head + 2 * backbone, "update": 3 * cfg.epochs * (with_head + backbone)}
    result = {"bench": "ppo", "impl": "rlhfkit", **_shape(cfg), "prompt": cfg.prompt, "resp": cfg.resp,
              "batch": cfg.batch, "minibatch": cfg.minibatch or cfg.batch, "episodes": cfg.episodes,
              "epochs": cfg.epochs, "threads": torch.get_num_threads(),
              "episodes_per_s": round(cfg.episodes / total, 3),
              "resp_tokens_per_s": round(cfg.episodes * cfg.resp / total, 1),
              "rollout_engine": cfg.rollout_engine,
              "gen_tokens_per_s": round(cfg.episodes * cfg.resp / max(seconds["generation_s"], 1e-9), 1),
              "device": str(device), "bf16": cfg.bf16, "peak_rss_mb": round(peak_rss_mb(), 1),
              **({"peak_gpu_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)}
                 if device.type == "cuda" else {}),
              "total_s": round(total, 3), "cpu_s": round(cpu, 3), **{k: round(v, 3) for k, v in seconds.items()},
              "async_rollouts": cfg.async_rollouts, "iteration_s": round(total / (cfg.episodes // cfg.batch), 3),
              **({k: round(v, 3) for k, v in waits.items()} if cfg.async_rollouts else {}),
              **{f"{phase}_gflop": float(f"{f / 1e9:.4g}") for phase, f in flops.items()},
              **{f"{phase}_gflops_per_s": round(f / 1e9 / max(seconds[f"{phase}_s"], 1e-9), 2)
                 for phase, f in flops.items()},
              **{f"{phase}_gflop_per_cpu_s": round(f / 1e9 / max(seconds[f"{phase}_cpu_s"], 1e-9), 2)
                 for phase, f in flops.items()}}
    return emit(result, cfg.json, f"bench ppo: {result['episodes_per_s']} episodes/s "
                f"({result['resp_tokens_per_s']} response tokens/s), generation {result['generation_s']} s, "
                f"scoring {result['scoring_s']} s, update {result['update_s']} s, sync {result['sync_s']} s, "
                f"generation {result['gen_tokens_per_s']} tokens/s ({cfg.rollout_engine}), "
                f"peak RSS {result['peak_rss_mb']} MB")


def _clock(device: torch.device):
    """time.perf_counter, after the device's queued work has finished (CUDA kernels run asynchronously)."""
    if device.type != "cuda":
        return time.perf_counter

    def now() -> float:
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return now


def _shape(cfg: ModelShape) -> dict:
    return {k: getattr(cfg, k) for k in asdict(ModelShape())}


# ------------------------------------------------------------------------------------- RM and SFT

def write_pairs(path: Path, cfg: BenchTrainConfig) -> Path:
    """Preference data, every sequence `prompt + completion + 1` tokens long: (prompt, chosen, rejected) records
    when k = 2, else rankings of k outputs in a strict order (each gives C(k,2) pairs)."""
    rng = random.Random(cfg.seed)
    rows = []
    for i in range(cfg.examples):
        prompt = random_text(rng, cfg.vocab, cfg.prompt)
        outputs = [random_text(rng, cfg.vocab, cfg.completion) for _ in range(cfg.k)]
        rows.append({"prompt": prompt, "chosen": outputs[0], "rejected": outputs[1]} if cfg.k == 2 else
                    {"id": f"r{i}", "prompt": prompt, "completions": outputs, "ranking": [[j] for j in range(cfg.k)],
                     "labeler": "bench"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def write_demos(path: Path, cfg: BenchTrainConfig) -> Path:
    """(prompt, completion) records, every sequence `prompt + completion + 1` tokens long."""
    rng = random.Random(cfg.seed)
    rows = [{"prompt": random_text(rng, cfg.vocab, cfg.prompt),
             "completion": random_text(rng, cfg.vocab, cfg.completion)} for _ in range(cfg.examples)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@contextmanager
def step_clock():
    """(wall, CPU) seconds at the end of every optimizer step taken inside the block (a global step hook)."""
    ends: list[tuple[float, float]] = []
    handle = register_optimizer_step_post_hook(
        lambda *_: ends.append((time.perf_counter(), time.process_time())))
    try:
        yield ends
    finally:
        handle.remove()


def _bench_training(cfg: BenchTrainConfig, kind: str) -> dict:
    for key in ("prompt", "completion", "examples", "batch", "layers", "dim", "heads", "warmup"):
        if getattr(cfg, key) < 1:
            raise UserError(f"config key '{key}' must be at least 1")
    if cfg.k < 2:
        raise UserError("config key 'k' must be at least 2")
    timed_steps = cfg.examples // cfg.batch - cfg.warmup  # full batches only: the last one may be short
    if timed_steps < 1:
        raise UserError("config keys 'examples', 'batch', 'warmup': no full optimizer step left to time")
    set_threads(cfg.threads)
    warn_if_emulated(cfg.bf16, pick_device("auto"))  # the trainers' device
    seq = cfg.prompt + cfg.completion + 1
    with tempfile.TemporaryDirectory(prefix="rlhf-bench-") as tmp:
        tmp = Path(tmp)
        tokenizer = bench_tokenizer(cfg.vocab)
        model = cfg.model or str(save_random_policy(tmp / "model", cfg, tokenizer, seq, cfg.seed))
        common = dict(model=model, out=str(tmp / "run"), eval_fraction=0.0, epochs=1, batch_size=cfg.batch,
                      max_length=seq, seed=cfg.seed, threads=cfg.threads, bf16=cfg.bf16)
        if kind == "rm":
            Config, train = RewardConfig, train_reward_model
            data = cfg.data or str(write_pairs(tmp / "pairs.jsonl", cfg))
            seqs_per_step = cfg.k * cfg.batch   # the distinct outputs of each ranking, each scored once
        else:
            Config, train = SFTConfig, train_sft
            data = cfg.data or str(write_demos(tmp / "demos.jsonl", cfg))
            seqs_per_step = cfg.batch
        with step_clock() as ends, maybe_profile(cfg.profile):
            train(Config(data=data, **common))
    (wall0, cpu0), (wall1, cpu1) = ends[cfg.warmup - 1], ends[cfg.warmup + timed_steps - 1]
    tokens = timed_steps * seqs_per_step * seq
    flops = 3 * forward_flops(cfg, tokens, seq, tokens if kind == "sft" else 0)
    result = {"bench": kind, "impl": "rlhfkit", **_shape(cfg), "seq": seq, "batch": cfg.batch,
              **({"k": cfg.k, "pairs_per_s": round(timed_steps * cfg.batch * comb(cfg.k, 2) / (wall1 - wall0), 1)}
                 if kind == "rm" else {}),
              "timed_steps": timed_steps, "threads": torch.get_num_threads(),
              "tokens_per_s": round(tokens / (wall1 - wall0), 1), "seconds": round(wall1 - wall0, 3),
              "cpu_s": round(cpu1 - cpu0, 3), "peak_rss_mb": round(peak_rss_mb(), 1), "bf16": cfg.bf16,
              "gflop_per_cpu_s": round(flops / 1e9 / (cpu1 - cpu0), 2),
              "gflops_per_s": round(flops / 1e9 / (wall1 - wall0), 2)}
    return emit(result, cfg.json, f"bench {kind}: {result['tokens_per_s']} tokens/s over {timed_steps} steps, "
                f"peak RSS {result['peak_rss_mb']} MB")


def bench_rm(cfg: BenchTrainConfig) -> dict:
    return _bench_training(cfg, "rm")


def bench_sft(cfg: BenchTrainConfig) -> dict:
    return _bench_training(cfg, "sft")


# ----------------------------------------------------------------------------------------- matmul

def bench_matmul(cfg: BenchMatmulConfig) -> dict:
    for key in ("layers", "dim", "heads", "vocab"):
        if getattr(cfg, key) < 1:
            raise UserError(f"config key '{key}' must be at least 1")
    if not cfg.rows or min(cfg.rows) < 1:
        raise UserError("config key 'rows': give one or more positive row counts")
    if cfg.seconds <= 0:
        raise UserError("config key 'seconds' must be > 0")
    set_threads(cfg.threads)
    support = bf16_support("cpu")
    rates = [{"rows": rows, **{name: dtype_matmul_gflops(model_matmul_shapes(cfg, rows), dtype, cfg.seconds)
                               for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16))}}
             for rows in cfg.rows]
    result = {"bench": "matmul", **_shape(cfg), "threads": torch.get_num_threads(), "bf16_native": support.native,
              "bf16_found": support.found, "rates": rates}
    return emit(result, cfg.json, f"bench matmul (d={cfg.dim}, {support.reason}): " + "; ".join(
        f"{r['rows']} rows: float32 {r['float32']['gflops']}, bfloat16 {r['bfloat16']['gflops']} GFLOP/s "
        f"({r['float32']['gflop_per_cpu_s']}, {r['bfloat16']['gflop_per_cpu_s']} per CPU-s)" for r in rates))
