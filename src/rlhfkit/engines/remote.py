"""The `server` engine: a trainer's side of a rollout server (`rlhf rollout-serve`, `engines/server.py`).

The trainer sends token ids and gets token ids and their log-probs back over HTTP (JSON); the weights go the other
way, after each update, as broadcasts over a process group of two, the trainer's process 0 and the server
(`engines/weights.WeightsGroup`). The protocol, each call a POST:

  /connect   process 0, once: the server starts a session (a fresh weights group) and says which backend the group
             uses; both sides join the group; the policy's weights are pushed at once (`sync`), so the server serves
             the trainer's weights from the first batch on (a resumed run's, a LoRA policy's merged ones).
  /weights   process 0, after each update: the names, dtypes and shapes; then one broadcast per tensor; the server
             reloads vLLM and answers with the new weights version.
  /generate  every process, its own share of the batch: rows of prompt ids, one seed per row (`draw_seeds`), the
             sampling options and the weights version it expects — the server waits until it serves that version,
             so a process never samples from the weights before the update, whichever process's call comes first.
  /close     process 0, at the end.

With N trainer processes each samples its rows of the global batch as the `vllm` engine does (`generate_share`:
the seeds of the whole batch drawn everywhere, each process keeping its rows'), so N processes sample what one does.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import torch
import torch.distributed as dist

from rlhfkit.data.chat import is_conversation, stop_ids
from rlhfkit.engines.options import split_address
from rlhfkit.engines.vllm_engine import draw_seeds, to_samples
from rlhfkit.engines.weights import WeightsGroup, describe, full_weights
from rlhfkit.errors import UserError
from rlhfkit.generation import Samples, prompt_rows

REQUEST_TIMEOUT = 3600.0  # seconds: a call waits for the server's engine (a long batch, a weights update)


def post(url: str, path: str, body: dict) -> dict:
    """POST `body` as JSON; the answer's JSON. A server that is not there, or that refuses the request (its
    `detail`), is one line naming it."""
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT) as reply:
            return json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("detail", exc.reason)
        raise UserError(f"rollout server {url}: {detail}") from None
    except (urllib.error.URLError, ConnectionError) as exc:
        raise UserError(f"--rollout-server {url.removeprefix('http://')}: no rollout server answers "
                        f"({getattr(exc, 'reason', exc)}); start one with `rlhf rollout-serve --model DIR`") from None


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _share(value):
    """Process 0's `value` in every trainer process (the trainers' own group, when there is one)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


class ServerEngine:
    name = "server"

    def __init__(self, model, tokenizer, *, address: str | None, max_len: int):
        host, port = split_address(address)
        self.url, self.host = f"http://{host}:{port}", host
        self.model, self.tokenizer = model, tokenizer
        self.device = next(model.parameters()).device
        self.rank, self.group = _rank(), None
        info = None
        if self.rank == 0:
            config = model.config
            info = post(self.url, "/connect", {"model_type": config.model_type, "vocab_size": config.vocab_size,
                                               "max_len": max_len})
        info = _share(info)
        self.session, self.version = info["session"], info["version"]
        if self.rank == 0:
            device = torch.device("cuda", torch.cuda.current_device()) if info["backend"] == "nccl" else \
                torch.device("cpu")
            store = WeightsGroup.client_store(host, info["weights_port"])
            self.group = WeightsGroup(store, self.session, 0, info["backend"], device)
        self.sync(model)

    def sync(self, model) -> float:
        """The policy's full weights to the server (process 0 broadcasts; with FSDP every process helps gather
        them); returns the seconds it took."""
        start = time.perf_counter()
        weights = full_weights(model, everywhere=False)
        self.version += 1
        if self.rank == 0:
            answer: dict = {}

            def announce():  # the server receives while process 0 broadcasts
                try:
                    answer.update(post(self.url, "/weights", {"session": self.session, "version": self.version,
                                                              "specs": describe(weights)}))
                except UserError as exc:
                    answer["error"] = exc

            thread = threading.Thread(target=announce, daemon=True)
            thread.start()
            self.group.send(weights)
            thread.join()
            if "error" in answer:
                raise answer["error"]
        return time.perf_counter() - start

    def generate(self, prompts: list, *, max_new_tokens: int, temperature: float = 1.0, top_p: float = 1.0,
                 greedy: bool = False, generator: torch.Generator | None = None, ignore_eos: bool = False,
                 max_prompt_length: int | None = None, stops: set[int] | None = None, prompt_width: int | None = None,
                 rows: tuple[int, int] | None = None, agree_steps=None) -> Samples:
        """`generation.generate`'s sampling, by the server's vLLM (options as `VLLMEngine.generate`)."""
        if stops is None:
            stops = stop_ids(self.tokenizer, self.model, any(is_conversation(p) for p in prompts))
        ids = prompt_rows(self.tokenizer, prompts, max_prompt_length)
        reply = post(self.url, "/generate", {
            "session": self.session, "version": self.version, "rows": ids,
            "seeds": draw_seeds(len(ids), generator, greedy, rows), "max_new_tokens": max_new_tokens,
            "temperature": temperature, "top_p": top_p, "greedy": greedy, "stops": sorted(stops),
            "ignore_eos": ignore_eos})
        if agree_steps is not None:
            agree_steps(max(len(t) for t in reply["tokens"]))
        return to_samples(self.tokenizer, self.device, ids, reply["tokens"], reply["logprobs"], stops, prompts,
                          prompt_width)

    def close(self) -> None:
        if self.rank == 0:
            post(self.url, "/close", {"session": self.session})
