import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from rlhfkit import losses as L
from rlhfkit.models import packing as pk
from rlhfkit.models.loading import disable_dropout, load_causal_lm, load_tokenizer
from rlhfkit.train import dpo
from tests.conftest import run_cli

PROMPT = "list three animals ."


@pytest.fixture(autouse=True)
def _restore_threads():
    """The commands below run on one thread (fast on a busy machine); later tests get torch's setting back."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _rankings(demos_path, n: int) -> list[dict]:
    """n rankings of 3 outputs: the demonstration, then itself said twice, then another prompt's answer."""
    demos = [json.loads(line) for line in demos_path.read_text().splitlines()][:n + 1]
    out = []
    for i, d in enumerate(demos[:n]):
        ranking = [[0], [1], [2]] if i % 2 else [[0], [1, 2]]  # every other one with a tie (its pair is dropped)
        out.append({"id": f"r{i}", "prompt": d["prompt"], "labeler": "test", "ranking": ranking,
                    "completions": [d["completion"], d["completion"] + " " + d["completion"],
                                    demos[i + 1]["completion"]]})
    return out


def _write(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def _groups(tokenizer, finished=(True, True, True)):
    group = {"prompt": PROMPT, "completions": ["cat dog owl", "cat cat cat cat", "the sky is blue"],
             "finished": list(finished), "pairs": [(0, 1), (0, 2), (1, 2)]}
    return dpo.tokenize(tokenizer, [group], max_length=64)


# ----------------------------------------------------------------------------------------- the loss

def test_dpo_loss_equals_hand_computed_value():
    # Three pairs of one ranking of K = 3 (weight 1/C(3,2) = 1/3 each), β = 0.5:
    #   pair 1: β·[(−3 − −4) − (−5 − −4)] = 0.5·[1 + 1]  = +1  ->  −log σ(+1) = log(1 + e^−1) = 0.31326169
    #   pair 2: β·[(−2 − −1) − (−2 − −3)] = 0.5·[−1 − 1] = −1  ->  −log σ(−1) = log(1 + e)    = 1.31326169
    #   pair 3: β·[(−1 − −1) − (−7 − −7)] = 0                  ->  −log σ(0)  = log 2          = 0.69314718
    #   loss = (0.31326169 + 1.31326169 + 0.69314718) / 3 / (1 ranking) = 0.77322352
    logp_w, logp_l = torch.tensor([-3.0, -2.0, -1.0]), torch.tensor([-5.0, -2.0, -7.0])
    ref_w, ref_l = torch.tensor([-4.0, -1.0, -1.0]), torch.tensor([-4.0, -3.0, -7.0])
    weight = torch.full((3,), 1 / 3)
    assert L.dpo_margin(logp_w, logp_l, ref_w, ref_l, beta=0.5).tolist() == [1.0, -1.0, 0.0]
    assert L.dpo_loss(logp_w, logp_l, ref_w, ref_l, weight, 1, beta=0.5).item() == pytest.approx(0.77322352, abs=1e-6)
    # β defaults to 0.1 (Rafailov et al.): pair 1 alone has margin 0.1·2 = 0.2 -> log(1 + e^−0.2) = 0.59813887
    one = torch.ones(1)
    loss = L.dpo_loss(logp_w[:1], logp_l[:1], ref_w[:1], ref_l[:1], one, 1)
    assert loss.item() == pytest.approx(0.59813887, abs=1e-6)


def test_dpo_gradient_pushes_chosen_logprob_up_and_rejected_down():
    logp_w = torch.tensor([-3.0, -2.0], requires_grad=True)
    logp_l = torch.tensor([-5.0, -2.0], requires_grad=True)
    ref_w, ref_l = torch.tensor([-4.0, -1.0]), torch.tensor([-4.0, -3.0])
    L.dpo_loss(logp_w, logp_l, ref_w, ref_l, torch.ones(2), 2, beta=0.5).backward()
    # ∂L/∂log π(y_w) = −β·σ(−margin)/n = −0.5·σ(∓1)/2; a descent step raises log π(y_w) and lowers log π(y_l)
    expected = [-0.25 * (1 / (1 + math.e)), -0.25 * (1 / (1 + math.exp(-1)))]
    assert logp_w.grad.tolist() == pytest.approx(expected, abs=1e-6)
    assert logp_l.grad.tolist() == pytest.approx([-g for g in expected], abs=1e-6)
    # the pair the policy gets most wrong (margin −1) gets the larger push
    assert abs(logp_w.grad[1]) > abs(logp_w.grad[0])


def test_a_gradient_step_on_a_model_raises_chosen_relative_to_rejected(tiny_gpt2):
    tokenizer = load_tokenizer(tiny_gpt2)
    policy, reference = (disable_dropout(load_causal_lm(tiny_gpt2, tokenizer)) for _ in range(2))
    groups = _groups(tokenizer)
    dpo.attach_reference_logprobs(reference, groups, tokenizer.pad_token_id, "cpu", 8)
    batch = dpo.make_batch(groups, tokenizer.pad_token_id, "cpu")
    optimizer = torch.optim.SGD(policy.parameters(), lr=0.5)
    loss, before = dpo.batch_loss(policy, batch, beta=0.1)
    loss.backward()
    optimizer.step()
    after_loss, after = dpo.batch_loss(policy, batch, beta=0.1)
    assert (after > before).all() and after_loss < loss


# ------------------------------------------------------------------------------ sequences and reference

def test_policy_equal_to_reference_gives_a_margin_of_exactly_zero(tiny_gpt2):
    tokenizer = load_tokenizer(tiny_gpt2)
    policy, reference = (disable_dropout(load_causal_lm(tiny_gpt2, tokenizer)) for _ in range(2))
    groups = _groups(tokenizer) + _groups(tokenizer) + _groups(tokenizer)  # 3 rankings, 2 per batch
    dpo.attach_reference_logprobs(reference, groups, tokenizer.pad_token_id, "cpu", 2)
    measured = dpo.heldout_metrics(policy, groups, tokenizer.pad_token_id, "cpu", 2, beta=0.1)
    assert measured["heldout_margin"] == 0.0 and measured["n_pairs"] == 9
    assert measured["heldout_accuracy"] == 0.5  # every pair a tie
    assert measured["heldout_loss"] == pytest.approx(math.log(2), abs=1e-6)  # 3 pairs · 1/3 · log 2 per ranking


def test_sequence_logprob_sums_response_tokens_and_eos_only_when_the_response_ended(tiny_gpt2):
    tokenizer = load_tokenizer(tiny_gpt2)
    model = load_causal_lm(tiny_gpt2, tokenizer)
    eos = tokenizer.eos_token_id
    batch = dpo.make_batch(_groups(tokenizer, finished=(True, False, True)), tokenizer.pad_token_id, "cpu")
    got = dpo.sequence_logprobs(model, batch)
    prompt = tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    for row, (text, ended) in enumerate([("cat dog owl", True), ("cat cat cat cat", False)]):
        response = tokenizer(text, add_special_tokens=False)["input_ids"] + ([eos] if ended else [])
        ids = torch.tensor([prompt + response])  # alone, without padding
        logp = torch.log_softmax(model(ids).logits[0].float(), -1)
        expected = sum(logp[len(prompt) + t - 1, tok].item() for t, tok in enumerate(response))
        assert got[row].item() == pytest.approx(expected, abs=1e-4)


def test_reference_logprobs_are_computed_once_not_every_step(micro_world, tmp_path, monkeypatch):
    data = _write(tmp_path / "rankings.jsonl", _rankings(micro_world / "demos.jsonl", 12))
    calls = {}

    def counting_load(path, tokenizer=None):
        model = load_causal_lm(path, tokenizer)
        n = len(calls)
        calls[n] = 0
        model.register_forward_hook(lambda *_: calls.__setitem__(n, calls[n] + 1))
        return model

    monkeypatch.setattr(dpo, "load_causal_lm", counting_load)
    # the packing probe's two forward passes (once per architecture and process) are not the run's: taken here,
    # before counting, so that the counts do not depend on whether an earlier test in the process probed GPT-2
    pk.supports_packing(load_causal_lm(micro_world / "base"))
    for epochs in (1, 3):
        calls.clear()
        dpo.train_dpo(dpo.DPOConfig(policy=str(micro_world / "base"), data=data, out=str(tmp_path / f"e{epochs}"),
                                    epochs=epochs, batch_size=4, eval_fraction=0.0, threads=1))
        assert calls[1] == 3  # the reference (loaded second): 12 rankings, 4 a batch, once, whatever the epochs
        assert calls[0] == 3 * epochs  # the policy: every step


# ------------------------------------------------------------------------------------------- command

@pytest.mark.parametrize("form", ["rankings", "pairs"])
def test_dpo_command_writes_a_loadable_policy_and_held_out_metrics(form, micro_world, tmp_path, capsys):
    data = _write(tmp_path / "rankings.jsonl", _rankings(micro_world / "demos.jsonl", 40))
    if form == "pairs":
        code, _, err = run_cli(["data", "pairs", data, "--out", tmp_path / "pairs.jsonl"], capsys)
        assert code == 0, err
        data = tmp_path / "pairs.jsonl"
    out = tmp_path / "dpo"
    code, stdout, err = run_cli(["dpo", "--policy", micro_world / "base", "--data", data, "--out", out,
                                 "--epochs", "2", "--batch-size", "4", "--lr", "1e-3", "--eval-fraction", "0.25",
                                 "--log-every", "1", "--threads", "1"], capsys)
    assert code == 0, err
    assert "held-out preference accuracy" in stdout and f"dpo -> {out}" in stdout
    assert "beta = 0.1" in (out / "config.toml").read_text()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    held = [r for r in records if "heldout_accuracy" in r]
    assert len(held) == 2 and held[-1]["n_pairs"] > 0
    assert held[-1]["heldout_margin"] > 0  # the demonstrations now beat their padded and off-topic rivals
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.pad_token_id != model.config.eos_token_id
    assert (out / "tokenizer.json").exists()


def test_ranking_index_out_of_range_exits_2_with_one_line(micro_world, tmp_path, capsys):
    records = _rankings(micro_world / "demos.jsonl", 3)
    records[1]["ranking"] = [[0], [3], [1]]
    data = _write(tmp_path / "bad.jsonl", records)
    code, _, err = run_cli(["dpo", "--policy", micro_world / "base", "--data", data, "--out", tmp_path / "out"],
                           capsys)
    assert code == 2
    assert err.count("\n") == 1 and f"{data}:2: " in err and "out of range" in err
    assert not (tmp_path / "out").exists()


def test_save_every_writes_checkpoints_along_the_run(micro_world, tmp_path, capsys):
    data = _write(tmp_path / "rankings.jsonl", _rankings(micro_world / "demos.jsonl", 24))
    out = tmp_path / "dpo"
    code, _, err = run_cli(["dpo", "--policy", micro_world / "base", "--data", data, "--out", out, "--epochs", "2",
                            "--batch-size", "4", "--eval-data", data, "--save-every", "4", "--threads", "1"], capsys)
    assert code == 0, err
    # 24 rankings / 4 = 6 steps an epoch, 12 in all: checkpoints at 4 and 8 (12 is the final policy in OUT)
    saved = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert saved == ["step-4", "step-8"]
    first = AutoModelForCausalLM.from_pretrained(out / "checkpoints" / "step-4")
    final = AutoModelForCausalLM.from_pretrained(out)
    assert any(not torch.equal(a, b) for a, b in zip(first.parameters(), final.parameters()))


def test_bf16_policy_equal_to_its_reference_has_margin_zero_and_loss_ln2(tiny_gpt2, tmp_path, capsys):
    # π_ref's log-probs are taken under the same --bf16 autocast as the policy's: with a learning rate too small
    # to move a float32 weight, the policy stays its reference, so every held-out margin is 0 and the loss ln 2
    # (before the fix the reference ran in float32 and the margins were bf16 rounding noise, accuracy ≠ ½).
    completions = ["cat dog owl", "cat cat cat cat", "the sky is blue", "dog"]
    records = [{"prompt": p, "completions": completions, "ranking": [[0], [1], [2], [3]], "labeler": "t",
                "id": f"r{i}"} for i, p in enumerate([PROMPT, "what color is the sky ?", "say pear two times .",
                                                       "name the opposite of hot ."])]
    data = _write(tmp_path / "rankings.jsonl", records)
    out = tmp_path / "dpo"
    code, _, err = run_cli(["dpo", "--policy", tiny_gpt2, "--data", data, "--eval-data", data, "--out", out,
                            "--bf16", "--lr", "1e-30", "--batch-size", "2", "--threads", "1"], capsys)
    assert code == 0, err
    held = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    held = [r for r in held if "heldout_margin" in r][-1]
    assert held["heldout_margin"] == 0.0
    assert held["heldout_loss"] == pytest.approx(math.log(2), abs=1e-6)
    assert held["heldout_accuracy"] == 0.5
