import json
import math

import pytest
import torch

from rlhfkit.data.pairs import (
    ordered_groups,
    pair_weight,
    preference_groups,
    ranking_to_pairs,
    rankings_to_pair_records,
)
from rlhfkit.losses import preference_loss
from rlhfkit.models.loading import load_tokenizer
from rlhfkit.models.scalar import ScalarModel, score_texts
from rlhfkit.rewards.accuracy import batch_loss, make_batch, tokenize_groups
from tests.conftest import run_cli, transformers_warnings


def test_ranking_with_a_tie_gives_exactly_the_strict_pairs():
    assert ranking_to_pairs([[2], [0, 3], [1]]) == [(2, 0), (2, 3), (2, 1), (0, 1), (3, 1)]


def test_ranking_of_four_without_ties_gives_six_pairs():
    pairs = ranking_to_pairs([[3], [1], [0], [2]])
    assert len(pairs) == 6 == math.comb(4, 2)
    assert pairs == [(3, 1), (3, 0), (3, 2), (1, 0), (1, 2), (0, 2)]


def test_pairs_records_carry_their_ranking_group():
    ranking = {"id": "q1", "prompt": "p", "completions": ["a", "b", "c"], "ranking": [[1], [0, 2]], "labeler": "ann"}
    records = rankings_to_pair_records([ranking])
    assert [(r["chosen"], r["rejected"]) for r in records] == [("b", "a"), ("b", "c")]
    assert {r["group"] for r in records} == {"q1/ann"}
    groups = preference_groups("pairs", records)  # pairs of one ranking are merged back into one group
    assert len(groups) == 1 and groups[0]["completions"] == ["b", "a", "c"] and groups[0]["pairs"] == [(0, 1), (0, 2)]


def test_preference_loss_hand_computed():
    # r_w − r_l = 1.0 and −0.5; −log σ(1) = 0.313262, −log σ(−0.5) = 0.974077
    loss = preference_loss(torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.5]), torch.tensor([1.0, 1.0]), 2)
    assert loss.item() == pytest.approx((0.313262 + 0.974077) / 2, abs=1e-5)
    # the sign matters: the slide's log σ(r_j − r_k) without the minus would be negative
    assert loss.item() > 0


def test_pairs_of_one_ranking_are_weighted_one_over_k_choose_2():
    assert pair_weight(4) == pytest.approx(1 / 6) and pair_weight(2) == 1.0
    groups = [{"rows": [[1, 2], [1, 3], [1, 4], [1, 5]], "pairs": ranking_to_pairs([[0], [1], [2], [3]]),
               "weight": pair_weight(4)},
              {"rows": [[1, 6], [1, 7]], "pairs": [(0, 1)], "weight": pair_weight(2)}]
    batch = make_batch(groups, pad_id=0, device="cpu")
    assert batch.n_rankings == 2 and len(batch.chosen) == 7
    assert batch.weight.tolist() == pytest.approx([1 / 6] * 6 + [1.0])
    # every ranking counts once: with all margins equal, the loss is the per-pair loss
    r = torch.zeros(6)
    loss = preference_loss(r[batch.chosen], r[batch.rejected], batch.weight, batch.n_rankings)
    assert loss.item() == pytest.approx(math.log(2))


def test_a_ranking_that_is_one_tie_group_counts_in_no_batch_whichever_the_file():
    """One rule in both layouts (losses.preference_loss): a ranking that is one tie group gives no pair, so it is in
    neither the loss's sum nor its number of rankings — as rankings, and as the pairs `rlhf data pairs` writes."""
    rankings = [{"id": "q1", "prompt": "p", "completions": ["a", "b", "c"], "ranking": [[1], [0, 2]], "labeler": "x"},
                {"id": "q2", "prompt": "p", "completions": ["d", "e"], "ranking": [[0, 1]], "labeler": "x"}]
    as_rankings = preference_groups("rankings", rankings)
    as_pairs = preference_groups("pairs", rankings_to_pair_records(rankings))
    assert len(as_pairs) == 1 and ordered_groups(as_rankings) == [as_rankings[0]]
    batches = [make_batch([{"rows": [[ord(c)] for c in g["completions"]], "pairs": g["pairs"],
                            "weight": pair_weight(len(g["completions"]))} for g in groups], pad_id=0, device="cpu")
               for groups in (as_rankings, as_pairs)]
    assert [b.n_rankings for b in batches] == [1, 1]
    # r(b) = 1, every other output 0: both pairs have margin 1, each weighs 1/C(3,2); −log σ(1) = 0.313262:
    # loss = 2·(1/3)·0.313262 / 1 ranking = 0.208841 (counting the tie group: / 2 rankings)
    for b in batches:
        r = (b.input_ids[:, 0] == ord("b")).float()
        assert preference_loss(r[b.chosen], r[b.rejected], b.weight, b.n_rankings).item() == pytest.approx(
            0.208841, abs=1e-6)


@pytest.mark.parametrize("command", ["rm", "dpo"])
def test_rankings_and_the_pairs_exported_from_them_train_the_same_losses(command, micro_world, tmp_path, capsys):
    """The issue's case: rankings with some that are one tie group trained at another loss scale (0.4163) than the
    pairs `rlhf data pairs` exported from them (0.5204)."""
    data = _rankings(tmp_path / "rankings.jsonl", n=12)
    lines = data.read_text().splitlines()
    for i in (1, 4, 5, 9):  # these labelers tied all four outputs
        lines[i] = json.dumps(json.loads(lines[i]) | {"ranking": [[0, 1, 2, 3]]})
    data.write_text("\n".join(lines) + "\n")
    code, _, err = run_cli(["data", "pairs", data, "--out", tmp_path / "pairs.jsonl"], capsys)
    assert code == 0, err
    model = ["--model" if command == "rm" else "--policy", micro_world / "base"]
    for name in ("rankings", "pairs"):
        code, _, err = run_cli([command, *model, "--data", tmp_path / f"{name}.jsonl", "--out", tmp_path / name,
                                "--eval-fraction", "0.3", "--batch-size", "3", "--lr", "1e-3", "--log-every", "1",
                                "--threads", "1"], capsys)
        assert code == 0, err
    rows = {name: [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
            for name in ("rankings", "pairs")}
    assert len(rows["rankings"]) == len(rows["pairs"]) >= 2
    for one, other in zip(rows["rankings"], rows["pairs"]):
        assert set(one) == set(other)
        for key in set(one) - {"time_s"}:
            assert one[key] == (pytest.approx(other[key], rel=1e-5, abs=1e-6) if isinstance(one[key], float)
                                else other[key]), key


def test_an_output_ranked_by_two_labelers_is_scored_once():
    g = {"rows": [[1, 2], [1, 3]], "pairs": [(0, 1)], "weight": 1.0}
    h = {"rows": [[1, 2], [1, 3]], "pairs": [(1, 0)], "weight": 1.0}
    batch = make_batch([g, h], pad_id=0, device="cpu")
    assert batch.input_ids.shape[0] == 2
    assert batch.chosen.tolist() == [0, 1] and batch.rejected.tolist() == [1, 0]


def test_reward_is_read_at_the_last_real_token_under_right_padding(tiny_gpt2):
    model = ScalarModel.from_backbone(tiny_gpt2).eval()
    ids = torch.tensor([[5, 6, 7, 0, 0], [5, 6, 7, 8, 9]])
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    scores = model.score(ids, mask)
    per_position = model(ids, mask)
    assert scores[0].item() == pytest.approx(per_position[0, 2].item(), abs=1e-6)  # token 7, not the padding
    assert scores[0].item() != pytest.approx(per_position[0, 4].item(), abs=1e-4)
    alone = model.score(ids[:1, :3], mask[:1, :3])
    assert scores[0].item() == pytest.approx(alone.item(), abs=1e-5)


def test_head_is_initialized_with_std_one_over_sqrt_d_plus_one(tiny_gpt2):
    model = ScalarModel.from_backbone(tiny_gpt2, seed=0)
    d = model.head.in_features
    assert model.head.bias.item() == 0.0
    std = model.head.weight.std().item()
    assert 0.5 / math.sqrt(d + 1) < std < 1.5 / math.sqrt(d + 1)


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama"])
def test_save_and_load_round_trip(fixture, request, tmp_path):
    path = request.getfixturevalue(fixture)
    model = ScalarModel.from_backbone(path).eval()
    model.shift_bias(0.25)
    model.save_pretrained(tmp_path / "rm")
    loaded = ScalarModel.from_pretrained(tmp_path / "rm").eval()
    ids, mask = torch.tensor([[4, 5, 6]]), torch.ones(1, 3, dtype=torch.long)
    assert loaded.score(ids, mask).item() == pytest.approx(model.score(ids, mask).item(), abs=1e-6)
    assert type(loaded.backbone).__name__ == type(model.backbone).__name__


PROMPTS = [f"list {n} {c} ." for n in ("two", "three", "four", "five") for c in ("animals", "fruits")]


def _rankings(path, n=32, k=4):
    """Rankings (two labelers per item) that always prefer 'the cat': a signal the RM can learn."""
    lines = []
    for i in range(n):
        outs = ["the cat", "a dog", "one cow", "the pig"][:k]
        lines.append({"id": f"q{i // 2}", "prompt": PROMPTS[(i // 2) % len(PROMPTS)],
                      "completions": outs, "ranking": [[0], [1, 2], [3]] if k == 4 else [[0], [1]],
                      "labeler": f"l{i % 2}"})
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return path


def test_rm_command_trains_normalizes_and_reports(micro_world, tmp_path, capsys):
    data = _rankings(tmp_path / "rankings.jsonl")
    demos = tmp_path / "demos.jsonl"
    demos.write_text("".join(json.dumps({"prompt": "list two animals .", "completion": c}) + "\n"
                             for c in ["cat dog", "horse cow", "pig sheep"]))
    out = tmp_path / "rm"
    code, stdout, err = run_cli(["rm", "--model", micro_world / "base", "--data", data, "--out", out,
                                 "--demos", demos, "--eval-fraction", "0.3", "--batch-size", "4", "--epochs", "3",
                                 "--lr", "3e-3", "--world", micro_world], capsys)
    assert code == 0, err
    assert "held-out accuracy" in stdout and "noise ceiling" in stdout
    model = ScalarModel.from_pretrained(out).eval()
    tokenizer = load_tokenizer(out)
    demo_scores = score_texts(model, tokenizer, ["list two animals ."] * 3, ["cat dog", "horse cow", "pig sheep"])
    assert sum(demo_scores) / 3 == pytest.approx(0.0, abs=1e-4)  # bias normalization
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["heldout_accuracy"] > 0.5
    assert (out / "heldout.jsonl").exists() and (out / "config.toml").exists()
    code, stdout, err = run_cli(["eval", "rm", "--rm", out, "--world", micro_world], capsys)
    assert code == 0, err
    assert "held-out accuracy" in stdout and "labeler agreement" in stdout


def test_rm_command_packs_its_rows_without_transformers_padding_warning(micro_world, tmp_path, capsys):
    """The micro world pads with id 0, the id that fills a packed row after its last sequence (rows of uneven
    lengths here): transformers' "may be padded" warning, at its default verbosity, is a false alarm on packed rows
    and is not said."""
    data = tmp_path / "rankings.jsonl"
    outs = ["the cat", "a dog and a cow", "one pig", "the red fox and the owl"]
    prompts = ["say pear .", "list three animals .", "what color is the sky ?", "count the words : cat dog owl ."]
    data.write_text("".join(json.dumps({"id": f"q{i}", "prompt": prompt, "completions": outs,
                                        "ranking": [[0], [1], [2, 3]], "labeler": "l"}) + "\n"
                            for i, prompt in enumerate(prompts * 3)))
    with transformers_warnings() as said:
        code, _, err = run_cli(["rm", "--model", micro_world / "base", "--data", data, "--out", tmp_path / "rm",
                                "--batch-size", "4", "--epochs", "1"], capsys)
    assert code == 0, err
    assert not [m for m in said if "strongly recommend passing in an `attention_mask`" in m], said


@pytest.mark.parametrize("ranking, k_texts, expected", [
    ([[0], [4]], 2, "ranking index 4 is out of range for 2 completions"),
    ([[0], [0]], 2, "ranking index 0 appears more than once"),
    ([[0], [1]], 3, "ranking covers 2 of 3 completions"),
])
def test_bad_rankings_are_rejected_with_path_line_and_exit_2(ranking, k_texts, expected, tiny_gpt2, tmp_path, capsys):
    good = {"id": "a", "prompt": "p", "completions": ["x", "y"], "ranking": [[0], [1]], "labeler": "l"}
    bad = {"id": "b", "prompt": "p", "completions": ["x", "y", "z"][:k_texts], "ranking": ranking, "labeler": "l"}
    data = tmp_path / "rankings.jsonl"
    data.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    code, _, err = run_cli(["rm", "--model", tiny_gpt2, "--data", data, "--out", tmp_path / "rm"], capsys)
    assert code == 2
    assert f"rankings.jsonl:2: {expected}" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "rm").exists()


def test_batch_loss_gradient_raises_the_chosen_reward(tiny_gpt2):
    tokenizer = load_tokenizer(tiny_gpt2)
    model = ScalarModel.from_backbone(tiny_gpt2, tokenizer)
    group = {"prompt": "list two animals .", "completions": ["cat dog", "rude idiot"], "finished": [True, True],
             "pairs": [(0, 1)]}
    batch = make_batch(tokenize_groups(tokenizer, [group], 64), tokenizer.pad_token_id, "cpu")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = batch_loss(model, batch)[1].item()
    for _ in range(5):
        optimizer.zero_grad()
        batch_loss(model, batch)[0].backward()
        optimizer.step()
    assert batch_loss(model, batch)[1].item() > before
