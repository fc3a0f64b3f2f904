"""Asynchronous rollouts (`rlhf ppo --async-rollouts K`): batch j + 1 is sampled while batch j trains.

A thread of its own holds a snapshot copy of the policy and its own rollout engine (hf or hf-static) over it, and
samples the batches ahead of the trainer (one-step off-policy with K = 1, as verl's and NeMo RL's async modes). The
schedule is fixed, so the run is deterministic for a given seed and K:

    version v     the policy after v updates (v = 0: the start)
    batch j       sampled by version  v(j) = max(0, j − 1 − K)   (j = 1, 2, …)
    its update    runs at version j − 1, so the batch is  s(j) = j − 1 − v(j) = min(j − 1, K)  versions stale

The snapshot is refreshed exactly when the bound needs it: after update v the trainer copies its trained weights
(with LoRA: the adapters) for batch v + 1 + K, which the thread loads before sampling that batch; it never samples
from weights fresher or staler than the schedule says. The prompts of batch j are drawn by the trainer, in its own
thread, at a fixed point of its loop (K + 1 batches at the start, then one after each update), and the thread draws
its sampling noise from its own sampler (seeded with --seed), so two runs with the same seed and K give the same
rollouts and the same metrics whatever the threads' timing.

π_θk of PPO's ratio and KL stays the trainer's own (`ppo.measure` scores the batch with the current weights); the
behaviour policy is now the snapshot, so the thread fills `Samples.engine_logp` with log π_{v(j)}(y_t) at the
sampling temperature — the log-probs the snapshot sampled from — and the engine importance weight π_θk / π_behaviour
(losses.py "engine importance weights", --engine-is; TIS by default with async) corrects the staleness
(docs/design.md §10: staleness is the same correction as an engine that is not the trainer).

Logged per iteration (`metrics`): `staleness` s(j), `rollout_wait_s` (seconds the trainer waited for batch j),
`weight_wait_s` (seconds the thread waited for the weights and prompts of batch j) and `rollout_s` (the thread's
seconds sampling and scoring batch j).

With N processes (DDP) each process's thread samples its share of every batch as `rollout.generate_share` does,
agreeing on decoding steps over a process group of the threads' own, so their collectives never interleave with the
trainer's. A checkpoint (--checkpoint-every) first lets the thread finish the batches already drawn and saves them
with the thread's sampler, so --resume goes on exactly as the uninterrupted run (one process; with N processes a
checkpoint would hold process 0's shares only, and is refused in the config's check).

Memory: the snapshot (one copy of the policy) and up to K copies of its trained weights waiting for the thread.
On CUDA the thread runs on a stream of its own. Refused in one line (train/configs.py): --rollout-engine vllm or
server (their engines would need a second copy of their own), --fsdp (the snapshot needs the whole policy),
--environment (multi-turn trajectories), and --checkpoint-every/--resume with several processes.

Speed: the trainer stops waiting for generation, but the thread shares the device. On 2 CPU cores it paid 1.07×
with one torch thread per role and lost (0.60×) with two, where the synchronous loop already keeps both cores busy
(bench/RESULTS.md "Asynchronous rollouts").
"""

from __future__ import annotations

import contextlib
import copy
import queue
import threading
import time
from dataclasses import dataclass, fields

import torch
import torch.distributed as dist

from rlhfkit.engines.core import make_engine
from rlhfkit.generation import Samples
from rlhfkit.models.policy import scored_responses
from rlhfkit.models.precision import AUTOCAST_MARK, autocast_model


def behaviour_version(batch: int, k: int) -> int:
    """v(j) = max(0, j − 1 − K): the policy version that samples batch j (1 = the first) K versions stale at most."""
    return max(0, batch - 1 - k)


@dataclass
class Job:
    batch: int                  # j (1 = the first batch)
    payload: object             # what `draw` returned for it (PPO: the prompts' rows)
    prompts: list
    version: int                # v(j)
    weights: dict | None        # version v(j)'s trained parameters (None: the snapshot holds them already)


@dataclass
class Done:
    job: Job
    samples: Samples
    weight_wait_s: float
    rollout_s: float


class AsyncRollouts:
    """The rollout engine of `rlhf ppo --async-rollouts K`: `next_batch()` gives the payload of the next batch (drawn
    ahead), `generate(prompts)` its samples (sampled ahead by the snapshot), `sync(policy)` publishes the weights of
    an update, `metrics()` what to log about the batch just taken. `state_dict`/`load_state_dict` for checkpoints.

    `collect(engine, tokenizer, prompts, cfg, generator, parallel, ignore_eos)` is PPO's step 1 (`ppo.collect`);
    `draw()` the payload of a new batch and `prompts_of(payload)` its prompts; `steps` the batches of the run."""

    def __init__(self, policy, tokenizer, cfg, parallel, collect, draw, prompts_of, steps: int,
                 ignore_eos: bool = False):
        # a tokenizer of its own: a fast tokenizer's settings (truncation, padding) are state that one thread's call
        # may change while the other encodes ("Already borrowed")
        self.k, self.cfg, self.tokenizer, self.collect = cfg.async_rollouts, cfg, copy.deepcopy(tokenizer), collect
        self.draw, self.prompts_of, self.steps, self.ignore_eos = draw, prompts_of, steps, ignore_eos
        self.device = next(policy.parameters()).device
        self.trained = [name for name, p in policy.named_parameters() if p.requires_grad]
        self.snapshot = snapshot_of(policy)
        self.engine = make_engine(cfg.rollout_engine, self.snapshot, self.tokenizer,
                                  max_len=cfg.max_prompt_length + cfg.max_new_tokens)
        self.name = self.engine.name
        self.sampler = torch.Generator(device=self.device).manual_seed(cfg.seed)  # the thread's own
        self.group = ThreadGroup(parallel) if parallel.world_size > 1 else None
        self.threads = torch.get_num_threads()
        self.jobs: queue.Queue = queue.Queue()
        self.drawn: dict[int, Job] = {}  # drawn, not yet taken by the trainer
        self.done: dict[int, Done] = {}
        self.error: BaseException | None = None
        self.ready = threading.Condition()
        self.submitted, self.taken, self.last, self.thread = 0, 0, None, None

    # ----------------------------------------------------------------------------------- the trainer's side

    def next_batch(self):
        """The payload of the batch the trainer takes next (starting the thread at the first call)."""
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="async-rollouts", daemon=True)
            self.thread.start()
            while self.submitted < min(self.k + 1, self.steps):  # batches 1 … K + 1: all sampled by version 0
                self._submit(None)
        return self.drawn[self.taken + 1].payload

    def generate(self, prompts: list, **_options) -> Samples:
        """The samples of the next batch, waiting for the thread if it has not finished them (`prompts`: that batch's,
        checked). The options are the run's, which the thread samples with already."""
        start = time.perf_counter()
        batch = self.taken + 1
        with self.ready:
            while batch not in self.done and self.error is None:
                self.ready.wait()
            if self.error is not None:
                raise self.error
            done = self.done.pop(batch)
        if done.job.prompts != list(prompts):
            raise RuntimeError(f"async rollouts: batch {batch} was drawn with other prompts than the trainer's")
        self.taken, self.last = batch, (done, time.perf_counter() - start)
        del self.drawn[batch]
        samples = done.samples
        if self.device.type == "cuda":  # sampled on the thread's stream, read and freed on the trainer's
            for t in (samples.prompt_ids, samples.prompt_mask, samples.response_ids, samples.response_mask,
                      samples.finished, samples.engine_logp):
                t.record_stream(torch.cuda.current_stream(self.device))
        return samples

    def sync(self, policy) -> float:
        """After update v (= the batches taken): the weights of version v for batch v + 1 + K, with its prompts."""
        start = time.perf_counter()
        if self.submitted < self.steps:
            params = dict(policy.named_parameters())
            with torch.no_grad():
                weights = {name: params[name].detach().clone() for name in self.trained}
            if self.device.type == "cuda":  # the copies complete before the thread's stream reads them
                torch.cuda.current_stream(self.device).synchronize()
            self._submit(weights)
        return time.perf_counter() - start

    def metrics(self) -> dict:
        """What PPO logs about the batch just taken."""
        done, waited = self.last
        return {"staleness": done.job.batch - 1 - done.job.version, "rollout_wait_s": waited,
                "weight_wait_s": done.weight_wait_s, "rollout_s": done.rollout_s}

    def close(self) -> None:
        if self.thread is not None:
            self.jobs.put(None)
            self.thread.join()
            self.thread = None

    def _submit(self, weights: dict | None) -> None:
        batch = self.submitted + 1
        payload = self.draw()
        job = Job(batch, payload, list(self.prompts_of(payload)), behaviour_version(batch, self.k), weights)
        if weights is not None and job.version != self.taken:
            raise RuntimeError(f"async rollouts: batch {batch} needs version {job.version}, not {self.taken}")
        self.drawn[batch] = job
        self.submitted = batch
        self.jobs.put(job)

    # ------------------------------------------------------------------------------------ the thread's side

    def _run(self) -> None:
        try:
            torch.set_num_threads(self.threads)  # this thread's own OpenMP team, as large as the trainer's
            with self._stream():
                while True:
                    waiting = time.perf_counter()
                    job = self.jobs.get()
                    if job is None:
                        return
                    weight_wait = time.perf_counter() - waiting
                    start = time.perf_counter()
                    if job.weights is not None:
                        self._load(job.weights)
                        job.weights = None
                    samples = self._sample(job.prompts)
                    if self.device.type == "cuda":
                        torch.cuda.current_stream(self.device).synchronize()
                    with self.ready:
                        self.done[job.batch] = Done(job, samples, weight_wait, time.perf_counter() - start)
                        self.ready.notify_all()
        except BaseException as exc:  # raised in the trainer at its next `generate`
            with self.ready:
                self.error = exc
                self.ready.notify_all()

    def _stream(self):
        if self.device.type != "cuda":
            return contextlib.nullcontext()
        torch.cuda.set_device(self.device)  # the current device is per thread
        return torch.cuda.stream(torch.cuda.Stream(self.device))

    @torch.no_grad()
    def _load(self, weights: dict) -> None:
        params = dict(self.snapshot.named_parameters())
        for name, value in weights.items():
            params[name].copy_(value)

    @torch.no_grad()
    def _sample(self, prompts: list) -> Samples:
        """Step 1 of PPO by the snapshot, and log π_snapshot of each sampled token at the sampling temperature."""
        samples = self.collect(self.engine, self.tokenizer, prompts, self.cfg, self.sampler, self.group,
                               self.ignore_eos)
        logp, _ = scored_responses(self.snapshot, samples.input_ids, samples.attention_mask,  # as `ppo.measure`
                                   samples.prompt_ids.shape[1], self.cfg.temperature, self.cfg.packing)  # scores π_θk
        samples.engine_logp = logp * samples.response_mask
        return samples

    # ------------------------------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        """The batches already drawn, each sampled to the end (the thread finishes them first), and the thread's
        sampler: what a resumed run needs to go on as this one."""
        self.next_batch()  # a checkpoint before the first batch: the first K + 1 drawn, as the run would
        with self.ready:
            while len(self.done) < self.submitted - self.taken and self.error is None:
                self.ready.wait()
            if self.error is not None:
                raise self.error
            batches = [{"batch": d.job.batch, "payload": d.job.payload, "prompts": d.job.prompts,
                        "version": d.job.version, "weight_wait_s": d.weight_wait_s, "rollout_s": d.rollout_s,
                        "samples": {f.name: getattr(d.samples, f.name) for f in fields(Samples)}}
                       for d in sorted(self.done.values(), key=lambda d: d.job.batch)]
        return {"k": self.k, "taken": self.taken, "submitted": self.submitted, "sampler": self.sampler.get_state(),
                "batches": batches}

    def load_state_dict(self, state: dict) -> None:
        if state["k"] != self.k:
            raise ValueError(f"the checkpoint's --async-rollouts is {state['k']}, this run's {self.k}")
        self.taken, self.submitted = state["taken"], state["submitted"]
        self.sampler.set_state(state["sampler"])
        for b in state["batches"]:
            job = Job(b["batch"], b["payload"], b["prompts"], b["version"], None)
            samples = Samples(**{k: v.to(self.device) if isinstance(v, torch.Tensor) else v
                                 for k, v in b["samples"].items()})
            self.drawn[job.batch] = job
            self.done[job.batch] = Done(job, samples, b["weight_wait_s"], b["rollout_s"])
        self.thread = threading.Thread(target=self._run, name="async-rollouts", daemon=True)
        self.thread.start()


class ThreadGroup:
    """What `rollout.generate_share` asks of `Parallel` — this process's rows and the longest decoding loop of all
    processes — over a process group of the sampling threads' own: their collectives never interleave with the
    trainer's (DDP's all-reduces, the metrics' reductions), which run at the same time in the other thread."""

    def __init__(self, parallel):
        self.parallel, self.rank, self.world_size = parallel, parallel.rank, parallel.world_size
        self.group = dist.new_group(backend=dist.get_backend())  # every process, in the same order

    def shard_range(self, n: int) -> range:
        return self.parallel.shard_range(n)

    def highest(self, values: dict[str, float]) -> dict[str, float]:
        keys = list(values)
        tensor = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=self.parallel.device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self.group)
        return dict(zip(keys, tensor.tolist()))


def snapshot_of(policy: torch.nn.Module) -> torch.nn.Module:
    """A copy of the policy that samples (no gradients), under bf16 autocast when the policy is. A deep copy keeps
    the functions set on instances — autocast's forward, which calls the original's: they are set up afresh."""
    snapshot = copy.deepcopy(policy)
    for module in snapshot.modules():
        module.__dict__.pop("forward", None)
        module.__dict__.pop(AUTOCAST_MARK, None)
    if getattr(policy, AUTOCAST_MARK, False):
        autocast_model(snapshot, next(policy.parameters()).device.type)
    return snapshot.eval().requires_grad_(False)
