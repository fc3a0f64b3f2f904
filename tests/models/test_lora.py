"""LoRA through peft (models/lora.py): adapters on policy, reward and value models; the frozen roles are the same
weights with the adapters off; merged or adapter-only saving."""

import json

import pytest
import torch

from rlhfkit.models.loading import load_causal_lm, load_tokenizer
from rlhfkit.models.lora import DEFAULT_TARGETS, AdaptersOff, add_lora, has_lora, merged_state_dict
from rlhfkit.models.scalar import ScalarModel
from rlhfkit.train.configs import PPOConfig
from rlhfkit.train.ppo_setup import load_models
from tests.conftest import run_cli
from tests.train.test_ppo import _reward_dir
from tests.train.test_reward import _rankings

IDS = torch.tensor([[5, 6, 7, 8, 9]])


def _lora(r=4, targets=(), alpha=None):
    return type("Cfg", (), {"lora_r": r, "lora_alpha": alpha, "lora_targets": list(targets)})()


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama"])
def test_default_targets_adapt_attention_and_mlp_and_train_only_the_adapters(fixture, request):
    path = request.getfixturevalue(fixture)
    base = load_causal_lm(path, load_tokenizer(path))
    before = base(input_ids=IDS).logits
    model = add_lora(base, _lora())
    targets = {name.split(".lora_A")[0].split(".")[-1] for name, p in model.named_parameters() if "lora_A" in name}
    assert targets == set(DEFAULT_TARGETS[model.config.model_type])
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert torch.equal(model(input_ids=IDS).logits, before)  # B = 0: a fresh adapter changes nothing


def test_adapters_off_is_the_base_model_after_training(tiny_gpt2):
    base = load_causal_lm(tiny_gpt2, load_tokenizer(tiny_gpt2))
    before = base(input_ids=IDS).logits.detach()
    model = add_lora(base, _lora())
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
    for _ in range(2):
        model(input_ids=IDS).logits.square().mean().backward()
        optimizer.step()
    assert not torch.allclose(model(input_ids=IDS).logits, before)
    assert torch.equal(AdaptersOff(model)(input_ids=IDS).logits, before)


def test_ppo_with_lora_keeps_one_copy_of_the_policy_and_one_of_the_reward_model(tiny_gpt2, tmp_path):
    cfg = PPOConfig(out=str(tmp_path / "run"), policy=str(tiny_gpt2), reward=str(_reward_dir(tmp_path, tiny_gpt2)),
                    prompts="unused", lora_r=4)
    torch.manual_seed(0)
    tokenizer, policy, reference, value, reward = load_models(cfg, torch.device("cpu"))
    reward = reward.model  # the ScalarModel inside models.RewardModel
    assert has_lora(policy) and isinstance(reference, AdaptersOff) and reference.model is policy
    assert has_lora(value.backbone) and isinstance(reward.backbone, AdaptersOff)
    assert reward.backbone.model is value.backbone
    assert list(reward.parameters()) == list(reward.head.parameters())  # the reward model owns only its head
    assert all(not p.requires_grad for p in reward.parameters())
    assert any(p.requires_grad for p in value.head.parameters())  # the value head trains fully
    ids, mask = IDS, torch.ones_like(IDS)
    assert torch.equal(reward.score(ids, mask), ScalarModel.from_pretrained(cfg.reward).score(ids, mask))


def test_lora_ppo_run_starts_at_zero_kl_and_saves_a_plain_model(micro_world, tmp_path, capsys):
    out = tmp_path / "ppo"
    rm = _reward_dir(tmp_path, micro_world / "base")
    code, _, err = run_cli(["ppo", "--policy", micro_world / "base", "--reward", rm,
                            "--prompts", micro_world / "prompts/train.jsonl", "--out", out, "--ppo-steps", "2",
                            "--batch-size", "8", "--minibatch-size", "4", "--max-new-tokens", "8", "--lora-r", "4",
                            "--lr", "1e-2"], capsys)
    assert code == 0, err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["kl"] == 0.0  # the reference (adapters off) is exactly the starting policy
    assert (out / "config.json").exists() and not (out / "adapter_config.json").exists()
    trained = load_causal_lm(out)
    sft = load_causal_lm(micro_world / "base")
    assert not torch.equal(trained(input_ids=IDS).logits, sft(input_ids=IDS).logits)


@pytest.mark.parametrize("kind", ["sft", "rm"])
def test_adapter_save_loads_back_as_the_merged_model(kind, micro_world, tmp_path, capsys):
    if kind == "sft":
        args = ["sft", "--model", micro_world / "base", "--data", micro_world / "demos.jsonl", "--epochs", "1",
                "--batch-size", "64"]
    else:
        args = ["rm", "--model", micro_world / "base", "--data", _rankings(tmp_path / "r.jsonl"), "--batch-size", "8",
                "--eval-fraction", "0.3"]
    args += ["--lora-r", "4", "--lr", "1e-2"]
    for how in ("merged", "adapter"):
        code, _, err = run_cli([*args, "--out", tmp_path / how, "--lora-save", how], capsys)
        assert code == 0, err
    saved = tmp_path / "adapter"
    assert (saved / "adapter_config.json").exists() and not (saved / "config.json").exists()
    if kind == "sft":
        merged, adapter = load_causal_lm(tmp_path / "merged"), load_causal_lm(tmp_path / "adapter")
        assert torch.allclose(merged(input_ids=IDS).logits, adapter(input_ids=IDS).logits, atol=1e-5)
        base = load_causal_lm(micro_world / "base")
        assert not torch.allclose(merged(input_ids=IDS).logits, base(input_ids=IDS).logits)
        # an SFT adapter directory (no config.json) is a reward model's start: rm's architecture check reads its base
        code, _, err = run_cli(["rm", "--model", saved, "--data", _rankings(tmp_path / "r.jsonl"), "--batch-size",
                                "8", "--epochs", "1", "--out", tmp_path / "rm-from-adapter"], capsys)
        assert code == 0, err
    else:
        mask = torch.ones_like(IDS)
        merged, adapter = (ScalarModel.from_pretrained(tmp_path / name) for name in ("merged", "adapter"))
        assert torch.allclose(merged.score(IDS, mask), adapter.score(IDS, mask), atol=1e-5)
    code, _, err = run_cli(["eval", "gold", "--model", tmp_path / "adapter", "--world", micro_world, "--limit", "8"]
                           if kind == "sft" else ["eval", "rm", "--rm", tmp_path / "adapter", "--world", micro_world],
                           capsys)
    assert code == 0, err


def test_bad_lora_options_are_one_line(tiny_gpt2, tmp_path, capsys):
    (tmp_path / "d.jsonl").write_text('{"prompt": "a b", "completion": "c"}\n')
    base = ["sft", "--model", tiny_gpt2, "--data", tmp_path / "d.jsonl", "--out", tmp_path / "run"]
    for extra, expected in ((["--lora-r", "-1"], "lora_r"), (["--lora-r", "4", "--lora-save", "both"], "lora_save"),
                            (["--lora-r", "4", "--lora-targets", "nope"], "lora_targets")):
        code, _, err = run_cli([*base, *extra], capsys)
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama"])
def test_merged_state_dict_is_the_merged_model_and_leaves_the_base_weights_alone(fixture, request):
    """What the vllm engine is synced with: W + ΔW under the plain model's names (GPT-2's Conv1D stores W
    transposed); the LoRA model keeps its base weights (the reference of a LoRA run) bit for bit."""
    path = request.getfixturevalue(fixture)
    model = add_lora(load_causal_lm(path, load_tokenizer(path)), _lora())
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a trained adapter: ΔW ≠ 0
    base_before = {k: v.clone() for k, v in model.get_base_model().state_dict().items()}
    state = merged_state_dict(model)
    plain = load_causal_lm(path, load_tokenizer(path))
    assert set(state) == set(plain.state_dict())
    plain.load_state_dict(state)
    assert torch.allclose(plain(input_ids=IDS).logits, model(input_ids=IDS).logits, atol=1e-5)
    assert not torch.allclose(plain(input_ids=IDS).logits, AdaptersOff(model)(input_ids=IDS).logits, atol=1e-3)
    after = model.get_base_model().state_dict()
    assert all(torch.equal(after[k], v) for k, v in base_before.items())
