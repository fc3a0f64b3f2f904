import hashlib
import json

from transformers import AutoConfig, AutoModelForCausalLM

from rlhfkit.train.common import split_by_prompt
from rlhfkit.train.sft import SFTConfig, read_demos
from tests.conftest import run_cli


def _losses(run_dir):
    return [r["train_loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
            if "train_loss" in r]


def _sft(model, data, out, capsys, *extra):
    code, _, err = run_cli(["sft", "--model", model, "--data", data, "--out", out, "--epochs", "1",
                            "--batch-size", "16", "--log-every", "1", *extra], capsys)
    assert code == 0, err


def test_same_seed_gives_identical_losses(micro_world, tmp_path, capsys):
    data = micro_world / "demos.jsonl"
    _sft(micro_world / "base", data, tmp_path / "a", capsys)
    _sft(micro_world / "base", data, tmp_path / "b", capsys)
    _sft(micro_world / "base", data, tmp_path / "c", capsys, "--seed", "1")
    a, b, c = _losses(tmp_path / "a"), _losses(tmp_path / "b"), _losses(tmp_path / "c")
    assert len(a) > 10 and a == b
    assert a != c


def test_run_directory_holds_config_metrics_and_a_loadable_model(micro_world, tmp_path, capsys):
    out = tmp_path / "sft"
    _sft(micro_world / "base", micro_world / "demos.jsonl", out, capsys, "--set", "lr=0.001")
    assert "lr = 0.001" in (out / "config.toml").read_text()
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_loss" in r for r in records)  # a held-out split by prompt was scored
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.pad_token_id != model.config.eos_token_id
    assert (out / "tokenizer.json").exists()


def test_sft_lowers_the_loss_on_demonstrations(micro_world, tmp_path, capsys):
    out = tmp_path / "sft"
    _sft(micro_world / "base", micro_world / "demos.jsonl", out, capsys, "--epochs", "3")
    losses = _losses(out)
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5


def test_tiny_llama_trains_through_the_same_command(tiny_llama, micro_world, tmp_path, capsys):
    out = tmp_path / "llama-sft"
    _sft(tiny_llama, micro_world / "demos.jsonl", out, capsys)
    assert AutoConfig.from_pretrained(out).model_type == "llama"
    assert type(AutoModelForCausalLM.from_pretrained(out)).__name__ == "LlamaForCausalLM"


def test_split_by_prompt_keeps_all_demonstrations_of_a_prompt_together():
    records = [{"prompt": f"p{i % 50}", "completion": str(i)} for i in range(500)]
    train, held = split_by_prompt(records, 0.2, seed=0, salt="sft-eval")
    assert held and train and len(train) + len(held) == 500
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in held}


def _hash_rule(prompt, fraction: float, seed: int, salt: str) -> bool:
    """The split's rule written out: md5 of salt|seed|prompt, its first 8 hex digits mod 10⁴ < fraction·10⁴."""
    return int(hashlib.md5(f"{salt}|{seed}|{prompt}".encode()).hexdigest()[:8], 16) % 10_000 < fraction * 10_000


def _conversations(n: int) -> list[dict]:
    return [{"messages": [{"role": "user", "content": f"Question {i}?"}, {"role": "assistant", "content": f"{i}."}]}
            for i in range(n)]


def test_a_small_messages_file_holds_out_at_least_one_conversation(tmp_path):
    """48 conversations at 5%: for this seed the hash rule alone holds out none (issue 31, item 9)."""
    rows = _conversations(48)
    seed = next(s for s in range(1000) if not any(_hash_rule(str(r["messages"]), 0.05, s, "sft-eval") for r in rows))
    data = tmp_path / "chats.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    train, held = read_demos(SFTConfig(data=str(data), eval_fraction=0.05, seed=seed))
    assert len(held) == 1 and len(train) == 47


def test_larger_files_hold_out_what_the_hash_rule_holds_out():
    """The rule above decides every split that holds out at least one prompt: the demo's splits do not move."""
    records = [{"prompt": f"p{i}", "completion": "c"} for i in range(400)] * 2
    for seed in range(3):
        train, held = split_by_prompt(records, 0.05, seed=seed, salt="sft-eval")
        assert [r["prompt"] for r in held] == [r["prompt"] for r in records if _hash_rule(r["prompt"], 0.05, seed,
                                                                                           "sft-eval")]
        assert len(train) + len(held) == 800 and held


def test_one_prompt_holds_out_nothing_and_says_so(capsys):
    records = [{"prompt": "the only one", "completion": str(i)} for i in range(5)]
    assert split_by_prompt(records, 0.9, seed=0, salt="sft-eval", command="sft") == (records, [])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("sft: all 5 records have the same prompt: none held out")
