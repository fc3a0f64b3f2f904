"""Blind human evaluation (`label/blind.py`, `rlhf label import --eval`): the A/B pairing and its hidden order,
the Wilson interval against numbers worked by hand, and the win rate through the CLI and the labeler's view."""

import json
import re
import uuid

import pytest
from fastapi.testclient import TestClient

from rlhfkit.cli import main
from rlhfkit.label import blind
from rlhfkit.label.answers import parse_answer
from rlhfkit.label.api_models import TaskOut
from rlhfkit.label.app import create_app
from rlhfkit.label.commands import open_store
from tests.label.conftest import invite_login

# z = 1.959964, z² = 3.841459 throughout.


def test_wilson_interval_by_hand():
    # 8 of 10: p = 0.8, z²/n = 0.3841459, denominator 1.3841459;
    # centre = (0.8 + 0.1920729) / 1.3841459 = 0.716740;
    # half = 1.959964 · √(0.8·0.2/10 + 3.841459/400) / 1.3841459 = 1.959964 · √0.0256036 / 1.3841459 = 0.226578
    # -> [0.490162, 0.943318] (the published 0.4902-0.9433 for 8/10)
    low, high = blind.wilson_interval(8, 10)
    assert low == pytest.approx(0.490162, abs=1e-5) and high == pytest.approx(0.943318, abs=1e-5)
    # 0 of 10: centre = 0.1920729 / 1.3841459 = 0.138766, half = 1.959964 · √0.0096036 / 1.3841459 = 0.138766:
    # the interval starts at 0 and is not empty (p̂ ± z·SE would be [0, 0])
    low, high = blind.wilson_interval(0, 10)
    assert low == pytest.approx(0.0, abs=1e-6) and high == pytest.approx(0.277532, abs=1e-5)
    # a tie is half a win: 2.5 of 3, p = 0.833333, z²/n = 1.2804863, denominator 2.2804863;
    # centre = (0.833333 + 0.6402432) / 2.2804863 = 0.646168;
    # half = 1.959964 · √(0.833333·0.166667/3 + 3.841459/36) / 2.2804863 = 1.959964 · √0.1530035 / 2.2804863 = 0.336180
    low, high = blind.wilson_interval(2.5, 3)
    assert low == pytest.approx(0.646168 - 0.336180, abs=1e-5) and high == pytest.approx(0.646168 + 0.336180, abs=1e-5)
    with pytest.raises(ValueError):
        blind.wilson_interval(0, 0)


def eval_row(labeler, tiers, a_first=True, kind="pairwise"):
    arms = [blind.arm_source("A", "sft"), blind.arm_source("B", "ppo")]
    if not a_first:
        arms.reverse()
    return {"id": "q1", "prompt": "p", "kind": kind, "labeler": labeler, "elapsed_ms": 2000, "tiers": tiers,
            "completions": [{"text": "x", "source": arms[0]}, {"text": "y", "source": arms[1]}], "likert": None}


def test_win_rate_of_b_over_a_reads_the_arm_not_the_position():
    rows = [eval_row("ann", {0: 1, 1: 0}),                  # B (second) better: a win
            eval_row("bob", {0: 1, 1: 0}, a_first=False),   # A (second) better: a loss
            eval_row("cat", {0: 0, 1: 0}),                  # equal: half
            eval_row("dan", {0: 0, 1: 1}, a_first=False),   # B (first) better: a win
            eval_row("eve", {}, kind="skip")]               # a skip is no comparison
    w = blind.win_rate_b_over_a(rows)
    assert (w["b_wins"], w["n"], w["ties"], w["a"], w["b"]) == (2.5, 4, 1, ["sft"], ["ppo"])
    low, high = blind.wilson_interval(2.5, 4)
    assert (w["rate"], w["ci_low"], w["ci_high"]) == (0.625, round(low, 4), round(high, 4))
    assert blind.win_rate_b_over_a([{**eval_row("x", {0: 0, 1: 1}), "completions": [
        {"text": "x", "source": "sft"}, {"text": "y", "source": "ppo"}]}]) is None  # not an --eval project


def arm_file(path, policy, n, *, prompt_of=lambda i: f"Question {i}?", drop=None):
    rows = [{"id": f"q{i}", "prompt": prompt_of(i),
             "completions": [{"text": f"{policy} answer {i}" + " more" * (policy == "ppo"), "source": policy},
                             {"text": f"{policy} second sample {i}", "source": policy}]}
            for i in range(n) if i != drop]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_pairing_draws_the_order_per_item_from_the_seed(tmp_path):
    a = blind.read_arm(arm_file(tmp_path / "a.jsonl", "sft", 40))
    b = blind.read_arm(arm_file(tmp_path / "b.jsonl", "ppo", 40))
    items = blind.pair_items(a, b, seed=3)
    firsts = [blind.arm_of(i["completions"][0]["source"]) for i in items]
    assert 10 < firsts.count("A") < 30  # both orders occur
    assert firsts == [blind.arm_of(i["completions"][0]["source"]) for i in blind.pair_items(a, b, seed=3)]
    assert firsts != [blind.arm_of(i["completions"][0]["source"]) for i in blind.pair_items(a, b, seed=4)]
    for item in items:  # A's first sample and B's first sample, whatever the order
        texts = {blind.arm_of(c["source"]): c["text"] for c in item["completions"]}
        assert texts == {"A": f"sft answer {item['id'][1:]}", "B": f"ppo answer {item['id'][1:]} more"}


@pytest.mark.parametrize("b_kwargs, message", [
    ({"drop": 3}, "a.jsonl: id 'q3' has no answer in"),
    ({"prompt_of": lambda i: "other?" if i == 2 else f"Question {i}?"}, "id 'q2' has another prompt than in"),
])
def test_unmatched_files_are_refused_before_anything_is_written(tmp_path, capsys, b_kwargs, message):
    db = tmp_path / "l.db"
    a, b = arm_file(tmp_path / "a.jsonl", "sft", 5), arm_file(tmp_path / "b.jsonl", "ppo", 5, **b_kwargs)
    code = main(["label", "import", "--db", str(db), "--project", "e", "--mode", "pairwise", "--eval", a, b])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and not db.exists()
    assert main(["label", "import", "--db", str(db), "--project", "e", "--eval", a, a]) == 2
    assert "--eval compares two policies side by side: it needs --mode pairwise" in capsys.readouterr().err


def test_one_output_per_prompt_arm_files_are_taken(tmp_path, capsys):
    """Issue 31, item 19: `rlhf sample -n 1` writes one completion per prompt, and --eval refused such a file
    ("needs at least 2 outputs to compare"): an arm holds one policy's output, the pair is made here."""
    db = str(tmp_path / "l.db")
    files = []
    for policy in ("sft", "ppo"):
        path = tmp_path / f"{policy}.jsonl"
        path.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Question {i}?", "completions": [
            {"text": f"{policy} answer {i}", "source": policy, "finished": i != 1}]}) + "\n" for i in range(3)))
        files.append(str(path))
    assert main(["label", "import", "--db", db, "--project", "e", "--mode", "pairwise", "--eval", *files]) == 0
    assert "3 items added" in capsys.readouterr().out
    assert open_store(db).progress("e")["items"] == 3
    items = blind.pair_items(blind.read_arm(files[0]), blind.read_arm(files[1]), seed=0)
    assert [sorted(c["text"] for c in i["completions"]) for i in items] == [
        [f"ppo answer {i}", f"sft answer {i}"] for i in range(3)]
    assert [c["finished"] for c in items[1]["completions"]] == [False, False]


def test_blind_eval_through_the_cli(tmp_path, capsys):
    db = str(tmp_path / "l.db")
    a, b = arm_file(tmp_path / "sft.jsonl", "sft", 12), arm_file(tmp_path / "ppo.jsonl", "ppo", 12)
    assert main(["label", "import", "--db", db, "--project", "e", "--mode", "pairwise", "--overlap", "1",
                 "--seed", "7", "--eval", a, b]) == 0
    assert "blind evaluation: A = " in capsys.readouterr().out
    store = open_store(db)
    who = store.who(store.login(store.invite("e", "ann")))
    n = 0
    while (task := store.next_task(who)) is not None:
        seen = TaskOut.of(task).model_dump()
        assert "eval-" not in json.dumps(seen) and "source" not in json.dumps(seen)  # the arm is hidden
        # ann prefers the longer answer (B's, "... more") except on the first three items, where she says equal
        texts = [o["text"] for o in seen["outputs"]]
        choice = "equal" if n < 3 else "AB"[texts[1].endswith("more")]
        store.submit(who, task.assignment_id, parse_answer(
            {"client_id": str(uuid.uuid4()), "assignment_id": task.assignment_id, "kind": "pairwise", "choice": choice,
             "elapsed_ms": 1000}, "pairwise", 2))
        n += 1
    assert n == 12
    report = tmp_path / "winrate.json"  # as `rlhf eval winrate --a ppo --b sft --json-out` writes it
    report.write_text(json.dumps({"a": "runs/ppo", "b": "runs/sft", "rate": 0.7, "ci_low": 0.6, "ci_high": 0.8,
                                  "n": 100, "gold_a": 0.5, "gold_b": 0.3}))
    assert main(["label", "stats", "--db", db, "--project", "e", "--report", str(report)]) == 0
    out = capsys.readouterr().out
    low, high = blind.wilson_interval(10.5, 12)  # 9 wins + 3 ties of 12
    assert f"people (Wilson)          0.875 (95% CI {low:.3f}-{high:.3f}, n=12), 3 ties" in out
    assert "gold: runs/ppo over runs/sft 0.700 (95% CI 0.600-0.800, n=100)" in out
    assert main(["label", "stats", "--db", db, "--project", "e", "--json"]) == 0
    e = json.loads(capsys.readouterr().out)["blind_eval"]
    assert (e["b_wins"], e["n"], e["a"], e["b"]) == (10.5, 12, ["sft"], ["ppo"])
    report.write_text("{}")
    assert main(["label", "stats", "--db", db, "--project", "e", "--report", str(report)]) == 2
    assert "no win rates in it" in capsys.readouterr().err


def test_the_admin_page_and_api_show_the_win_rate_escaped_and_labelers_see_no_arm(tmp_path):
    xss_policy = "<img src=x onerror=alert(1)>"
    arms = {}
    for arm, policy in (("A", xss_policy), ("B", "ppo")):
        path = tmp_path / f"{arm}.jsonl"
        path.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"Question {i}?", "completions": [
            {"text": f"{arm} answer {i}", "source": policy}, {"text": "x", "source": policy}]}) + "\n"
            for i in range(3)))
        arms[arm] = blind.read_arm(str(path))
    store = open_store(str(tmp_path / "l.db"), migrate=True)
    store.import_items("ab", "pairwise", 1, blind.pair_items(arms["A"], arms["B"], seed=0))
    app = create_app(store)
    ann = TestClient(app, base_url="http://127.0.0.1")
    assert invite_login(ann, store.invite('ab', 'ann')).status_code == 303
    page = ann.get("/task").text
    assert "eval-" not in page and "onerror" not in page and "ppo" not in page  # which side is which: hidden
    assert ann.get("/admin").status_code == 403 and ann.get("/api/projects/ab/stats").status_code == 403
    csrf = re.search(r'name="csrf_token" value="([0-9a-f]+)"', page).group(1)
    task = re.search(r'action="/task/(\d+)"', page).group(1)
    a_first = "A answer" in page.split('id="output-A"')[1].split("</article>")[0]
    assert ann.post(f"/task/{task}", data={"csrf_token": csrf, "client_id": str(uuid.uuid4()), "kind": "pairwise",
                                           "elapsed_ms": "900", "choice": "B" if a_first else "A"}).status_code == 200
    boss = TestClient(app, base_url="http://127.0.0.1")
    assert invite_login(boss, store.invite('ab', 'boss', 'admin')).status_code == 303
    admin_page = boss.get("/admin").text
    section = admin_page.split('id="blind-eval"')[1].split("</section>")[0]
    assert "100.0%" in section and "&lt;img src=x onerror=alert(1)&gt;" in section and "<img" not in section
    e = boss.get("/api/projects/ab/stats").json()["blind_eval"]
    low, high = blind.wilson_interval(1, 1)
    assert (e["rate"], e["n"], e["a"], e["ci_low"], e["ci_high"]) == (1.0, 1, [xss_policy], round(low, 4),
                                                                      round(high, 4))
