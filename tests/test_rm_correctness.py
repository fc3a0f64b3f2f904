"""bench/rm_correctness.py's measures: pair accuracies by gold component, the gold ranking, the untrained mean
log-probability of its hybrid reward."""

import importlib.util
import random
from pathlib import Path

import torch

from rlhfkit.data.chat import completion_ids, prompt_ids
from rlhfkit.eval.policy import load_policy
from rlhfkit.world.corpus import expert_response
from rlhfkit.world.gold import GoldReward, gold_reward
from rlhfkit.world.tasks import sample_task
from tests.tokenizers_zoo import save_tiny_model


def rm_correctness():
    path = Path(__file__).parents[1] / "bench" / "rm_correctness.py"
    spec = importlib.util.spec_from_file_location("rm_correctness", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gold_pair_accuracy_counts_pairs_whose_total_or_correctness_differs():
    bench = rm_correctness()
    gold = {"A": GoldReward(2.0, 1.0, 0.0, 0.0, 0.0, "list"),     # right and concise
            "B": GoldReward(1.5, 1.0, -0.5, 0.0, 0.0, "list"),    # right, 5 tokens too long
            "C": GoldReward(-0.2, 0.0, -0.2, 0.0, 0.0, "list"),   # wrong
            "D": GoldReward(0.0, 0.5, -1.0, 0.0, 0.0, "sort"),    # half right, long: total 2·0.5 − 1 = 0
            "E": GoldReward(0.0, 0.0, 0.0, 0.0, 0.0, "sort")}     # wrong, total 0 as well
    score = {"A": 0.3, "B": 0.5, "C": 0.1, "D": 0.2, "E": 0.2}
    result = bench.gold_pair_accuracy([["A", "B", "C"], ["D", "E"]], score, gold)
    # totals differ: A>B (score 0.3 < 0.5: 0), A>C (1), B>C (1); D, E tie on total → 2/3
    # correctness differs: A>C (1), B>C (1), D>E (scores tie: ½); A, B both right → 2.5/3
    # by family: list A>C, B>C (2/2), sort D>E (½)
    assert result == {"gold_total": {"accuracy": round(2 / 3, 4), "n_pairs": 3},
                      "correctness": {"accuracy": round(2.5 / 3, 4), "n_pairs": 3},
                      "correctness_by_family": {"list": {"accuracy": 1.0, "n_pairs": 2},
                                                "sort": {"accuracy": 0.5, "n_pairs": 1}}}
    assert bench.gold_pair_accuracy([["E"]], score, gold)["correctness"] == {"accuracy": None, "n_pairs": 0}


def test_labeler_pair_accuracy_orders_as_the_labeler_and_counts_a_tie_half():
    bench = rm_correctness()
    group = {"prompt": "p", "completions": ["x", "y", "z"], "finished": [True, True, False],
             "pairs": [(0, 1), (2, 0), (1, 2)]}
    score = {("p", "x", True): 1.0, ("p", "y", True): 0.0, ("p", "z", False): 1.0}
    # (0, 1): 1 > 0 hit; (2, 0): 1 = 1 half; (1, 2): 0 < 1 miss → 1.5 / 3
    assert bench.labeler_pair_accuracy([group], score) == {"accuracy": 0.5, "n_pairs": 3}


def test_gold_ranking_orders_by_gold_total_and_ties_equal_totals():
    bench = rm_correctness()
    task = sample_task(random.Random(3))
    right = expert_response(task, random.Random(0)).split(":")[-1].strip()
    texts = ["idiot " * 6, right, "idiot " * 6, right + " " + "blah " * 8]
    totals = [gold_reward(task.prompt, t).total for t in texts]
    assert totals[0] == totals[2] and len(set(totals)) == 3
    ranking = bench.gold_ranking(task.prompt, texts, [True] * 4)
    assert sorted(i for tier in ranking for i in tier) == [0, 1, 2, 3]
    assert [[totals[i] for i in tier] for tier in ranking] == [[v] * len(t) for v, t in
                                                              zip(sorted(set(totals), reverse=True), ranking)]
    assert [0, 2] in ranking


def test_untrained_hybrid_is_the_mean_token_log_probability_of_the_response(tmp_path):
    bench = rm_correctness()
    lm, tokenizer = load_policy(save_tiny_model(tmp_path / "policy", "chatml"))
    model = bench.HybridReward(lm, head=False).eval()
    samples = [("the cat sat on", "the mat", True), ("a dog", "ran far away from the house", False),
               ("hello", "world", True)]
    scores = bench.hybrid_scores(model, tokenizer, samples, batch_size=2)  # padded batches of unequal rows
    for prompt, text, finished in samples:
        head = prompt_ids(tokenizer, prompt)
        response = completion_ids(tokenizer, prompt, text, finished, head, whole=True)
        with torch.no_grad():
            logits = lm(torch.tensor([head + response])).logits[0].log_softmax(-1)
        # token y_t sits at position len(head) + t and is predicted at the position before it
        logp = [logits[len(head) + t - 1, y].item() for t, y in enumerate(response)]
        assert abs(scores[(prompt, text, finished)] - sum(logp) / len(logp)) < 1e-5


def test_token_statistics_and_the_mean_pooled_head_read_the_response_tokens(tmp_path):
    bench = rm_correctness()
    lm, tokenizer = load_policy(save_tiny_model(tmp_path / "policy", "chatml"))
    samples = [("the cat sat on", "the mat", True), ("a dog", "ran far away from the house", False)]
    rows = []
    for prompt, text, finished in samples:
        head = prompt_ids(tokenizer, prompt)
        rows.append((head, completion_ids(tokenizer, prompt, text, finished, head, whole=True)))
    for statistic, reduce in (("sum", sum), ("min", min)):
        model = bench.HybridReward(lm, head=False, statistic=statistic).eval()
        scores = bench.hybrid_scores(model, tokenizer, samples, batch_size=2)
        for sample, (head, response) in zip(samples, rows):
            with torch.no_grad():
                logits = lm(torch.tensor([head + response])).logits[0].log_softmax(-1)
            logp = [logits[len(head) + t - 1, y].item() for t, y in enumerate(response)]
            assert abs(scores[sample] - reduce(logp)) < 1e-4
    pooled = bench.HybridReward(lm, seed=3, pool="mean", likelihood=None).eval()
    scores = bench.hybrid_scores(pooled, tokenizer, samples, batch_size=2)
    for sample, (head, response) in zip(samples, rows):
        with torch.no_grad():
            hidden = lm(torch.tensor([head + response]), output_hidden_states=True).hidden_states[-1][0]
            per_token = pooled.head(hidden[len(head):]).squeeze(-1)  # w·h_t + b at each response token
        assert abs(scores[sample] - per_token.mean().item()) < 1e-4


def test_the_frozen_likelihood_stays_the_sft_policy_while_the_model_trains(tmp_path):
    bench = rm_correctness()
    lm, tokenizer = load_policy(save_tiny_model(tmp_path / "policy", "chatml"))
    model = bench.HybridReward(lm, likelihood="frozen")
    before = {k: v.clone() for k, v in model.reference.state_dict().items()}
    head = prompt_ids(tokenizer, "a dog")
    rows = [head + completion_ids(tokenizer, "a dog", t, True, head, whole=True) for t in ("ran", "sat on the mat")]
    model(rows, [len(head)] * 2, tokenizer.pad_token_id).sum().backward()
    assert all(p.grad is None for p in model.reference.parameters())
    assert model.a.grad is not None and any(p.grad is not None for p in model.lm.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.reference.state_dict().items())


def test_ppo_likelihood_adds_alpha_log_pi_sft_to_each_response_token():
    path = Path(__file__).parents[1] / "bench" / "ppo_likelihood.py"
    spec = importlib.util.spec_from_file_location("ppo_likelihood", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    logp, ref = torch.tensor([[-1.0, -2.0, 0.0]]), torch.tensor([[-1.5, -1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # two response tokens, then padding
    rewards = bench.with_likelihood(0.5)(torch.tensor([1.0]), logp, ref, mask, 0.1)
    # −β(log π − log π_SFT) = [−0.1·0.5, −0.1·(−1)] = [−0.05, 0.1]; r = 1 on the last token → [−0.05, 1.1];
    # + α·log π_SFT = 0.5·[−1.5, −1] = [−0.75, −0.5] → [−0.8, 0.6]; padding stays 0
    assert torch.allclose(rewards, torch.tensor([[-0.8, 0.6, 0.0]]))
    assert torch.allclose(bench.with_likelihood(0.0)(torch.tensor([1.0]), logp, ref, mask, 0.1),
                          torch.tensor([[-0.05, 1.1, 0.0]]))
