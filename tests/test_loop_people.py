"""`rlhf loop --labels app` end to end, as a team would run it: two rounds labeled by two scripted people over the
app's JSON API (a real server on 127.0.0.1), partial coverage waiting, a mismatched export refused, and a SIGKILL
during round 2's PPO that resumes from its checkpoint to the same final metrics as a run never interrupted."""

import json
import re
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from contextlib import closing
from pathlib import Path

import pytest

from rlhfkit.world.build import World
from tests.conftest import run_cli
from tests.label.conftest import ApiLabeler, LiveServer

pytestmark = pytest.mark.slow
ITEMS = 6


def loop_args(world, out, *extra) -> list[str]:
    return ["loop", "--world", str(world), "--preset", "micro", "--out", str(out), "--rounds", "2",
            "--prompts-per-round", str(ITEMS), "--ppo-steps", "6", "--checkpoint-every", "1", "--labels", "app",
            "--invite", "ann,bob", "--per-item", "2", "--poll-seconds", "0.3", *extra]


def start_loop(args, log: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rlhfkit.cli", *args], stdout=log.open("w"),
                            stderr=subprocess.STDOUT)


class Person:
    """A labeler of the toy world (ranks by a noisy view of the gold reward) answering through the JSON API."""

    def __init__(self, url: str, link: str, judge):
        self.api, self.judge = ApiLabeler(url, link.rsplit("/", 1)[1]), judge
        self.api.login()

    def label(self, limit: int, wait_s: float = 0) -> list[str]:
        """Rank up to `limit` items; with `wait_s`, wait that long for the first one to appear."""
        done, deadline = [], time.monotonic() + wait_s
        while len(done) < limit:
            task = self.api.next()
            if task is None:
                if done or time.monotonic() > deadline:
                    return done
                time.sleep(0.3)
                continue
            texts = [o["text"] for o in sorted(task["outputs"], key=lambda o: o["index"])]
            finished = [o["finished"] for o in sorted(task["outputs"], key=lambda o: o["index"])]
            meant = self.judge.label(task["item_id"], task["prompt"], texts, finished)
            body = {"client_id": str(uuid.uuid4()), "assignment_id": task["assignment_id"],
                    "kind": "rank", "ranking": meant["ranking"], "likert": meant["likert"], "flags": meant["flags"]}
            assert self.api.submit(body).status_code == 201
            done.append(task["item_id"])
        return done


def imported_ids(db: Path, shown: list[str]) -> list[str]:
    """The imported ids of items labelers saw under their public ids (issue 31, item 13)."""
    with closing(sqlite3.connect(db)) as conn:
        imported = dict(conn.execute("SELECT public_id, ext_id FROM item").fetchall())
    return [imported[i] for i in shown]


def metrics(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "wall_s"}


def test_two_rounds_with_people_over_the_api(micro_world, tmp_path, capsys):
    out = tmp_path / "loop"
    # round 1 is sampled and offered; nobody has labeled: waiting, exit code 3, no report
    code, stdout, err = run_cli(loop_args(micro_world, out, "--no-wait"), capsys)
    assert code == 3 and "waiting: round 1: 0 of 6 items have 2 rankings" in err, (stdout, err)
    assert "rlhf label serve --db" in stdout and "admin (progress" in stdout
    links = dict(re.findall(r"^ +(ann|bob): (http://\S+/invite/\S+)$", stdout, re.M))
    assert set(links) == {"ann", "bob"} and not (out / "report.json").exists()
    assert (out / "config.toml").exists()
    candidates = (out / "round-1" / "candidates.jsonl").read_text()

    server = LiveServer(str(out / "labels.db")).start()
    try:
        people_label_two_rounds(micro_world, out, tmp_path, capsys, server, links, candidates)
    finally:
        server.stop()


def people_label_two_rounds(micro_world, out, tmp_path, capsys, server, links, candidates):
    judges = {lab.name: lab for lab in World(micro_world).labelers(2, seed=0)}
    ann, bob = (Person(server.url, links[n], judge) for n, judge in zip(("ann", "bob"), judges.values()))
    assert len(ann.label(3)) == 3 and len(bob.label(3)) == 3  # bob is served ann's items first
    code, _, err = run_cli(loop_args(micro_world, out, "--no-wait"), capsys)
    assert code == 3 and "round 1: 3 of 6 items have 2 rankings (50%)" in err
    assert (out / "round-1" / "candidates.jsonl").read_text() == candidates  # a waiting round is never re-sampled
    # a changed setting that would change finished work is refused with the difference
    code, _, err = run_cli(loop_args(micro_world, out, "--no-wait", "--seed", "1"), capsys)
    assert code == 2 and "this loop ran with other settings: seed (0 -> 1)" in err

    # the app's export is checked against the round's candidates: candidates sampled with another seed differ
    export = tmp_path / "labels" / "round-1.jsonl"
    export.parent.mkdir()
    assert run_cli(["label", "export", "--db", out / "labels.db", "--project", "loop", "--out", export],
                   capsys)[0] == 0
    other = ["loop", "--world", micro_world, "--preset", "micro", "--out", tmp_path / "other", "--rounds", "1",
             "--prompts-per-round", ITEMS, "--sft", out / "sft", "--seed", "5", "--labels-dir", export.parent]
    code, _, err = run_cli(other, capsys)
    assert code == 2 and "round-1.jsonl:1: item 'r1-" in err and "completions differ from round 1's" in err
    assert not (tmp_path / "other" / "round-1" / "rankings.jsonl").exists()

    # the rest of round 1; the loop trains it, offers round 2 to the same people and waits for them
    log = tmp_path / "loop.log"
    loop = start_loop(loop_args(micro_world, out), log)
    try:
        assert len(ann.label(ITEMS)) == 3 and len(bob.label(ITEMS)) == 3
        assert sorted(imported_ids(out / "labels.db", ann.label(ITEMS, wait_s=300))) == sorted(
            json.loads(line)["id"] for line in (out / "round-2" / "candidates.jsonl").open())
        assert len(bob.label(ITEMS, wait_s=30)) == ITEMS  # round 2 in the queue of the links of round 1
        checkpoints = out / "round-2" / "ppo" / "resume"
        deadline = time.monotonic() + 600
        while not any(checkpoints.glob("step-*/state.pt")):  # round 2's PPO has written a checkpoint: kill it
            assert loop.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        loop.send_signal(signal.SIGKILL)
        loop.wait(30)
    finally:
        if loop.poll() is None:
            loop.kill()
    state = json.loads((out / "round-2" / "state.json").read_text())
    assert "rm" in state["stages"] and "ppo" not in state["stages"], log.read_text()
    step = max(int(p.parent.name.removeprefix("step-")) for p in checkpoints.glob("step-*/state.pt"))
    logged = (out / "round-2" / "ppo" / "metrics.jsonl").read_text().splitlines()[:step]
    assert "6 of 6 items have 2 rankings (100%), 12 rankings in all" in log.read_text()

    code, stdout, err = run_cli(loop_args(micro_world, out), capsys)
    assert code == 0, err
    assert ("round 2: 4. PPO from sft, 6 iterations (KL to the SFT policy), continuing from its last checkpoint"
            in stdout)
    assert "round 2: 1. sample" not in stdout and "round 2: 3. reward model" not in stdout  # kept, not redone
    # the steps up to the checkpoint are kept as they were logged (a run started over would log them anew)
    after = (out / "round-2" / "ppo" / "metrics.jsonl").read_text().splitlines()
    assert 1 <= step < 6 and after[:step] == logged and len(after) == 6
    resumed = json.loads((out / "report.json").read_text())["rounds"]
    assert [r["rankings"] for r in resumed] == [12, 24]

    # the same round 2 never interrupted: --redo-round 2 retrains its RM and PPO from the same labels
    code, stdout, err = run_cli(loop_args(micro_world, out, "--redo-round", "2"), capsys)
    assert code == 0, err
    assert "continuing from its last checkpoint" not in stdout
    again = json.loads((out / "report.json").read_text())["rounds"]
    assert [metrics(r) for r in again] == [metrics(r) for r in resumed]
