"""PPO, RLOO and GRPO on multi-turn trajectories (train/trajectory.py): the losses read the policy's tokens only,
turn-level GAE skips the environment's (losses.turn_gae), and `rlhf ppo --environment` runs end to end."""

import copy
import json
from dataclasses import replace

import pytest
import torch

from rlhfkit import losses as L
from rlhfkit.engines.hf import HFEngine
from rlhfkit.engines.multiturn import Trajectories, rollout
from rlhfkit.environments import load_environment
from rlhfkit.errors import UserError
from rlhfkit.generation import Samples
from rlhfkit.models.loading import load_tokenizer
from rlhfkit.models.policy import response_logprobs, response_values
from rlhfkit.models.scalar import ScalarModel
from rlhfkit.rewards.combine import RewardBatch
from rlhfkit.rewards.functions import load_reward_function
from rlhfkit.runtime.optim import make_optimizer
from rlhfkit.train.configs import PPOConfig
from rlhfkit.train.ppo import advantages, measure, ppo_update, surrogate_loss
from rlhfkit.train.ppo_setup import load_models
from rlhfkit.train.rollout import Rollout
from rlhfkit.train.trajectory import score_turns
from tests.conftest import run_cli
from tests.trajectories_zoo import PROMPT, trained_policy

LOOKUP = "tests.trajectories_zoo:Lookup"


# ------------------------------------------------------------------------------------------ turn-level GAE

def test_turn_gae_equals_the_hand_computed_example_with_a_tool_reply_between_two_turns():
    """Turn 1 = tokens 0-1, the tool reply = tokens 2-3 (its values and rewards are nonsense: never read), turn 2 =
    tokens 4-5, then padding. γ = 0.9, λ = 0.5, so γλ = 0.45.

        t=5: δ = 1 + 0.9·0 − 0.8 = 0.2                      A5 = 0.2
        t=4: δ = 0 + 0.9·0.8 − 0.6 = 0.12                   A4 = 0.12 + 0.45·0.2 = 0.21
        t=1: δ = 0.5 + 0.9·V4 − 0.4 = 0.5 + 0.54 − 0.4 = 0.64   (V4 = 0.6: the next model token, after the reply)
                                                            A1 = 0.64 + 0.45·0.21 = 0.7345
        t=0: δ = 0 + 0.9·0.4 − 0.2 = 0.16                   A0 = 0.16 + 0.45·0.7345 = 0.490525
        returns Ĝ = A + V: 0.690525, 1.1345, 0, 0, 0.81, 1.0, 0
    """
    mask = torch.tensor([[1, 1, 0, 0, 1, 1, 0]])
    rewards = torch.tensor([[0.0, 0.5, 9.0, -9.0, 0.0, 1.0, 9.0]])
    values = torch.tensor([[0.2, 0.4, 9.0, -9.0, 0.6, 0.8, 9.0]])
    adv, returns = L.turn_gae(rewards, values, mask, gamma=0.9, lam=0.5)
    assert adv[0].tolist() == pytest.approx([0.490525, 0.7345, 0, 0, 0.21, 0.2, 0])
    assert returns[0].tolist() == pytest.approx([0.690525, 1.1345, 0, 0, 0.81, 1.0, 0])


def test_turn_gae_of_one_turn_is_gae():
    """Single-turn is the special case of one turn: the model mask is the response mask."""
    gen = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(4, 9, generator=gen), torch.randn(4, 9, generator=gen)
    mask = (torch.arange(9)[None, :] < torch.tensor([[9], [5], [1], [7]])).long()
    for got, want in zip(L.turn_gae(rewards, values, mask, 0.97, 0.9), L.gae(rewards, values, mask, 0.97, 0.9)):
        assert torch.allclose(got, want, atol=1e-6)


# -------------------------------------------------------------------- RLOO and GRPO over whole trajectories

def hand_rollout() -> Rollout:
    """Two trajectories of one prompt. A: turn (2 tokens), reply (2), turn (1); B: one turn of one token. Log-probs
    are equal to the reference's on the policy's tokens and nonsense on the environment's."""
    model_mask = torch.tensor([[1, 1, 0, 0, 1], [1, 0, 0, 0, 0]])
    response_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 0, 0, 0]])
    samples = Samples(torch.zeros(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.long),
                      torch.zeros(2, 5, dtype=torch.long), response_mask, torch.tensor([True, True]), ["a", "b"],
                      ["p", "p"], model_mask=model_mask)
    logp = torch.tensor([[-1.0, -2.0, -7.0, -8.0, -1.5], [-0.5, 0, 0, 0, 0]])
    ref_logp = torch.where(model_mask.bool(), logp, torch.tensor(-30.0))
    turn_rewards = torch.tensor([[0.0, 0.5, 0, 0, 0], [0.2, 0, 0, 0, 0]])
    return Rollout(samples, logp, ref_logp, torch.zeros(2, 5), torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]),
                   0.0, {}, turn_rewards)


@pytest.mark.parametrize("advantage", ["rloo", "grpo"])
def test_rloo_and_grpo_judge_whole_trajectories_on_the_policy_tokens(advantage):
    """R(A) = r 1.0 + turn reward 0.5 = 1.5 (the KL term is 0 on the policy's tokens; the environment's tokens,
    whose log-probs differ by 22-23 from the reference's, add nothing), R(B) = 0 + 0.2 = 0.2.
    RLOO: Â_A = 1.5 − 0.2 = 1.3, Â_B = −1.3. GRPO: mean 0.85, std = 1.3/√2 = 0.919239, Â = ±0.65/(0.919239 + 1e-4)."""
    cfg = PPOConfig(policy="p", prompts="p", reward="r", advantage=advantage, num_generations=2, batch_size=2,
                    minibatch_size=2, kl_in="reward")
    rewards, adv, returns = advantages(hand_rollout(), 0.1, cfg)
    assert rewards.sum(-1).tolist() == pytest.approx([1.5, 0.2])
    a = 1.3 if advantage == "rloo" else 0.65 / (1.3 / 2 ** 0.5 + 1e-4)
    assert adv.flatten().tolist() == pytest.approx([a, a, 0, 0, a, -a, 0, 0, 0, 0], rel=1e-5)
    assert returns is None


# ---------------------------------------------------------------------------- reward functions per turn

def hand_trajectories() -> Trajectories:
    """Trajectory 1: a call (tokens 0-1), its reply (2-3), an answer (4); trajectory 2: an answer (0)."""
    call = {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "lookup", "arguments": {"key": "a"}}}]}
    answer = {"role": "assistant", "content": "16"}
    return Trajectories(
        torch.zeros(2, 1, dtype=torch.long), torch.ones(2, 1, dtype=torch.long), torch.zeros(2, 5, dtype=torch.long),
        torch.tensor([[1, 1, 1, 1, 1], [1, 0, 0, 0, 0]]), torch.tensor([True, False]), ["16", "16"], [PROMPT, PROMPT],
        model_mask=torch.tensor([[1, 1, 0, 0, 1], [1, 0, 0, 0, 0]]), turn_rewards=torch.zeros(2, 5),
        turns=[[(0, 2), (4, 5)], [(0, 1)]],
        messages=[[call, {"role": "tool", "name": "lookup", "content": "7"}, answer], [answer]],
        environments=["env 1", "env 2"])


def test_a_turn_reward_function_scores_each_turn_on_its_last_token(tmp_path):
    """f gives a call 0.1·turn and an answer 1 + turn: trajectory 1 gets 0.1 (turn 1, at token 1) and 3 (turn 2, at
    token 4); trajectory 2 gets 2 (turn 1, at token 0)."""
    source = tmp_path / "turns.py"
    source.write_text(
        "def f(prompts, completions, turn, environments, finished, id, **kwargs):\n"
        "    assert environments in (['env 1', 'env 2'], ['env 1']) and id[0] == 'q1'\n"
        "    return [0.1 * k if c[0].get('tool_calls') else 1.0 + k for c, k in zip(completions, turn)]\n",
        encoding="utf-8")
    samples = hand_trajectories()
    score_turns(samples, load_reward_function(f"{source}:f"), RewardBatch(None, [{"id": "q1"}, {"id": "q2"}],
                                                                          ["row 1", "row 2"]))
    assert samples.turn_rewards.flatten().tolist() == pytest.approx([0, 0.1, 0, 0, 3.0, 2.0, 0, 0, 0, 0])


def test_a_turn_reward_function_that_raises_names_the_row_and_turn(tmp_path):
    source = tmp_path / "turns.py"
    source.write_text("def f(prompts, completions, turn, **kwargs):\n"
                      "    if 2 in turn:\n        raise ValueError('no')\n    return [0.0] * len(turn)\n",
                      encoding="utf-8")
    with pytest.raises(UserError, match=r"^reward function turns:f raised ValueError: no on row 1, turn 2$"):
        score_turns(hand_trajectories(), load_reward_function(f"{source}:f"),
                    RewardBatch(None, [{}, {}], ["row 1", "row 2"]))


# ------------------------------------------------------------------ the losses see only the policy's tokens

@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory):
    return trained_policy(tmp_path_factory)


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory, policy_dir):
    out = tmp_path_factory.mktemp("tool-rm") / "rm"
    ScalarModel.from_backbone(policy_dir).save_pretrained(out)
    load_tokenizer(policy_dir).save_pretrained(out)
    return out


@pytest.mark.parametrize("kl_in", ["reward", "loss"])
def test_policy_kl_and_value_losses_ignore_environment_tokens(policy_dir, reward_dir, tmp_path, kl_in):
    """A 3-turn trajectory (two tool replies): the update's losses and statistics are the same to the last bit when
    the environment tokens' log-probs (old, reference and fresh) and values are changed — and not when one of the
    policy's tokens' is."""
    cfg = PPOConfig(out=str(tmp_path / "run"), policy=str(policy_dir), reward=str(reward_dir), prompts="unused",
                    batch_size=2, minibatch_size=2, ppo_epochs=2, max_new_tokens=100, lr=1e-3, kl_in=kl_in,
                    environment=LOOKUP, max_trajectory_tokens=300, max_prompt_length=600)
    tokenizer, policy, reference, value, reward = load_models(cfg, torch.device("cpu"))
    samples = rollout(HFEngine(policy, tokenizer), tokenizer, load_environment(LOOKUP), [PROMPT, PROMPT],
                      [{}, {}], ["row 1", "row 2"], max_turns=4, max_tokens=300, tool_timeout=5.0,
                      max_new_tokens=100, greedy=True)
    env = (samples.response_mask.bool() & ~samples.model_mask.bool()).float()
    assert samples.turns[0] and len(samples.turns[0]) == 3 and env.sum() > 0
    measured = measure(samples, policy, reference, value, reward, cfg)
    noise = torch.randn(env.shape, generator=torch.Generator().manual_seed(1)) * 5 * env

    def update(r: Rollout) -> list[dict]:
        _, adv, returns = advantages(r, cfg.kl_coef, cfg)
        p, v = copy.deepcopy(policy), copy.deepcopy(value)
        optimizer = make_optimizer(list(p.parameters()) + list(v.parameters()), cfg.lr)
        return ppo_update(p, v, optimizer, r, adv, returns, cfg, cfg.kl_coef, torch.Generator().manual_seed(0))

    changed = replace(measured, logp=measured.logp + noise, ref_logp=measured.ref_logp - noise,
                      values=measured.values + noise)
    assert update(changed) == update(measured)

    # The fresh log-probs and values of the update's forward pass, changed on the environment's tokens.
    ids, attn, width = samples.input_ids, samples.attention_mask, samples.prompt_ids.shape[1]
    logp, _ = response_logprobs(policy, ids, attn, width)
    values = response_values(value, ids, attn, width)
    _, adv, returns = advantages(measured, cfg.kl_coef, cfg)
    mask = measured.mask
    loss = surrogate_loss(logp, measured.logp, measured.ref_logp, adv, mask, cfg, cfg.kl_coef)
    assert torch.equal(surrogate_loss(logp + noise, measured.logp, measured.ref_logp, adv, mask, cfg, cfg.kl_coef),
                       loss)
    value_loss = L.clipped_value_loss(values, measured.values, returns, mask)
    assert torch.equal(L.clipped_value_loss(values + noise, measured.values, returns, mask), value_loss)

    policy_token = torch.zeros_like(env)
    policy_token[0, samples.turns[0][1][0]] = 1.0  # the first token of turn 2: the policy's
    assert not torch.equal(surrogate_loss(logp + policy_token, measured.logp, measured.ref_logp, adv, mask, cfg,
                                          cfg.kl_coef), loss)
    assert update(replace(measured, logp=measured.logp + 0.5 * policy_token)) != update(measured)


# ------------------------------------------------------------------------------------------ the command

def write_prompts(path, prompts):
    path.write_text("".join(json.dumps({"prompt": p, "id": f"q{i}"}) + "\n" for i, p in enumerate(prompts)),
                    encoding="utf-8")
    return path


@pytest.mark.parametrize("advantage", ["gae", "grpo"])
def test_ppo_command_with_an_environment(policy_dir, reward_dir, tmp_path, capsys, advantage):
    prompts = write_prompts(tmp_path / "prompts.jsonl", [PROMPT, PROMPT])
    out = tmp_path / "run"
    code, _, err = run_cli(["ppo", "--policy", policy_dir, "--reward", reward_dir, "--prompts", prompts, "--out", out,
                            "--environment", LOOKUP, "--max-turns", "3", "--max-new-tokens", "80",
                            "--max-trajectory-tokens", "300", "--max-prompt-length", "600", "--temperature", "0.05",
                            "--ppo-steps", "1", "--batch-size", "2", "--minibatch-size", "2", "--ppo-epochs", "1",
                            "--advantage", advantage, "--num-generations", "2",
                            "--turn-reward-fn", "tests.trajectories_zoo:answered"], capsys)
    assert code == 0, err
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["turns"] == 3 and record["tool_calls"] == 2 and record["tool_errors"] == 0
    # Lookup's 0.5 on each of the 3 turns, its 1 at the end, `answered`'s 0.25 on the answer
    assert record["env_reward"] == pytest.approx(0.5 * 3 + 1.0 + 0.25) and 0 < record["env_token_share"] < 1
    assert record["eos_rate"] == 1.0


@pytest.mark.parametrize("extra, message", [
    (["--environment", "nosuchmodule:Env"], "--environment 'nosuchmodule:Env': no module named 'nosuchmodule'"),
    (["--environment", LOOKUP, "--rollout-engine", "hf-static"], "multi-turn rollouts run on --rollout-engine hf"),
    (["--environment", LOOKUP, "--max-turns", "0"], "config key 'max_turns' must be at least 1"),
    (["--environment", LOOKUP, "--num-processes", "2"], "--environment runs with one process"),
    (["--environment", LOOKUP, "--max-trajectory-tokens", "2000"], "beyond the model's position limit"),
    (["--turn-reward-fn", "tests.trajectories_zoo:call"], "config key 'turn_reward_fn' needs --environment"),
    (["--environment", LOOKUP, "--turn-reward-fn", "nosuchmodule:f"], "--turn-reward-fn 'nosuchmodule:f': no module"),
])
def test_a_bad_environment_option_is_one_line_and_no_run(policy_dir, reward_dir, tmp_path, capsys, extra, message):
    prompts = write_prompts(tmp_path / "prompts.jsonl", [PROMPT])
    out = tmp_path / "run"
    code, _, err = run_cli(["ppo", "--policy", policy_dir, "--reward", reward_dir, "--prompts", prompts, "--out", out,
                            "--max-prompt-length", "600", *extra], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_string_prompts_need_a_conversation(policy_dir, reward_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "What is a + b?"}) + "\n", encoding="utf-8")
    code, _, err = run_cli(["ppo", "--policy", policy_dir, "--reward", reward_dir, "--prompts", prompts,
                            "--out", tmp_path / "run", "--environment", LOOKUP], capsys)
    assert code == 2 and f"{prompts}: prompt 1: --environment needs conversational prompts" in err, err
