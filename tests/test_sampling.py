"""`rlhf sample` and `rlhf label simulate`: candidates from several sources, simulated rankings."""

import json

from rlhfkit.data.jsonl import read_jsonl
from rlhfkit.data.schemas import candidate_record, ranking_record
from rlhfkit.recipes import sample as sample_module
from rlhfkit.recipes.sample import assign_sources
from tests.conftest import run_cli


def test_sources_are_used_equally_within_each_prompt():
    slots = assign_sources(n_prompts=50, k=4, n_sources=2, seed=0)
    assert all(sorted(s) == [0, 0, 1, 1] for s in slots)
    assert len({tuple(s) for s in slots}) > 1  # the slot order is shuffled
    few = assign_sources(n_prompts=50, k=2, n_sources=4, seed=0)
    assert all(len(set(s)) == 2 for s in few)


def test_sample_then_simulate(micro_world, tmp_path, capsys):
    prompts = micro_world / "prompts" / "train.jsonl"
    cands = tmp_path / "cands.jsonl"
    base = micro_world / "base"
    code, out, err = run_cli(["sample", "--models", f"{base},{base}", "--prompts", prompts, "--k", "4",
                              "--temperatures", "0.7,1.0", "--limit", "12", "--max-new-tokens", "8",
                              "--out", cands], capsys)
    assert code == 0, err
    records = read_jsonl(cands, candidate_record)
    assert len(records) == 12 and all(len(r["completions"]) == 4 for r in records)
    assert {c["source"] for r in records for c in r["completions"]} == {"base@T=0.7", "base@T=1"}
    assert all("finished" in c for r in records for c in r["completions"])

    rankings = tmp_path / "rankings.jsonl"
    code, out, err = run_cli(["label", "simulate", "--world", micro_world, "--candidates", cands,
                              "--labelers", "5", "--per-item", "2", "--out", rankings], capsys)
    assert code == 0, err
    ranked = read_jsonl(rankings, ranking_record)
    assert len(ranked) == 24
    for item in records:
        mine = [r for r in ranked if r["id"] == item["id"]]
        assert len(mine) == 2 and mine[0]["labeler"] != mine[1]["labeler"]
        assert all(len(r["likert"]) == 4 and len(r["flags"]) == 4 for r in mine)
        assert mine[0]["finished"] == [c["finished"] for c in item["completions"]]
    assert "pairwise agreement" in out


def test_simulate_rejects_prompts_the_world_did_not_make(micro_world, tmp_path, capsys):
    cands = tmp_path / "cands.jsonl"
    cands.write_text(json.dumps({"id": "x", "prompt": "write me a poem", "completions": ["a", "b"]}) + "\n")
    code, _, err = run_cli(["label", "simulate", "--world", micro_world, "--candidates", cands,
                            "--out", tmp_path / "r.jsonl"], capsys)
    assert code == 2 and "cands.jsonl:1: prompt is not one of the toy world's prompts" in err
    assert not (tmp_path / "r.jsonl").exists()


def test_a_prompt_beyond_the_models_positions_is_one_line_before_any_sampling(micro_world, tmp_path, capsys):
    """A prompt whose tokens + --max-new-tokens exceed the position limit used to index past the position
    embeddings (IndexError); it is one line naming the prompt, exit 2, and no output file."""
    sft = micro_world / "base"
    limit = json.loads((sft / "config.json").read_text())["n_positions"]
    prompts = tmp_path / "prompts.jsonl"
    long = " ".join(["list"] * (limit + 8))
    prompts.write_text(json.dumps({"id": "short", "prompt": "list three colors"}) + "\n"
                       + json.dumps({"id": "too-long", "prompt": long}) + "\n")
    out = tmp_path / "candidates.jsonl"
    code, _, err = run_cli(["sample", "--models", str(sft), "--prompts", str(prompts), "--out", str(out),
                            "--k", "2", "--max-new-tokens", "8"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "too-long" in err and f"position limit {limit}" in err
    assert not out.exists()


def test_each_model_is_loaded_once_for_all_its_temperatures(micro_world, tmp_path, capsys, monkeypatch):
    loads, real = [], sample_module.load_causal_lm
    monkeypatch.setattr(sample_module, "load_causal_lm", lambda path, *a, **kw: loads.append(path) or real(path, *a))
    base, prompts = micro_world / "base", micro_world / "prompts" / "train.jsonl"
    code, _, err = run_cli(["sample", "--models", f"{base},{base}", "--prompts", prompts, "--k", "4",
                            "--temperatures", "0.7,1.0,1.3", "--limit", "6", "--max-new-tokens", "4",
                            "--out", tmp_path / "c.jsonl"], capsys)
    assert code == 0, err
    assert loads == [str(base)]  # one load of the model for its three temperatures (it was named twice)
    sources = {c["source"] for r in read_jsonl(tmp_path / "c.jsonl", candidate_record) for c in r["completions"]}
    assert sources == {"base@T=0.7", "base@T=1", "base@T=1.3"}
