"""`rlhf rollout-serve`: vLLM on its own devices (or its own machine), serving the trainers of a run.

One process: vLLM in it (`VLLMCore`, started from `--model`, a directory `save_pretrained` wrote: the SFT policy,
or any model of the trained policy's architecture and shapes — the trainer pushes its own weights on connecting), a
FastAPI app on HOST:PORT (`engines/remote.py` has the protocol) and a TCPStore on HOST:WEIGHTS_PORT over which each
connecting run's process 0 and this server make their weights group (`engines/weights.py`). Requests are served one
at a time (one engine); a /generate waits until the weights it expects have arrived. One run at a time: a run that
connects replaces the session of the one before.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import torch
import torch.distributed as dist
import uvicorn
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from rlhfkit.engines.options import check_vllm_installed
from rlhfkit.engines.serve_config import ServeConfig
from rlhfkit.engines.vllm_engine import VLLMCore
from rlhfkit.engines.weights import TIMEOUT, WeightsGroup
from rlhfkit.errors import UserError


class Connect(BaseModel):
    model_type: str
    vocab_size: int
    max_len: int


class Weights(BaseModel):
    session: int
    version: int
    specs: list[list]


class Generate(BaseModel):
    session: int
    version: int
    rows: list[list[int]]
    seeds: list[int | None]
    max_new_tokens: int
    temperature: float
    top_p: float
    greedy: bool
    stops: list[int]
    ignore_eos: bool


class Close(BaseModel):
    session: int


class RolloutServer:
    """The engine, the weights store and the state of the connected run (its session and weights version)."""

    def __init__(self, cfg: ServeConfig, config: dict):
        self.cfg, self.config = cfg, config
        self.cuda = torch.cuda.is_available()
        self.device = torch.device("cuda", torch.cuda.current_device()) if self.cuda else torch.device("cpu")
        positions = config.get("max_position_embeddings") or config.get("n_positions")
        self.max_len = min(cfg.max_len, positions) if positions else cfg.max_len  # what the model's positions allow
        dtype = cfg.dtype if cfg.dtype != "auto" else config.get("dtype") or config.get("torch_dtype") or "float32"
        self.core = VLLMCore(cfg.model, dtype=dtype, max_len=self.max_len, seed=cfg.seed,
                             gpu_memory=cfg.gpu_memory, cuda=self.cuda)
        self.store = dist.TCPStore(cfg.host, cfg.weights_port or cfg.port + 1, is_master=True, wait_for_workers=False,
                                   timeout=TIMEOUT)
        self.session, self.version, self.group, self.joining = 0, 0, None, None
        self.changed = threading.Condition()
        self.engine = threading.Lock()

    def connect(self, body: Connect) -> dict:
        mine = (self.config.get("model_type"), self.config.get("vocab_size"))
        if (body.model_type, body.vocab_size) != mine:
            raise HTTPException(409, f"it serves a {mine[0]} model with {mine[1]} tokens (--model "
                                     f"{self.cfg.model}); the policy is a {body.model_type} model with "
                                     f"{body.vocab_size} tokens")
        if body.max_len > self.max_len:
            raise HTTPException(409, f"it serves prompt + response up to {self.max_len} tokens (--max-len, the "
                                     f"model's positions); the run needs {body.max_len}")
        backend = "nccl" if self.cuda else "gloo"
        with self.changed:
            self.session += 1
            self.version, self.group = 0, None
            session = self.session
            self.changed.notify_all()

        def join():  # returns once process 0 of the run has joined too
            group = WeightsGroup(self.store, session, 1, backend, self.device)
            with self.changed:
                if self.session == session:
                    self.group = group

        self.joining = threading.Thread(target=join, daemon=True)
        self.joining.start()
        return {"session": session, "version": 0, "backend": backend,
                "weights_port": self.cfg.weights_port or self.cfg.port + 1}

    def check_session(self, session: int) -> None:
        if session != self.session:
            raise HTTPException(409, f"session {session} has ended: another run connected (session {self.session})")

    def weights(self, body: Weights) -> dict:
        self.check_session(body.session)
        self.joining.join()
        with self.engine:
            self.core.load(self.group.receive(body.specs))
        with self.changed:
            self.version = body.version
            self.changed.notify_all()
        return {"version": body.version}

    def generate(self, body: Generate) -> dict:
        with self.changed:
            self.changed.wait_for(lambda: self.version >= body.version or self.session != body.session,
                                  timeout=TIMEOUT.total_seconds())
            self.check_session(body.session)
            if self.version < body.version:
                raise HTTPException(504, f"weights version {body.version} never arrived")
        with self.engine:
            tokens, logps = self.core.generate(
                body.rows, body.seeds, max_new_tokens=body.max_new_tokens, temperature=body.temperature,
                top_p=body.top_p, greedy=body.greedy, stops=body.stops, ignore_eos=body.ignore_eos)
        return {"tokens": tokens, "logprobs": logps}

    def close(self, body: Close) -> dict:
        with self.changed:
            if body.session == self.session:
                self.group = None
        return {}


def make_app(server: RolloutServer) -> FastAPI:
    app = FastAPI(title="rlhfkit rollout server")
    app.post("/connect")(server.connect)
    app.post("/weights")(server.weights)
    app.post("/generate")(server.generate)
    app.post("/close")(server.close)
    return app


def read_model_config(path: str) -> dict:
    """The served model's config.json, or one line naming what is wrong with --model."""
    file = Path(path) / "config.json"
    if not file.is_file():
        raise UserError(f"--model {path}: no config.json (a directory `save_pretrained` wrote: the policy's start)")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{file}: not JSON ({exc})") from None


def serve(cfg: ServeConfig) -> None:
    """Start the engine, then serve until interrupted."""
    cfg.check()
    check_vllm_installed()
    server = RolloutServer(cfg, read_model_config(cfg.model))
    print(f"rollout server: http://{cfg.host}:{cfg.port} (weights group on port "
          f"{cfg.weights_port or cfg.port + 1}, {'nccl' if server.cuda else 'gloo'}), serving {cfg.model}", flush=True)
    uvicorn.run(make_app(server), host=cfg.host, port=cfg.port, log_level="warning")
