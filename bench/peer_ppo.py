"""The peer of `rlhf bench ppo`: the same PPO work done by TRL's `trl.experimental.ppo.PPOTrainer`.

Run under .venv-peer (bench/run_all.py does). Same shapes as ours: separate policy, reference, value and
reward GPT-2 models (reward and value: `GPT2ForSequenceClassification` with one label, the layout TRL reads
through `base_model_prefix` + `score`), temperature 1.0, one minibatch per batch, every response generated to
full length (no stop token). TRL's defaults that would change the work are set to match ours: fp32 instead of
bf16 autocast (unless --bf16 asks for it on both sides), no gradient checkpointing, no sample generations.
Timing starts after the `warmup` iterations, at the end of a step (TRL's `on_step_end` callback), as
`rlhf bench ppo` does. `--device cuda` runs it on the GPU; clocks are read after a CUDA synchronize.
"""

from __future__ import annotations

import argparse
import copy
import random
import tempfile
import time

import torch

from peer_common import (
    StepClock,
    emit,
    gpt2_config,
    peak_rss_mb,
    qwen2_config,
    setup_threads,
    shape_arguments,
    tokenizer,
    trl_version,
)


def main() -> None:
    parser = shape_arguments(argparse.ArgumentParser(description=__doc__))
    for name, default in (("prompt", 16), ("resp", 32), ("batch", 64), ("episodes", 256), ("epochs", 4),
                          ("warmup", 1)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--minibatch", type=int, default=0, help="episodes per gradient step (0: the whole batch)")
    parser.add_argument("--forward-batch", type=int, default=0,
                        help="TRL's local_rollout_forward_batch_size: rows per generation / scoring chunk (0: batch)")
    parser.add_argument("--arch", choices=("gpt2", "qwen2"), default="gpt2")
    parser.add_argument("--kv-heads", type=int, default=0, help="qwen2: key/value heads (0: as many as --heads)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--bf16", action="store_true", help="TRL's bf16 mixed precision (as `rlhf bench ppo --bf16`)")
    args = parser.parse_args()
    if args.warmup < 1:
        raise SystemExit("--warmup must be at least 1 (the clock starts at the end of a step)")
    setup_threads(args.threads)

    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo import ppo_trainer as trl_ppo

    tok = tokenizer(args.vocab)
    n_positions = args.prompt + args.resp
    torch.manual_seed(args.seed)
    config = qwen2_config if args.arch == "qwen2" else gpt2_config
    policy = AutoModelForCausalLM.from_config(config(args, tok, n_positions))
    reference = copy.deepcopy(policy)
    torch.manual_seed(args.seed + 1)
    reward = AutoModelForSequenceClassification.from_config(config(args, tok, n_positions, num_labels=1))
    value = copy.deepcopy(reward)
    rng = random.Random(args.seed)
    n_batches = args.warmup + args.episodes // args.batch
    prompts = [[rng.randrange(3, args.vocab) for _ in range(args.prompt)] for _ in range(n_batches * args.batch)]
    train = Dataset.from_dict({"input_ids": prompts})

    def now() -> float:  # CUDA kernels run asynchronously: wait for them before reading the clock
        if args.device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter()

    generation = {"seconds": 0.0, "calls": 0, "widths": set()}
    batch_generation = trl_ppo.batch_generation

    def timed_generation(*a, **kw):  # TRL looks the function up in its module at call time
        start = now()
        out = batch_generation(*a, **kw)
        generation["seconds"] += now() - start
        generation["calls"] += 1
        generation["widths"].add(out[0].shape[1] - args.prompt)
        return out
    trl_ppo.batch_generation = timed_generation

    clock = StepClock()
    with tempfile.TemporaryDirectory(prefix="trl-ppo-") as out:
        config = PPOConfig(output_dir=out, per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
                           num_mini_batches=args.batch // (args.minibatch or args.batch),
                           num_ppo_epochs=args.epochs, total_episodes=n_batches * args.batch,
                           local_rollout_forward_batch_size=args.forward_batch or args.batch,
                           response_length=args.resp, temperature=1.0,
                           stop_token=None, kl_coef=0.05, learning_rate=3e-5, num_sample_generations=0,
                           bf16=args.bf16, fp16=False, gradient_checkpointing=False, use_cpu=args.device == "cpu",
                           report_to="none",
                           save_strategy="no", logging_steps=10**9, disable_tqdm=True, seed=args.seed,
                           dataloader_num_workers=0)
        trainer = PPOTrainer(args=config, processing_class=tok, model=policy, ref_model=reference,
                             reward_model=reward, value_model=value, train_dataset=train, eval_dataset=train,
                             callbacks=[clock])
        trainer.train()
    assert generation["widths"] == {args.resp}, f"responses not generated to full length: {generation['widths']}"
    (wall0, cpu0), (wall1, cpu1) = clock.ends[args.warmup - 1], clock.ends[-1]
    total = wall1 - wall0
    episodes = (len(clock.ends) - args.warmup) * args.batch
    emit({"bench": "ppo", "impl": f"trl-{trl_version()}", "arch": args.arch, "layers": args.layers, "dim": args.dim,
          "heads": args.heads, "vocab": args.vocab, "prompt": args.prompt, "resp": args.resp, "batch": args.batch,
          "episodes": episodes, "epochs": args.epochs, "threads": torch.get_num_threads(),
          "episodes_per_s": round(episodes / total, 3), "resp_tokens_per_s": round(episodes * args.resp / total, 1),
          "device": args.device, "bf16": args.bf16, "peak_rss_mb": round(peak_rss_mb(), 1),
          **({"peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)} if args.device == "cuda" else {}),
          "total_s": round(total, 3), "cpu_s": round(cpu1 - cpu0, 3),
          "generation_s_all_iterations": round(generation["seconds"], 3),
          "gen_tokens_per_s": round(len(clock.ends) * args.batch * args.resp / max(generation["seconds"], 1e-9), 1)})


if __name__ == "__main__":
    main()
