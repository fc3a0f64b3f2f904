"""`rlhf loop --select` and `--judge` with the toy world's simulated labelers: the round's items chosen from a pool
with a random share; a judge measured against people on that share, used when it agrees and refused when not."""

import json
import random
import uuid

import pytest

from rlhfkit.label.answers import parse_answer
from rlhfkit.recipes import loop_select as chooser
from rlhfkit.recipes.loop_labels import LabelingApp
from rlhfkit.world.gold import gold_reward
from tests.conftest import run_cli
from tests.test_loop_labels import answer_all


def inverted_gold(prompts, completions, **_):
    """A bad judge: the toy world's gold reward, negated (it prefers what people like least)."""
    return [-gold_reward(p, c).total for p, c in zip(prompts, completions)]


def coin_judge(prompts, completions, **_):
    """A bad judge: a score that knows nothing (a random reward model's)."""
    rng = random.Random(len(prompts))
    return [rng.gauss(0, 3) for _ in completions]


def _loop(micro_world, out, capsys, *extra):
    args = ["loop", "--world", micro_world, "--preset", "micro", "--out", out, "--prompts-per-round", "30",
            "--ppo-steps", "1", "--rounds", "1", "--select", "disagree", "--random-share", "0.5",
            "--judge-threshold", "0.6", *extra]
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    return stdout, json.loads((out / "round-1" / "round.json").read_text())


def test_a_good_judge_is_used_and_bad_ones_are_refused(micro_world, tmp_path, capsys):
    # the gold reward leaves many pairs tied (equal scores, different texts): those items go to people
    stdout, row = _loop(micro_world, tmp_path / "gold", capsys, "--judge", "world:gold", "--judge-confidence", "0.52")
    rd = tmp_path / "gold" / "round-1"
    check = row["judge"]
    assert check["used"] and check["ci_low"] >= 0.6 and check["draft"] == "hidden", check
    assert check["drafts"]["hidden"] > 0 and check["drafts"]["shown"] == check["drafts"]["unknown"] == 0
    assert row["labeler_agreement_drafts"]["shown"] == 0 and row["labeler_agreement"] is not None
    assert "judge world:gold: used: agreement with people" in stdout
    ranks = [json.loads(line) for line in (rd / "rankings.jsonl").read_text().splitlines()]
    by_judge = [r for r in ranks if r["labeler"] == "judge:world:gold"]
    assert len(by_judge) == row["judge_rankings"] > 0  # flagged in the data
    assert row["human_rankings"] == len(ranks) - len(by_judge)
    chosen = [json.loads(line) for line in (rd / "candidates.jsonl").read_text().splitlines()]
    random_ids = {c["id"] for c in chosen if c["selected"]["by"] == "random"}
    assert len(chosen) == 30 and len(random_ids) == 15
    assert not random_ids & {r["id"] for r in by_judge}  # the random share always goes to people
    held = [json.loads(line) for line in (rd / "heldout-rankings.jsonl").read_text().splitlines()]
    assert held and {r["id"] for r in held} <= random_ids and not any(r["labeler"].startswith("judge:") for r in held)
    audit = [json.loads(line) for line in (rd / "random-rankings.jsonl").read_text().splitlines()]
    assert {r["id"] for r in audit} == random_ids and row["labeler_agreement"] is not None  # on the random share

    # bad judges on the same round, measured against the same simulated people
    people = [r for r in ranks if not r["labeler"].startswith("judge:")]
    for bad in ("inverted_gold", "coin_judge"):
        spec = f"tests.test_loop_select:{bad}"
        chooser.prelabel(rd / "candidates.jsonl", spec, None, 0.52, tmp_path / f"{bad}.jsonl",
                         tmp_path / f"{bad}-people.jsonl")
        check = chooser.measure(tmp_path / f"{bad}.jsonl", people, spec, 0.6)
        assert not check.used and check.pairs > 50, check.summary()
        assert f"judge {spec}: NOT used" in check.line() and "< threshold 0.60" in check.line()
    assert chooser.measure(rd / "judge.jsonl", people, "world:gold", 0.6).used


@pytest.mark.slow
def test_the_loop_refuses_an_inverted_judge(micro_world, tmp_path, capsys):
    stdout, row = _loop(micro_world, tmp_path / "bad", capsys, "--judge", "tests.test_loop_select:inverted_gold",
                        "--judge-confidence", "0.52")
    assert not row["judge"]["used"] and row["judge_rankings"] == 0, row["judge"]
    assert "judge tests.test_loop_select:inverted_gold: NOT used" in stdout and "< threshold 0.60" in stdout
    assert "judge:" not in (tmp_path / "bad" / "round-1" / "rankings.jsonl").read_text()


def test_with_people_in_the_app_the_judges_drafts_are_stored_and_the_check_splits_the_answers_by_them(
        micro_world, tmp_path, capsys):
    """The loop shows the judge's drafts; ann answers every item seeing them, then the admin hides them and bob
    answers: each answer says which (the rankings carry it), and the judge is measured on bob's alone."""
    out = tmp_path / "loop"
    args = ["loop", "--world", micro_world, "--preset", "micro", "--out", out, "--prompts-per-round", "10",
            "--ppo-steps", "1", "--rounds", "1", "--labels", "app", "--per-item", "2", "--select", "disagree",
            "--random-share", "0.5", "--judge", "world:gold", "--judge-draft", "shown", "--judge-confidence", "0.52"]
    code, stdout, err = run_cli(args + ["--no-wait"], capsys)
    assert code == 3, err
    app = LabelingApp(str(out / "labels.db"), "loop")
    people = [json.loads(line) for line in (out / "round-1" / "people.jsonl").read_text().splitlines()]
    assert app.coverage({p["id"] for p in people}, 2).items == len(people) < 10  # only people's items
    assert app.store.judge_draft("loop")
    ann = app.store.who(app.store.login(app.invite("ann")))
    task = app.store.next_task(ann)
    assert task.draft and task.draft_judge == "world:gold"  # the judge's tiers, ready to fill the page
    assert set(task.draft) == set(range(len(task.outputs))) and min(task.draft.values()) == 1
    # two people rank every item by position (not by quality): the judge, right, disagrees with them
    while (task := app.store.next_task(ann)) is not None:
        assert task.draft
        k = len(task.outputs)
        app.store.submit(ann, task.assignment_id, parse_answer(
            {"client_id": str(uuid.uuid4()), "kind": "rank", "ranking": [[i] for i in range(k)], "likert": [4] * k},
            "rank", k))
    app.store.set_judge_draft("loop", False)  # the admin hides the drafts midway
    assert answer_all(app, "bob") == len(people)
    # a gold item of the app whose known ranking is the judge's own, 4 tiers: 6 more agreeing pairs
    judged = {r["id"]: r for r in map(json.loads, (out / "round-1" / "judge.jsonl").read_text().splitlines())}
    first = next(p for p in people if len(judged[p["id"]]["ranking"]) == 4)
    app.store.import_gold("loop", [{"id": "gold-1", "prompt": first["prompt"],
                                    "ranking": judged[first["id"]]["ranking"],
                                    "completions": [c["text"] for c in first["completions"]],
                                    "finished": [c["finished"] for c in first["completions"]]}])
    code, stdout, err = run_cli(args, capsys)
    assert code == 0, err
    row = json.loads((out / "round-1" / "round.json").read_text())
    assert not row["judge"]["used"] and row["judge_rankings"] == 0
    ranks = [json.loads(line) for line in (out / "round-1" / "rankings.jsonl").read_text().splitlines()]
    assert {(r["labeler"], r["judge_draft"]) for r in ranks} == {("ann", "shown"), ("bob", "hidden")}
    audit = {r["id"] for r in judged.values() if r["by"] == "random" and r["confidence"] > 0}
    each = len([r for r in ranks if r["id"] in audit]) // 2
    assert each > 0 and row["judge"]["drafts"] == {"hidden": each, "shown": each, "unknown": 0}
    assert row["judge"]["draft"] == "hidden"
    # the labelers' agreement on the random share likewise: bob's answers alone, one per item, leave no pair of
    # people to compare (each of ann's, made seeing the draft, would agree with his more than unanchored people do)
    chosen = [json.loads(line) for line in (out / "round-1" / "candidates.jsonl").read_text().splitlines()]
    share = {c["id"] for c in chosen if c["selected"]["by"] == "random"}
    assert row["labeler_agreement_drafts"] == {"hidden": len(share), "shown": len(share), "unknown": 0}
    audit_people = [json.loads(line) for line in (out / "round-1" / "random-rankings.jsonl").read_text().splitlines()]
    assert {r["labeler"] for r in audit_people} == {"bob"} and row["labeler_agreement"] is None
    assert (f"its ranking hidden: measured on the {each} answers made with it hidden (of {each} hidden, {each} "
            "shown as a draft, 0 unknown: drafts bias people)") in stdout
    alone = chooser.measure(out / "round-1" / "judge.jsonl", [r for r in ranks if r["labeler"] == "bob"],
                            "world:gold", 0.6)
    assert row["judge"]["where"] == "items both labeled and 1 gold items"
    assert (row["judge"]["agree"], row["judge"]["pairs"]) == (alone.agree + 6, alone.pairs + 6)


def test_bad_selection_and_judge_settings_are_one_line_before_the_run_starts(tmp_path, capsys):
    base = ["loop", "--out", tmp_path / "loop", "--preset", "micro"]
    for extra, message in ((["--select", "greedy"], "config key 'select': expected one of random, uncertain"),
                           (["--select", "mixed", "--random-share", "2"], "config key 'random_share'"),
                           (["--judge", "world:gold"], "config key 'judge': pre-labels need --select"),
                           (["--select", "disagree", "--judge", "no_such_module_x:f"], "no module named"),
                           (["--select", "disagree", "--judge", "world:gold", "--judge-draft", "maybe"],
                            "config key 'judge_draft'")):
        code, _, err = run_cli(base + extra, capsys)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "loop").exists()


@pytest.mark.slow
def test_round_two_chooses_by_the_uncertainty_of_round_ones_reward_model(micro_world, tmp_path, capsys):
    out = tmp_path / "loop"
    code, stdout, err = run_cli(["loop", "--world", micro_world, "--preset", "micro", "--out", out,
                                 "--prompts-per-round", "20", "--ppo-steps", "1", "--rounds", "2", "--select",
                                 "mixed", "--ensemble", "3"], capsys)
    assert code == 0, err
    assert "no reward model yet: --select mixed chooses by disagree this round" in stdout
    by = [json.loads(line)["selected"]["by"] for line in (out / "round-2" / "candidates.jsonl").read_text()
          .splitlines()]
    assert by == ["random"] * 4 + ["uncertain"] * 8 + ["disagree"] * 8  # ⌊0.2·20 + ½⌋ = 4; 16 split in halves
    held = (out / "round-2" / "heldout-rankings.jsonl").read_text()
    rows = json.loads((out / "report.json").read_text())["rounds"]
    assert rows[1]["rm_heldout_pairs"] and rows[1]["select"] == "mixed" and held
    assert (out / "round-2" / "random-rankings.jsonl").exists() and rows[1]["labeler_agreement"] is not None
