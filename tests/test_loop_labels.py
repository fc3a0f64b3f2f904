"""`rlhf loop`'s labels (loop_labels.py) and its rerun rules (loop.py), without training: exports checked against
the round's candidates, coverage counted from the app's database, config changes refused or deferred."""

import json
import uuid
from pathlib import Path

import pytest

from rlhfkit.config import to_toml
from rlhfkit.data.jsonl import write_jsonl
from rlhfkit.errors import UserError, Waiting
from rlhfkit.label.answers import parse_answer
from rlhfkit.recipes.configs import LoopConfig
from rlhfkit.recipes.loop import RoundState, check_rerun, redo_from, saved_config
from rlhfkit.recipes.loop_labels import LabelingApp, check_export, file_digest, jsonl_bytes, sha256, wait_for


def candidates(r: int, n: int = 3, k: int = 3) -> list[dict]:
    return [{"id": f"r{r}-{i}", "prompt": f"round {r} prompt {i}",
             "completions": [{"text": f"r{r} p{i} out {j}", "source": "sft@T=1.0", "finished": True}
                             for j in range(k)]} for i in range(n)]


def ranking(item: dict, labeler: str) -> dict:
    return {"id": item["id"], "prompt": item["prompt"], "completions": [c["text"] for c in item["completions"]],
            "ranking": [[0], [1, 2]], "labeler": labeler}


def export(path: Path, rows: list[dict]) -> Path:
    write_jsonl(path, rows)
    return path


def check(path, cands, **kw):
    return check_export(path, cands, 2, **({"overlap": 2, "min_coverage": 1.0, "allow_partial": False} | kw))


def test_a_complete_export_passes_with_its_coverage_and_hash(tmp_path):
    cands = candidates(2)
    path = export(tmp_path / "round-2.jsonl", [ranking(c, who) for c in cands for who in ("ann", "bob")])
    rankings, cov, digest = check(path, cands)
    assert len(rankings) == 6 and (cov.items, cov.complete, cov.rankings, cov.overlap) == (3, 3, 6, 2)
    assert digest == sha256(path.read_bytes()) == file_digest(path)


def test_a_partial_export_is_refused_unless_allowed(tmp_path):
    cands = candidates(2)
    rows = [ranking(c, who) for c in cands[:1] for who in ("ann", "bob")] + [ranking(cands[1], "ann")]
    path = export(tmp_path / "round-2.jsonl", rows)
    with pytest.raises(UserError, match=r"1 of 3 items have 2 rankings \(33%\), 3 rankings in all; the loop needs "
                                        r"100% .*--allow-partial"):
        check(path, cands)
    _, cov, _ = check(path, cands, allow_partial=True)
    assert cov.complete == 1
    assert check(path, cands, min_coverage=0.3)[1].complete == 1  # 1 of 3 items >= 30%


def test_the_same_labeler_twice_does_not_complete_an_item(tmp_path):
    cands = candidates(2, n=1)
    path = export(tmp_path / "round-2.jsonl", [ranking(cands[0], "ann"), ranking(cands[0], "ann")])
    with pytest.raises(UserError, match="0 of 1 items"):
        check(path, cands)


def test_another_rounds_export_is_refused(tmp_path):
    path = export(tmp_path / "round-2.jsonl", [ranking(c, "ann") for c in candidates(1)])
    with pytest.raises(UserError, match=r"round-2.jsonl:1: item 'r1-0' is not one of round 2's 3 items .*another "
                                        "round's export"):
        check(path, candidates(2))


def test_other_completions_under_the_same_id_are_refused(tmp_path):
    cands = candidates(2)
    row = ranking(cands[0], "ann")
    row["completions"][1] = "something the loop never sampled"
    path = export(tmp_path / "round-2.jsonl", [row])
    with pytest.raises(UserError, match=r":1: item 'r2-0': the completions differ from round 2's candidates"):
        check(path, cands)


@pytest.mark.parametrize("row, kind", [
    ({"prompt": "p", "chosen": "a", "rejected": "b", "group": "r2-0/ann"}, "pairs"),
    ({"prompt": "p", "completion": "a"}, "demos"),
    ({"id": "r2-0", "kind": "rank", "tiers": {"0": 0}, "completions": []}, "raw"),
])
def test_another_export_format_is_named(tmp_path, row, kind):
    path = export(tmp_path / "round-2.jsonl", [row])
    with pytest.raises(UserError, match=rf"round-2.jsonl:1: this is a {kind} export; the loop needs the rankings "
                                        r"export \(`rlhf label export --format rankings`\)"):
        check(path, candidates(2))


# ------------------------------------------------------------------------------------------ the app

def answer_all(app: LabelingApp, name: str, limit: int | None = None) -> int:
    """`name` ranks up to `limit` items of the project through the store (the app's own code path)."""
    token = app.store.login(app.invite(name))
    who = app.store.who(token)
    n = 0
    while (limit is None or n < limit) and (task := app.store.next_task(who)) is not None:
        k = len(task.outputs)
        body = {"client_id": str(uuid.uuid4()), "kind": "rank", "ranking": [[i] for i in range(k)],
                "likert": [4] * k}
        app.store.submit(who, task.assignment_id, parse_answer(body, "rank", k))
        n += 1
    return n


def test_one_project_serves_every_round_and_counts_each_rounds_coverage(tmp_path):
    app = LabelingApp(str(tmp_path / "labels.db"), "loop")
    assert not app.exists()
    for r in (1, 2):
        path = export(tmp_path / f"c{r}.jsonl", candidates(r))
        assert app.add_round(path, overlap=2) == 3
        assert app.add_round(path, overlap=2) == 0  # added once
    assert app.exists()
    r2 = {c["id"] for c in candidates(2)}
    assert answer_all(app, "ann", limit=4) == 4  # round 1's three items come first, then one of round 2
    assert app.coverage(r2, 2).complete == 0 and app.coverage(r2, 2).rankings == 1
    assert answer_all(app, "bob") == 6
    cov = app.coverage(r2, 2)
    assert (cov.items, cov.complete, cov.rankings) == (3, 1, 4)
    with pytest.raises(Waiting, match=r"round 2: 1 of 3 items have 2 rankings .* the loop needs 3\. Run `rlhf loop"):
        wait_for(app, 2, r2, 2, 3, wait=False, poll_seconds=0.01, rerun="rlhf loop --config x")
    assert wait_for(app, 2, r2, 2, 1, wait=False, poll_seconds=0.01, rerun="").complete == 1
    app.export(r2, tmp_path / "export.jsonl")
    assert file_digest(tmp_path / "export.jsonl") == sha256(jsonl_bytes(app.records(r2)))  # what a rerun compares
    rankings, cov, _ = check_export(tmp_path / "export.jsonl", candidates(2), 2, overlap=2, min_coverage=0.3,
                                    allow_partial=False)
    assert len(rankings) == 4 and {r["id"] for r in rankings} <= r2 and cov.complete == 1


# ------------------------------------------------------------------------------------- reruns, state

def loop_config(tmp_path, **kw) -> LoopConfig:
    return LoopConfig(out=str(tmp_path), preset="micro", **kw)


def test_a_rerun_with_other_settings_is_refused_with_the_difference(tmp_path):
    (tmp_path / "config.toml").write_text(saved_config(loop_config(tmp_path, seed=1)))
    with pytest.raises(UserError, match=r"config.toml: this loop ran with other settings: seed \(1 -> 2\)"):
        check_rerun(tmp_path, loop_config(tmp_path, seed=2))
    with pytest.raises(UserError, match=r"labels \(None -> 'app'\)"):
        check_rerun(tmp_path, loop_config(tmp_path, seed=1, labels="app"))


def test_a_rerun_may_add_rounds_and_change_later_rounds_settings(tmp_path):
    (tmp_path / "config.toml").write_text(saved_config(loop_config(tmp_path, rounds=2)))
    assert check_rerun(tmp_path, loop_config(tmp_path, rounds=3, redo_round=1, wait=False)) == []
    assert check_rerun(tmp_path, loop_config(tmp_path, ppo_steps=7)) == ["ppo_steps (None -> 7)"]
    assert "redo_round" not in saved_config(loop_config(tmp_path, redo_round=2))  # an action, not a setting
    assert to_toml(loop_config(tmp_path)) == saved_config(loop_config(tmp_path))


def test_redo_round_forgets_its_labels_and_every_later_rounds_training(tmp_path):
    for r in (1, 2, 3):
        rd = tmp_path / f"round-{r}"
        state = RoundState(rd)
        for stage in ("samples", "labels", "rm", "ppo"):
            state.mark(stage, {"r": r})
        (rd / "rm").mkdir()
        (rd / "round.json").write_text("{}")
        (rd / "rankings.jsonl").write_text("")
    redo_from(tmp_path, 2, 3)
    stages = {r: set(json.loads((tmp_path / f"round-{r}" / "state.json").read_text())["stages"]) for r in (1, 2, 3)}
    assert stages == {1: {"samples", "labels", "rm", "ppo"}, 2: {"samples"}, 3: {"samples", "labels"}}
    assert (tmp_path / "round-1" / "round.json").exists() and not (tmp_path / "round-3" / "round.json").exists()
    assert not (tmp_path / "round-2" / "rankings.jsonl").exists() and (tmp_path / "round-3" / "rankings.jsonl").exists()
    assert not (tmp_path / "round-3" / "rm").exists()


@pytest.mark.parametrize("url, port", [("http://127.0.0.1:8123", 8123), ("http://[::1]:9001/labels", 9001),
                                       ("https://labels.example.org", 8000),  # a proxy's URL: serve's default
                                       ("https://labels.example.org/a:9", 8000)])
def test_the_runbook_serves_on_the_public_urls_port_or_serves_default(url, port):
    from rlhfkit.recipes.loop_labels import _port
    assert _port(url) == port
