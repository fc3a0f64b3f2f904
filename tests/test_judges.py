"""recipes/judges.py: bootstrap heads on a reward model's features (the ensemble of --select uncertain), a causal
LM as a judge, and `rlhf sample --select` choosing from a pool."""

import json
import math

import pytest
import torch

from rlhfkit.data.jsonl import read_jsonl
from rlhfkit.models.loading import load_tokenizer
from rlhfkit.models.scalar import ScalarModel
from rlhfkit.recipes.judges import bootstrap_heads, bootstrap_loss, load_scorer
from tests.conftest import run_cli
from tests.tokenizers_zoo import save_tiny_model


def test_bootstrap_loss_by_hand():
    # w = (1, 0); pairs Δφ = (1, 0) counted twice, (0, 1) not drawn; w0 = 0, λ = 1:
    # −(2·log σ(1) + 0)/2 = 0.313262, plus ½·‖(1, 0)‖² = 0.5 -> 0.813262
    loss = bootstrap_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0], [0.0, 1.0]]),
                          torch.tensor([[2.0, 0.0]]), torch.zeros(2), 1.0)
    assert loss.item() == pytest.approx(-math.log(1 / (1 + math.exp(-1))) + 0.5, abs=1e-6)


def test_bootstrap_heads_follow_their_resamples_and_stay_near_the_rm_head():
    g = torch.Generator().manual_seed(0)
    diffs = torch.randn(40, 3, generator=g) + torch.tensor([2.0, 0.0, 0.0])  # winners are higher along x
    w0 = torch.zeros(3)
    heads = bootstrap_heads(diffs, w0, heads=4, seed=1)
    assert heads.shape == (4, 3) and (heads[:, 0] > 0.3).all()
    assert heads.std(0).sum() > 1e-3  # different resamples, different heads: the ensemble's spread
    tight = bootstrap_heads(diffs, w0, heads=4, seed=1, l2=1e4)
    assert tight.abs().max() < 0.01  # pulled to the RM's head
    assert torch.equal(bootstrap_heads(diffs, w0, heads=4, seed=1), heads)  # seeded


def test_a_causal_lm_judges_by_the_log_odds_of_yes(tmp_path):
    path = save_tiny_model(tmp_path / "lm", "chatml")
    name, score = load_scorer(str(path))
    assert name == "lm:lm"
    prompts, texts = ["what is 2 + 2 ?", "what is 2 + 2 ?", "name a colour"], ["4", "five hundred", "red"]
    batched = score(prompts, texts, [True] * 3)
    judge = score  # the LMJudge itself
    for p, t, s in zip(prompts, texts, batched):
        ids = torch.tensor([judge.question_ids(p, t)])
        last = judge.model(input_ids=ids).logits[0, -1].float().log_softmax(-1)
        assert s == pytest.approx((last[judge.yes] - last[judge.no]).item(), abs=1e-4)  # padding changes nothing
    assert judge.question_ids(prompts[0], "4")[-3:] != judge.tokenizer.encode("Reply:")[-3:]  # via the template


def test_sample_select_uncertain_chooses_from_a_pool_with_a_random_share(micro_world, tmp_path, capsys):
    base, prompts = micro_world / "base", micro_world / "prompts" / "train.jsonl"
    rm = tmp_path / "rm"
    ScalarModel.from_backbone(base, load_tokenizer(base)).save_pretrained(rm)
    load_tokenizer(base).save_pretrained(rm)
    first = tmp_path / "first.jsonl"
    assert run_cli(["sample", "--models", base, "--prompts", prompts, "--k", "3", "--limit", "8",
                    "--max-new-tokens", "6", "--out", first], capsys)[0] == 0
    rankings = tmp_path / "rankings.jsonl"
    assert run_cli(["label", "simulate", "--world", micro_world, "--candidates", first, "--out", rankings,
                    "--per-item", "1"], capsys)[0] == 0
    out = tmp_path / "chosen.jsonl"
    code, stdout, err = run_cli(["sample", "--models", base, "--prompts", prompts, "--k", "3", "--limit", "6",
                                 "--max-new-tokens", "6", "--select", "uncertain", "--select-rm", rm,
                                 "--select-data", rankings, "--ensemble", "3", "--select-from", "12",
                                 "--pool-k", "5", "--random-share", "0.2", "--out", out], capsys)
    assert code == 0, err
    chosen = read_jsonl(out)
    assert len(chosen) == 6 and all(len(c["completions"]) == 3 for c in chosen)
    assert [c["selected"]["by"] for c in chosen] == ["random"] + ["uncertain"] * 5  # ⌊0.2·6 + ½⌋ = 1
    scores = [c["selected"]["score"] for c in chosen[1:]]
    assert scores == sorted(scores, reverse=True) and all(0 <= s <= math.log(2) + 1e-9 for s in scores)
    assert "chosen by --select uncertain (1 of them at random) from 12 prompts x 5" in stdout
    code, _, err = run_cli(["sample", "--models", base, "--prompts", prompts, "--out", tmp_path / "x.jsonl",
                            "--select", "uncertain", "--limit", "4"], capsys)
    assert code == 2 and "'select_rm'" in err and not (tmp_path / "x.jsonl").exists()
    json.dumps(chosen)
