"""`rlhf loop`: rounds of sample → label → RM on all comparisons so far → PPO, resumable; app labels by file."""

import json
from pathlib import Path

from tests.conftest import run_cli


def test_two_rounds_then_resume_adds_a_third(micro_world, tmp_path, capsys):
    out = tmp_path / "loop"
    args = ["loop", "--world", micro_world, "--out", out, "--prompts-per-round", "40", "--ppo-steps", "2"]
    code, stdout, err = run_cli(args + ["--rounds", "2"], capsys)
    assert code == 0, err
    assert 'preset = "micro"' in (out / "config.toml").read_text()  # no --preset: the --world's own, not tiny
    rows = json.loads((out / "report.json").read_text())["rounds"]
    assert [r["round"] for r in rows] == [1, 2]
    assert rows[1]["rankings"] == 2 * rows[0]["rankings"]  # the RM of round 2 sees both rounds' comparisons
    sources = {c["source"] for line in (out / "round-2" / "candidates.jsonl").read_text().splitlines()
               for c in json.loads(line)["completions"]}
    assert {s.split("@")[0] for s in sources} == {"ppo", "sft"}  # the current and the initial policy
    first = (out / "round-1" / "round.json").read_text()
    code, stdout, err = run_cli(args + ["--rounds", "3"], capsys)
    assert code == 0, err
    assert (out / "round-1" / "round.json").read_text() == first  # finished rounds are not redone
    assert [r["round"] for r in json.loads((out / "report.json").read_text())["rounds"]] == [1, 2, 3]


def test_labels_from_the_app_wait_for_the_export(micro_world, tmp_path, capsys):
    out, labels = tmp_path / "loop", tmp_path / "labels"
    args = ["loop", "--world", micro_world, "--preset", "micro", "--out", out, "--prompts-per-round", "8",
            "--ppo-steps", "1", "--rounds", "1", "--labels-dir", labels, "--per-item", "3"]
    code, stdout, err = run_cli(args, capsys)
    assert code == 3 and "waiting for labels" in stdout and "waiting: round 1" in err  # 3: waiting, not done
    assert "--overlap 3" in stdout  # the app project's overlap is --per-item
    assert not (out / "round-1" / "round.json").exists() and not (out / "report.json").exists()
    candidates = (out / "round-1" / "candidates.jsonl").read_text()
    code, stdout, _ = run_cli(args + ["--prompts-per-round", "4"], capsys)  # applies from the next round on
    assert code == 3 and (out / "round-1" / "candidates.jsonl").read_text() == candidates  # never re-sampled
    assert "prompts_per_round (8 -> 4): applies from the next round that has not started" in stdout
    args[args.index("--prompts-per-round") + 1] = "4"
    # a labeler team ranks the candidates in the app and exports them (here: written directly)
    labels.mkdir()
    rows = []
    for labeler, line in [(name, line) for name in ("alice", "bob", "carol") for line in candidates.splitlines()]:
        item = json.loads(line)
        k = len(item["completions"])
        rows.append({"id": item["id"], "prompt": item["prompt"],
                     "completions": [c["text"] for c in item["completions"]],
                     "ranking": [[i] for i in range(k)], "labeler": labeler})
    export = labels / "round-1.jsonl"
    export.write_text("".join(json.dumps(r) + "\n" for r in rows[:-3]))  # carol has not finished
    code, _, err = run_cli(args, capsys)
    assert code == 2 and "round-1.jsonl: 5 of 8 items have 3 rankings (62%)" in err and "--allow-partial" in err
    assert not (out / "round-1" / "rankings.jsonl").exists()
    export.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    assert json.loads((out / "round-1" / "round.json").read_text())["rankings"] == len(rows)
    state = json.loads((out / "round-1" / "state.json").read_text())
    assert set(state["stages"]) == {"samples", "labels", "rm", "ppo"}
    assert state["stages"]["labels"]["coverage"] == {"items": 8, "complete": 8, "rankings": 24, "overlap": 3}
    # a changed export after the round trained on it is reported, with the way to retrain from it
    export.write_text("".join(json.dumps(r) + "\n" for r in rows[:-1]))
    code, stdout, err = run_cli(args, capsys)
    assert code == 0 and "round 1: its labels changed since the round trained on them (24 rankings then, 23 " \
                         "now); rerun with --redo-round 1" in stdout


def test_a_run_killed_while_writing_a_rounds_record_resumes(micro_world, tmp_path, capsys, monkeypatch):
    """round.json marks a finished round: a kill halfway through writing it must not leave half a record that
    the resume then cannot read (it is written to a temporary file and renamed)."""
    out = tmp_path / "loop"
    args = ["loop", "--world", micro_world, "--out", out, "--prompts-per-round", "16", "--ppo-steps", "1",
            "--rounds", "1"]
    plain_write = Path.write_text

    def killed_halfway(self, text, *a, **k):
        if self.name == "round.json":
            plain_write(self, text[:len(text) // 2], *a, **k)
            raise KeyboardInterrupt
        return plain_write(self, text, *a, **k)

    monkeypatch.setattr(Path, "write_text", killed_halfway)
    try:
        run_cli(args, capsys)
    except KeyboardInterrupt:
        pass
    monkeypatch.setattr(Path, "write_text", plain_write)
    code, stdout, err = run_cli(args, capsys)  # the same command again continues OUT's run
    assert code == 0, err
    assert json.loads((out / "round-1" / "round.json").read_text())["round"] == 1
    assert [r["round"] for r in json.loads((out / "report.json").read_text())["rounds"]] == [1]
