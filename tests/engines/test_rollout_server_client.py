"""The parts of the scaled-out engines that run without vLLM (`make test`): the weights group a trainer broadcasts
to a rollout server over, the seeds each process draws for its rows, and the one-line errors of
`--rollout-engine server` and `rlhf rollout-serve`. The engines themselves: tests/engines/test_vllm_scale.py."""

from __future__ import annotations

import socket
import threading

import pytest
import torch
import torch.distributed as dist

from rlhfkit.engines.options import split_address
from rlhfkit.engines.vllm_engine import draw_seeds
from rlhfkit.engines.weights import WeightsGroup, describe, full_weights
from rlhfkit.errors import UserError
from rlhfkit.models.loading import load_causal_lm, load_tokenizer
from tests.conftest import run_cli


def test_weights_group_carries_every_tensor_by_name_dtype_and_shape(tiny_gpt2):
    """A trainer (member 0) broadcasts a model's full weights; the server side (member 1, its own thread here, as
    in `rlhf rollout-serve`) allocates them from `describe` and receives the same tensors, bit for bit."""
    model = load_causal_lm(tiny_gpt2, load_tokenizer(tiny_gpt2))
    weights = full_weights(model) | {"extra.int": torch.arange(5), "extra.half": torch.ones(2, 3).bfloat16()}
    master = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    received = {}

    def server():
        group = WeightsGroup(master, 7, 1, "gloo", torch.device("cpu"))
        received.update(group.receive(describe(weights)))

    thread = threading.Thread(target=server)
    thread.start()
    WeightsGroup(WeightsGroup.client_store("127.0.0.1", master.port), 7, 0, "gloo", torch.device("cpu")).send(weights)
    thread.join()
    assert list(received) == list(weights)
    for name, tensor in weights.items():
        assert received[name].dtype == tensor.dtype and torch.equal(received[name], tensor), name


def test_each_process_draws_the_seeds_a_one_process_run_gives_its_rows():
    """Rows 0–2 and 3–4 of a batch of 5, each drawn in its own process from the same generator: together the seeds
    of one process drawing all 5, and every generator left in the same state."""
    one = torch.Generator().manual_seed(3)
    whole = draw_seeds(5, one, greedy=False)
    parts, states = [], []
    for start, n in ((0, 3), (3, 2)):
        g = torch.Generator().manual_seed(3)
        parts += draw_seeds(n, g, greedy=False, rows=(start, 5))
        states.append(g.get_state())
    assert parts == whole and len(set(whole)) == 5
    assert all(torch.equal(s, one.get_state()) for s in states)
    assert draw_seeds(2, one, greedy=True) == [None, None]


@pytest.mark.parametrize("address", ["nohost", "host:", ":80", "127.0.0.1:99999", "127.0.0.1:http"])
def test_a_rollout_server_address_is_host_and_port(address):
    with pytest.raises(UserError, match="rollout_server"):
        split_address(address)
    assert split_address("10.0.0.2:8100") == ("10.0.0.2", 8100)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("extra, expected", [
    ([], "'rollout_server'"),
    (["--rollout-server", "nohost"], "not HOST:PORT"),
    (["--rollout-server", f"127.0.0.1:{_closed_port()}"], "no rollout server answers"),
])
def test_ppo_with_a_missing_rollout_server_is_one_line_and_writes_nothing(extra, expected, tiny_gpt2, tmp_path,
                                                                          capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hello"}\n{"prompt": "the sky"}\n')
    (tmp_path / "rf.py").write_text("def short(completions, **kw):\n    return [0.0 for c in completions]\n")
    code, _, err = run_cli(["ppo", "--policy", tiny_gpt2, "--reward-fn", f"{tmp_path}/rf.py:short", "--prompts",
                            prompts, "--out", tmp_path / "run", "--ppo-steps", "1", "--batch-size", "4",
                            "--minibatch-size", "2", "--advantage", "grpo", "--num-generations", "2",
                            "--rollout-engine", "server", *extra], capsys)
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_rollout_server_option_is_refused_with_another_engine(tiny_gpt2, tmp_path, capsys):
    code, _, err = run_cli(["ppo", "--policy", tiny_gpt2, "--reward", tiny_gpt2, "--prompts", tmp_path / "p.jsonl",
                            "--out", tmp_path / "run", "--rollout-server", "127.0.0.1:8100"], capsys)
    assert code == 2 and "rollout_server" in err and "--rollout-engine server" in err


def test_rollout_serve_checks_its_options_in_one_line(tmp_path, capsys):
    code, _, err = run_cli(["rollout-serve", "--model", tmp_path, "--port", "8100", "--weights-port", "8100"],
                           capsys)
    assert code == 2 and "weights_port" in err and len(err.strip().splitlines()) == 1
