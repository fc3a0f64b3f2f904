"""The stages of the RLHF loop as calls of the commands' own library functions (used by `rlhf demo` and `rlhf loop`).

Each stage builds the same config the command line would and runs the command's function, so the demo is
literally `rlhf sft`, `rlhf sample`, `rlhf label simulate`, `rlhf rm` and `rlhf ppo` in a row; each stage's
own summary goes to its run directory, not to the terminal.
"""

from __future__ import annotations

import contextlib
import io
import time
from pathlib import Path


class Progress:
    """One line per stage, with the wall time since the run started."""

    def __init__(self):
        self.start = time.time()

    def __call__(self, message: str) -> None:
        print(f"[{time.time() - self.start:6.0f}s] {message}", flush=True)


def quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def sft(world, out: Path, *, epochs: int, lr: float, seed: int, threads: int = 0) -> dict:
    from rlhfkit.train.sft import SFTConfig, train_sft
    return quiet(train_sft, SFTConfig(model=str(world.base), data=str(world.demos_path), out=str(out), epochs=epochs,
                                      lr=lr, seed=seed, threads=threads, overwrite=True))


def sample(models: list[Path], prompts: Path, out: Path, *, k: int, temperatures, limit: int, max_new_tokens: int,
           seed: int, offset: int = 0, id_prefix: str = "") -> list[dict]:
    """K candidates for `limit` prompts, starting at `offset` of the prompts file (wrapping around); item ids get
    `id_prefix` so that the rounds of the online loop never share one."""
    from rlhfkit.data.jsonl import read_jsonl, write_jsonl
    from rlhfkit.data.schemas import prompt_record
    from rlhfkit.sampling import SampleConfig, sample_candidates

    if offset or id_prefix:
        records = read_jsonl(prompts, prompt_record)
        chosen = [records[(offset + i) % len(records)] for i in range(min(limit, len(records)))]
        prompts = out.with_name(out.stem + "-prompts.jsonl")
        write_jsonl(prompts, ({**r, "id": f"{id_prefix}{r.get('id', n)}"} for n, r in enumerate(chosen)))
    return quiet(sample_candidates, SampleConfig(models=[str(m) for m in models], prompts=str(prompts), out=str(out),
                                                 k=k, temperatures=list(temperatures), limit=limit,
                                                 max_new_tokens=max_new_tokens, seed=seed))


def simulate(world_dir: Path, candidates: Path, out: Path, *, labelers: int, per_item: int, seed: int) -> list[dict]:
    from rlhfkit.world.simulate import SimulateConfig, simulate_labels
    return quiet(simulate_labels, SimulateConfig(world=str(world_dir), candidates=str(candidates), out=str(out),
                                                 labelers=labelers, per_item=per_item, seed=seed))


def reward_model(policy: Path, data: Path, out: Path, world, *, lr: float, epochs: int, seed: int,
                 threads: int = 0) -> dict:
    from rlhfkit.train.reward import RewardConfig, train_reward_model
    return quiet(train_reward_model, RewardConfig(model=str(policy), data=str(data), out=str(out),
                                                  demos=str(world.demos_path), world=str(world.path), lr=lr,
                                                  epochs=epochs, seed=seed, threads=threads, overwrite=True))


def ppo(policy: Path, reward: Path, world, out: Path, *, steps: int, batch: int, minibatch: int, lr: float,
        kl_coef: float, save_every: int, seed: int, reference: Path | None = None, threads: int = 0) -> dict:
    from rlhfkit.train.ppo import PPOConfig, train_ppo
    return quiet(train_ppo, PPOConfig(policy=str(policy), reference=str(reference) if reference else None,
                                      reward=str(reward), prompts=str(world.train_prompts_path), out=str(out),
                                      world=str(world.path), steps=steps, batch_size=batch, minibatch_size=minibatch,
                                      lr=lr, kl_coef=kl_coef, max_new_tokens=world.response_limit,
                                      save_every=save_every, seed=seed, threads=threads, overwrite=True))


def agreement(rankings: Path) -> float | None:
    from rlhfkit.data.pairs import read_preferences
    from rlhfkit.eval.rm import labeler_agreement
    return labeler_agreement(read_preferences(rankings))["labeler_agreement"]
