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
        kl_coef: float, save_every: int, seed: int, reference: Path | None = None, threads: int = 0,
        **options) -> dict:
    """`rlhf ppo`; `options` are further PPOConfig fields, e.g. advantage="rloo", rloo_k=4 for RLOO."""
    from rlhfkit.train.ppo import PPOConfig, train_ppo
    return quiet(train_ppo, PPOConfig(policy=str(policy), reference=str(reference) if reference else None,
                                      reward=str(reward), prompts=str(world.train_prompts_path), out=str(out),
                                      world=str(world.path), steps=steps, batch_size=batch, minibatch_size=minibatch,
                                      lr=lr, kl_coef=kl_coef, max_new_tokens=world.response_limit,
                                      save_every=save_every, seed=seed, threads=threads, overwrite=True, **options))


def dpo(policy: Path, rankings: Path, out: Path, *, beta: float, lr: float, epochs: int, save_every: int, seed: int,
        threads: int = 0) -> dict:
    """`rlhf dpo` on the reward model's rankings (and its held-out split)."""
    from rlhfkit.train.dpo import DPOConfig, train_dpo
    return quiet(train_dpo, DPOConfig(policy=str(policy), data=str(rankings), out=str(out), beta=beta, lr=lr,
                                      epochs=epochs, save_every=save_every, seed=seed, threads=threads,
                                      overwrite=True))


def sft_and_reward_model(world, out: Path, plan, *, seed: int, threads: int, say: Progress) -> dict:
    """Steps 1–2, shared by every method that follows: SFT on the world's demonstrations (OUT/sft), K samples per
    prompt from it, simulated rankings (OUT/rankings.jsonl) and the reward model (OUT/rm). `plan` is a preset's
    `demo.Plan`. Returns the stages' summaries and wall times."""
    clock = time.time()
    say(f"seed {seed}: 1. SFT on {len(world.demos())} demonstrations")
    sft_summary = sft(world, out / "sft", epochs=plan.sft_epochs, lr=plan.sft_lr, seed=seed, threads=threads)
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
                      seed=seed, threads=threads)
    wall["rm"] = time.time() - clock
    say(f"seed {seed}:    held-out accuracy {rm['heldout_accuracy']:.3f}, noise ceiling {rm['noise_ceiling']:.3f} "
        f"({rm['n_pairs']} comparisons)")
    return {"sft": sft_summary, "rankings": len(rankings), "rm": rm,
            "wall_s": {k: round(v, 1) for k, v in wall.items()}}


def agreement(rankings: Path) -> float | None:
    from rlhfkit.data.pairs import read_preferences
    from rlhfkit.eval.rm import labeler_agreement
    return labeler_agreement(read_preferences(rankings))["labeler_agreement"]
