"""Shared fixtures: a micro toy world (built once per session) and tiny random models."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path

import pytest

# As `rlhf` sets them before transformers is first imported (it reads them then): pytest loads this file before
# any test module, and transformers' progress bars would otherwise add lines to stderr.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402
from transformers import AutoModelForCausalLM  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from rlhfkit.cli import main as cli_main  # noqa: E402
from rlhfkit.world.build import world_words  # noqa: E402
from rlhfkit.world.pretrain import base_config  # noqa: E402
from rlhfkit.world.tokenizer import build_tokenizer  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    """Base LMs built by tests go to a per-session cache, never the user's."""
    os.environ["RLHFKIT_CACHE"] = str(tmp_path_factory.mktemp("rlhfkit-cache"))
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def micro_world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("world") / "micro"
    assert cli_main(["world", "build", "--out", str(out), "--preset", "micro", "--seed", "0"]) == 0
    return out


@pytest.fixture(scope="session")
def world_tokenizer():
    return build_tokenizer(world_words())


def save_tiny_model(path: Path, tokenizer, arch: str = "gpt2", seed: int = 0) -> Path:
    """A randomly initialised tiny causal LM + tokenizer, written with save_pretrained."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(base_config(arch, tokenizer, 32, 2, 2, n_positions=128))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory, world_tokenizer) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("gpt2") / "model", world_tokenizer, "gpt2")


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, world_tokenizer) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("llama") / "model", world_tokenizer, "llama")


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run `rlhf ARGS` in-process; returns (exit code, stdout, stderr)."""
    code = cli_main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


@contextlib.contextmanager
def transformers_warnings(logger: str = "transformers.modeling_utils"):
    """The messages `logger` says inside, at transformers' warning verbosity (what a user who has not set
    TRANSFORMERS_VERBOSITY=error sees), its once-per-process memory (`warning_once`) cleared first."""
    said: list[str] = []

    class Kept(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            said.append(record.getMessage())

    handler, verbosity = Kept(), hf_logging.get_verbosity()
    hf_logging.warning_once.cache_clear()
    hf_logging.set_verbosity_warning()
    logging.getLogger(logger).addHandler(handler)
    try:
        yield said
    finally:
        logging.getLogger(logger).removeHandler(handler)
        hf_logging.set_verbosity(verbosity)
