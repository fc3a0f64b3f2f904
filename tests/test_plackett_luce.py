"""K-wise rankings: the Plackett–Luce loss over tiers (losses.plackett_luce_loss), against numbers computed by hand,
against the pairwise loss at K = 2, and through `rlhf rm` / `rlhf dpo --loss plackett-luce`."""

import json
import math

import pytest
import torch

from rlhfkit import losses as L
from rlhfkit.data.pairs import pairs_to_tiers, ranking_tiers, ranking_to_pairs
from rlhfkit.models.loading import load_tokenizer
from rlhfkit.models.scalar import ScalarModel
from rlhfkit.train import dpo, reward
from tests.conftest import run_cli


def test_plackett_luce_hand_computed_on_k4_with_ties():
    # ranking [[1], [0, 3], [2]]: output 1 best, 0 and 3 tied, 2 last; tiers per output (0, 1, 2, 3) = (1, 0, 2, 1)
    # rewards with exp(r) = (2, 4, 1, 3):
    #   tier 0: output 1 chosen from all four:                   4 / (2 + 4 + 1 + 3) = 4/10
    #   tier 1: outputs 0 and 3, each from {0, 3, 2} (Breslow):  2 / (2 + 3 + 1) = 2/6,   3 / 6
    #   tier 2: the last tier, nothing chosen from it:           no term
    #   L1 = −log(4/10 · 2/6 · 3/6) = −log(1/15) = log 15 = 2.708050
    # a K = 3 ranking [[0], [1, 2]] padded to K = 4, exp(r) = (1, 1, 2):
    #   tier 0: 1 / (1 + 1 + 2) = 1/4; its tied last tier has no term:    L2 = log 4 = 1.386294
    # a K = 4 ranking that is one tie group: nothing is chosen:           L3 = 0
    # mean over the 3 rankings: (log 15 + log 4 + 0) / 3 = log 60 / 3 = 1.364781
    rewards = torch.log(torch.tensor([[2.0, 4.0, 1.0, 3.0], [1.0, 1.0, 2.0, 7.0], [5.0, 1.0, 2.0, 3.0]]))
    tiers = torch.tensor([[1, 0, 2, 1], [0, 1, 1, -1], [0, 0, 0, 0]])  # 7.0 sits on padding
    assert L.plackett_luce_loss(rewards[:1], tiers[:1], 1).item() == pytest.approx(math.log(15), abs=1e-6)
    assert L.plackett_luce_loss(rewards[:1], tiers[:1], 1).item() == pytest.approx(2.708050, abs=1e-6)
    assert L.plackett_luce_loss(rewards[1:2], tiers[1:2], 1).item() == pytest.approx(math.log(4), abs=1e-6)
    assert L.plackett_luce_loss(rewards[2:], tiers[2:], 1).item() == 0.0
    assert L.plackett_luce_loss(rewards, tiers, 3).item() == pytest.approx(1.364781, abs=1e-6)
    assert tiers[0].tolist() == ranking_tiers([[1], [0, 3], [2]], 4)


def test_one_tie_group_gives_no_gradient_and_padding_none():
    rewards = torch.tensor([[0.3, -1.0, 2.0, 0.5], [0.1, 0.2, 9.0, -9.0]], requires_grad=True)
    tiers = torch.tensor([[0, 0, 0, 0], [0, 1, -1, -1]])
    L.plackett_luce_loss(rewards, tiers, 2).backward()
    assert rewards.grad[0].tolist() == [0.0] * 4 and rewards.grad[1, 2:].tolist() == [0.0, 0.0]
    # ranking 2: −log σ(0.1 − 0.2), ∂/∂r_w = −σ(−(r_w − r_l)) / 2 rankings = −σ(0.1) / 2 = −0.524979 / 2 = −0.262490
    assert rewards.grad[1, 0].item() == pytest.approx(-0.262490, abs=1e-6)


def test_without_ties_it_is_the_product_of_successive_choices():
    torch.manual_seed(0)
    r = torch.randn(5)
    order = [3, 0, 4, 1, 2]
    expected = 0.0
    for k in range(4):  # the last output is chosen with probability 1
        expected -= (r[order[k]] - torch.logsumexp(r[order[k:]], 0)).item()
    tiers = torch.tensor([ranking_tiers([[i] for i in order], 5)])
    assert L.plackett_luce_loss(r[None], tiers, 1).item() == pytest.approx(expected, abs=1e-5)


def test_k2_equals_the_pairwise_loss_in_value_and_gradient():
    torch.manual_seed(0)
    r = torch.randn(6, 2)
    winner = torch.tensor([0, 1, 1, 0, 1, 0])
    tiers = torch.stack([winner, 1 - winner], 1)  # the winner is tier 0
    r_pl = r.clone().requires_grad_()
    pl = L.plackett_luce_loss(r_pl, tiers, 6)
    pl.backward()
    r_pw = r.clone().requires_grad_()
    rows = torch.arange(6)
    pairwise = L.preference_loss(r_pw[rows, winner], r_pw[rows, 1 - winner], torch.ones(6), 6)  # 1/C(2,2) = 1
    pairwise.backward()
    assert pl.item() == pytest.approx(pairwise.item(), abs=1e-6)
    assert torch.allclose(r_pl.grad, r_pw.grad, atol=1e-7)


def test_dpo_listwise_form_at_k2_equals_dpo():
    torch.manual_seed(1)
    logp, ref = torch.randn(4, 2), torch.randn(4, 2)
    tiers = torch.tensor([[0, 1], [1, 0], [0, 1], [1, 0]])
    w, l = tiers.argmin(1), tiers.argmax(1)
    rows = torch.arange(4)
    a, b = logp.clone().requires_grad_(), logp.clone().requires_grad_()
    listwise = L.dpo_plackett_luce_loss(a, ref, tiers, 4, beta=0.5)
    pairwise = L.dpo_loss(b[rows, w], b[rows, l], ref[rows, w], ref[rows, l], torch.ones(4), 4, beta=0.5)
    listwise.backward(), pairwise.backward()
    assert listwise.item() == pytest.approx(pairwise.item(), abs=1e-6)
    assert torch.allclose(a.grad, b.grad, atol=1e-7)
    # by hand on the first ranking: r̂ = β·(log π − log π_ref) per output, L = −log σ(r̂_w − r̂_l)
    m = 0.5 * ((logp[0, 0] - ref[0, 0]) - (logp[0, 1] - ref[0, 1]))
    assert L.dpo_plackett_luce_loss(logp[:1], ref[:1], tiers[:1], 1, 0.5).item() == pytest.approx(
        math.log1p(math.exp(-m.item())), abs=1e-6)


@pytest.mark.parametrize("ranking", [[[2], [0, 3], [1]], [[0], [1]], [[1, 0], [2]], [[3], [2], [1], [0]],
                                     [[0], [1, 2, 3]]])
def test_a_rankings_pairs_give_back_its_tiers(ranking):
    k = sum(len(g) for g in ranking)
    assert pairs_to_tiers(ranking_to_pairs(ranking), k) == ranking_tiers(ranking, k)


@pytest.mark.parametrize("pairs, k", [([(0, 1), (1, 2), (2, 0)], 3),   # a cycle
                                      ([(0, 1), (1, 2)], 3),           # 0 ≻ 1 ≻ 2 without the pair (0, 2)
                                      ([(0, 1), (0, 1)], 2),           # a pair twice
                                      ([(0, 1), (2, 3)], 4)])          # two separate pairs under one tag
def test_pairs_that_are_not_one_ranking_have_no_tiers(pairs, k):
    assert pairs_to_tiers(pairs, k) is None


def test_batches_carry_each_rankings_rows_and_tiers(tiny_gpt2):
    tokenizer = load_tokenizer(tiny_gpt2)
    groups = [{"prompt": "list two animals .", "completions": ["cat dog", "rude idiot", "cow"],
               "finished": [True] * 3, "pairs": ranking_to_pairs([[2], [0, 1]]), "tiers": [1, 1, 0]},
              {"prompt": "list two animals .", "completions": ["cow", "cat dog"], "finished": [True] * 2,
               "pairs": [(1, 0)], "tiers": [1, 0]}]
    batch = reward.make_batch(reward.tokenize_groups(tokenizer, groups, 64), tokenizer.pad_token_id, "cpu")
    assert batch.input_ids.shape[0] == 3  # "cow" and "cat dog" are scored once
    assert batch.items.tolist() == [[0, 1, 2], [2, 0, 0]] and batch.tiers.tolist() == [[1, 1, 0], [1, 0, -1]]
    model = ScalarModel.from_backbone(tiny_gpt2, tokenizer)
    r = model.score(batch.input_ids, batch.attention_mask)
    expected = L.plackett_luce_loss(torch.stack([r[[0, 1, 2]], r[[2, 0, 0]]]), batch.tiers, 2)
    assert reward.batch_loss(model, batch, "plackett-luce")[0].item() == pytest.approx(expected.item(), abs=1e-6)
    rows = dpo.make_batch(dpo.tokenize(tokenizer, groups, 64), tokenizer.pad_token_id, "cpu")
    assert rows.items.tolist() == [[0, 1, 2], [3, 4, 0]] and rows.tiers.tolist() == batch.tiers.tolist()
    groups[1]["tiers"] = None  # pairs that are not one ranking: no listwise form
    assert reward.make_batch(reward.tokenize_groups(tokenizer, groups, 64), 0, "cpu").tiers is None


# ------------------------------------------------------------------------------------------- commands

PROMPTS = [f"list {n} {c} ." for n in ("two", "three", "four", "five") for c in ("animals", "fruits")]


def _rankings(path, n=32):
    """Rankings of four outputs with a tie (two labelers per item) that prefer 'the cat': a signal to learn."""
    lines = [{"id": f"q{i // 2}", "prompt": PROMPTS[(i // 2) % len(PROMPTS)], "labeler": f"l{i % 2}",
              "completions": ["the cat", "a dog", "one cow", "the pig"], "ranking": [[0], [1, 2], [3]]}
             for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


@pytest.mark.parametrize("form", ["rankings", "pairs"])
def test_rm_command_trains_with_the_plackett_luce_loss(form, micro_world, tmp_path, capsys):
    data = _rankings(tmp_path / "rankings.jsonl")
    if form == "pairs":  # `rlhf data pairs` output: each ranking's pairs share a group, read back as its tiers
        assert run_cli(["data", "pairs", data, "--out", tmp_path / "pairs.jsonl"], capsys)[0] == 0
        data = tmp_path / "pairs.jsonl"
    out = tmp_path / "rm"
    code, stdout, err = run_cli(["rm", "--model", micro_world / "base", "--data", data, "--out", out,
                                 "--loss", "plackett-luce", "--eval-fraction", "0.3", "--batch-size", "4",
                                 "--epochs", "3", "--lr", "3e-3", "--log-every", "1", "--threads", "1"], capsys)
    assert code == 0, err
    assert 'loss = "plackett-luce"' in (out / "config.toml").read_text()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["heldout_accuracy"] > 0.5 and rows[-1]["n_pairs"] > 0
    # the listwise loss, not the pairwise one: at equal rewards a ranking's loss is log 4 + log 3 + log 3 = 3.58
    # (tier 0 from four outputs, then "a dog" and "one cow" each from three), where the pairwise loss is log 2
    assert rows[0]["step"] == 1 and rows[0]["train_loss"] > 2


def test_dpo_command_trains_with_the_listwise_loss(micro_world, tmp_path, capsys):
    demos = [json.loads(line) for line in (micro_world / "demos.jsonl").read_text().splitlines()][:25]
    records = [{"id": f"r{i}", "prompt": d["prompt"], "labeler": "test", "ranking": [[0], [1, 2]],
                "completions": [d["completion"], d["completion"] + " " + d["completion"], demos[i + 1]["completion"]]}
               for i, d in enumerate(demos[:24])]
    data = tmp_path / "rankings.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "dpo"
    code, stdout, err = run_cli(["dpo", "--policy", micro_world / "base", "--data", data, "--out", out,
                                 "--loss", "plackett-luce", "--epochs", "2", "--batch-size", "4", "--lr", "1e-3",
                                 "--eval-fraction", "0.25", "--log-every", "1", "--threads", "1"], capsys)
    assert code == 0, err
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    # π_θ = π_ref at the start: r̂ = 0 for all three outputs, the best is one of three: loss log 3 per ranking
    assert records[0]["train_loss"] == pytest.approx(math.log(3), abs=1e-4)
    held = [r for r in records if "heldout_accuracy" in r]
    assert held[-1]["heldout_margin"] > 0


def test_pairs_that_are_not_one_ranking_exit_2_with_one_line(tiny_gpt2, tmp_path, capsys):
    rows = [{"prompt": "p", "chosen": "a", "rejected": "b", "group": "g1"},
            {"prompt": "p", "chosen": "b", "rejected": "c", "group": "g1"}]  # a ≻ b ≻ c without a ≻ c
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows * 4))
    for command, model in (("rm", "--model"), ("dpo", "--policy")):
        code, _, err = run_cli([command, model, tiny_gpt2, "--data", data, "--eval-data", data, "--out",
                                tmp_path / command, "--loss", "plackett-luce"], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "pairs.jsonl: the pairs of group 'g1' are not those of one ranking" in err
        assert not (tmp_path / command).exists()
    code, _, err = run_cli(["rm", "--model", tiny_gpt2, "--data", data, "--out", tmp_path / "x", "--loss", "listwise"],
                           capsys)
    assert code == 2 and "config key 'loss': 'listwise' is not one of pairwise, plackett-luce" in err
