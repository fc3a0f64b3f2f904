"""Label Studio and Argilla 2 files to and from rankings (`label/interop.py`, `rlhf label convert`,
`rlhf label export --to`). The file shapes are the tools' documented ones:

- Label Studio JSON export: https://labelstud.io/guide/export#JSON, https://labelstud.io/guide/task_format
  (tasks {id, data, annotations: [{result, completed_by, was_cancelled}]}).
- Label Studio Ranker: https://labelstud.io/tags/ranker (List items {id, title, body}; without Buckets the value
  is {name: [ids in order]}, with Buckets {bucket: [ids]}; "_" holds the items left in the list); the SDK's
  RankerValue wraps it as {"ranker": {...}} (label_studio_sdk/label_interface/control_tags.py), which is what
  Label Studio 1.23.2 exported in this project's measurement: {"type": "ranker", "value": {"ranker": {"best":
  ["a"], "ok": ["b"]}}}.
- Label Studio Pairwise: https://labelstud.io/templates/pairwise_comparison (text1, text2), value {"selected":
  "left" | "right"} (PairwiseValue in the SDK's control_tags.py).
- Argilla 2 records.json: https://docs.argilla.io/latest/how_to_guides/import_export/ (Record.to_dict: id, fields,
  metadata, suggestions, responses {question: [{value, user_id, status}]}, vectors, _server_id); RankingQuestion
  values https://docs.argilla.io/latest/reference/argilla/settings/questions/ (the SDK's list of option values,
  best first; the server's [{value, rank}]).
"""

import json

import pytest

from rlhfkit.cli import main
from rlhfkit.data.formats import read_preferences
from rlhfkit.data.jsonl import read_jsonl
from rlhfkit.data.schemas import ranking_record
from rlhfkit.label import interop
from rlhfkit.label.answers import parse_answer
from rlhfkit.label.api_models import TaskOut
from rlhfkit.label.commands import open_store
from tests.label.conftest import stand_in_answer, write_candidates


def ls_task(task_id, annotations, *, items=("first", "second", "third")):
    return {"id": task_id, "data": {"prompt": f"Prompt {task_id}",
                                    "items": [{"id": f"o{i}", "title": f"Output {i}", "body": t}
                                              for i, t in enumerate(items)]},
            "annotations": annotations, "predictions": []}


def ranker(value, name="rank"):
    return {"from_name": name, "to_name": "outputs", "type": "ranker", "value": {"ranker": value}}


def test_label_studio_ranker_buckets_are_tiers_and_a_plain_list_is_an_order(tmp_path):
    tasks = [ls_task(1, [{"id": 11, "completed_by": 3, "was_cancelled": False,
                          "result": [ranker({"best": ["o2"], "ok": ["o0", "o1"]})]},
                         {"id": 12, "completed_by": {"id": 4, "email": "bo@x.org"}, "was_cancelled": True,
                          "result": [ranker({"best": ["o0"], "ok": ["o1", "o2"]})]}]),  # skipped in LS
             ls_task(2, [{"id": 13, "completed_by": 3, "result": [ranker({"rank": ["o1", "o2", "o0"]})]}])]
    out = interop.label_studio_rankings(tasks, "ls.json")
    assert [(r["id"], r["ranking"], r["labeler"]) for r in out] == [("1", [[2], [0, 1]], "3"),
                                                                     ("2", [[1], [2], [0]], "3")]
    assert out[0]["prompt"] == "Prompt 1" and out[0]["completions"] == ["first", "second", "third"]
    # the bucket order can be given; "_" (left in the list) is no bucket, and an output left there is an error
    flipped = interop.label_studio_rankings(tasks[:1], "ls.json", buckets=["ok", "best"])
    assert flipped[0]["ranking"] == [[0, 1], [2]]
    unplaced = [ls_task(5, [{"completed_by": 1, "result": [ranker({"best": ["o2"], "_": ["o0", "o1"]})]}])]
    with pytest.raises(Exception, match="ls.json: task 5: output 'o0' was not placed in a bucket"):
        interop.label_studio_rankings(unplaced, "ls.json")


def test_label_studio_pairwise_template(tmp_path):
    tasks = [{"id": 7, "data": {"prompt": "Which?", "text1": "left text", "text2": "right text"},
              "annotations": [{"completed_by": 1, "result": [
                  {"from_name": "pw", "to_name": "pw", "type": "pairwise", "value": {"selected": "right"}}]},
                              {"completed_by": 2, "result": [
                  {"from_name": "pw", "to_name": "pw", "type": "pairwise", "value": {"selected": "left"}}]}]}]
    out = interop.label_studio_rankings(tasks, "pw.json")
    assert [(r["completions"], r["ranking"], r["labeler"]) for r in out] == [
        (["left text", "right text"], [[1], [0]], "1"), (["left text", "right text"], [[0], [1]], "2")]


def argilla_record(rid, responses):
    return {"id": rid, "fields": {"prompt": f"Prompt {rid}", "response_1": "one", "response_2": "two",
                                  "response_3": "three"},
            "metadata": {}, "suggestions": {}, "responses": responses, "vectors": {}, "_server_id": None}


def test_argilla_ranking_and_rating_questions():
    records = [
        # the SDK's form: option values best first, no ties; a discarded answer is not read
        argilla_record("a", {"ranking": [{"value": ["response_3", "response_1", "response_2"], "user_id": "u1",
                                          "status": "submitted"},
                                         {"value": ["response_1", "response_2", "response_3"], "user_id": "u2",
                                          "status": "discarded"}]}),
        # the server's form: equal ranks tie
        argilla_record("b", {"ranking": [{"value": [{"value": "response_2", "rank": 1},
                                                    {"value": "response_1", "rank": 2},
                                                    {"value": "response_3", "rank": 1}], "user_id": "u1"}]}),
        # RatingQuestions, one per output: higher is better, equal ratings tie
        argilla_record("c", {"rating_response_1": [{"value": 2, "user_id": "u3", "status": "submitted"}],
                             "response_2_rating": [{"value": 5, "user_id": "u3", "status": "submitted"}],
                             "rating_response_3": [{"value": 2, "user_id": "u3", "status": "submitted"}]}),
    ]
    out = interop.argilla_rankings(records, "records.json")
    assert [(r["id"], r["ranking"], r["labeler"]) for r in out] == [
        ("a", [[2], [0], [1]], "u1"), ("b", [[1, 2], [0]], "u1"), ("c", [[1], [0, 2]], "u3")]
    assert out[0]["completions"] == ["one", "two", "three"]
    bad = [argilla_record("d", {"ranking": [{"value": ["response_9", "response_1"], "user_id": "u"}]})]
    with pytest.raises(Exception, match="records.json: record d: ranked option 'response_9' is not a field"):
        interop.argilla_rankings(bad, "records.json")


RANKINGS = [
    {"id": "q1", "prompt": "Name two fruits.", "completions": ["apple, pear", "apple", "a car"],
     "ranking": [[0], [1, 2]], "labeler": "ann", "likert": [6, 3, 3]},
    {"id": "q1", "prompt": "Name two fruits.", "completions": ["apple, pear", "apple", "a car"],
     "ranking": [[0], [1], [2]], "labeler": "bob", "likert": [7, 4, 1]},
    {"id": "q2", "prompt": [{"role": "user", "content": "Hi?"}], "completions": ["Hello!", "Go away."],
     "ranking": [[0], [1]], "labeler": "ann"},
]


def test_rankings_round_trip_through_both_shapes():
    rankings = [ranking_record(dict(r), ValueError) for r in RANKINGS]
    tasks = interop.to_label_studio(rankings)
    assert len(tasks) == 2 and len(tasks[0]["annotations"]) == 2
    assert tasks[0]["annotations"][0]["result"][0]["value"] == {"ranker": {"tier-1": ["0"], "tier-2": ["1", "2"]}}
    back = interop.label_studio_rankings(json.loads(json.dumps(tasks)), "ls.json")
    assert [(r["id"], r["ranking"], r["labeler"], r["completions"]) for r in back] == [
        (r["id"], r["ranking"], r["labeler"], r["completions"]) for r in rankings]
    assert back[2]["prompt"] == "user: Hi?"  # both tools show text: a conversation becomes its turns
    config = interop.label_studio_config(3)
    assert '<Ranker name="rank" toName="outputs">' in config and config.count("<Bucket ") == 3

    records, tied = interop.to_argilla(rankings)
    assert tied == 1 and records[0]["responses"]["ranking"][0] == {
        "value": ["output_1", "output_2", "output_3"], "user_id": "ann", "status": "submitted"}
    assert records[0]["responses"]["rating_output_2"][1] == {"value": 4, "user_id": "bob", "status": "submitted"}
    back = interop.argilla_rankings(json.loads(json.dumps(records)), "records.json")
    # the ranking question wins over the ratings; ann's tie became index order (the count above said so)
    assert [(r["id"], r["ranking"], r["labeler"]) for r in back] == [
        ("q1", [[0], [1], [2]], "ann"), ("q1", [[0], [1], [2]], "bob"), ("q2", [[0], [1]], "ann")]


def test_convert_and_export_through_the_cli(tmp_path, capsys):
    tasks = [ls_task(i, [{"completed_by": 1, "result": [ranker({"best": ["o1"], "ok": ["o0"], "bad": ["o2"]})]}])
             for i in range(3)]
    (tmp_path / "ls.json").write_text(json.dumps(tasks))
    out = tmp_path / "rankings.jsonl"
    assert main(["label", "convert", str(tmp_path / "ls.json"), "--out", str(out)]) == 0
    assert "3 rankings of 3 items from a label-studio export" in capsys.readouterr().out
    assert [r["ranking"] for r in read_jsonl(out, ranking_record)] == [[[1], [0], [2]]] * 3
    kind, found = read_preferences(str(out))  # what `rlhf rm` reads
    assert kind == "rankings" and len(found) == 3

    assert main(["label", "convert", str(out), "--to", "argilla", "--out", str(tmp_path / "records.json")]) == 0
    assert main(["label", "convert", str(tmp_path / "records.json"), "--out", str(tmp_path / "again.jsonl")]) == 0
    assert read_jsonl(tmp_path / "again.jsonl", ranking_record)[0]["ranking"] == [[1], [0], [2]]
    (tmp_path / "x.json").write_text('{"not": "a list"}')
    capsys.readouterr()
    assert main(["label", "convert", str(tmp_path / "x.json"), "--out", str(tmp_path / "y.jsonl")]) == 2
    assert "x.json: expected a JSON array of objects" in capsys.readouterr().err
    assert not (tmp_path / "y.jsonl").exists()

    db = str(tmp_path / "l.db")
    main(["label", "import", "--db", db, "--project", "r", "--overlap", "1", str(write_candidates(
        tmp_path / "c.jsonl", 2, 4))])
    store = open_store(db)
    who = store.who(store.login(store.invite("r", "ann")))
    while (task := store.next_task(who)) is not None:
        body = stand_in_answer(TaskOut.of(task).model_dump())
        store.submit(who, task.assignment_id, parse_answer(body, who.mode, len(task.outputs)))
    assert main(["label", "export", "--db", db, "--project", "r", "--to", "label-studio",
                 "--out", str(tmp_path / "tasks.json")]) == 0
    assert (tmp_path / "tasks.label-config.xml").read_text().count("<Bucket ") == 4
    mine = read_jsonl(tmp_path / "mine.jsonl", ranking_record) if main(
        ["label", "export", "--db", db, "--project", "r", "--out", str(tmp_path / "mine.jsonl")]) == 0 else []
    back = interop.label_studio_rankings(json.loads((tmp_path / "tasks.json").read_text()), "tasks.json")
    assert [(r["id"], r["ranking"], r["completions"]) for r in back] == [
        (r["id"], r["ranking"], r["completions"]) for r in mine] and len(mine) == 2
    assert main(["label", "export", "--db", db, "--project", "r", "--to", "excel", "--out", str(tmp_path / "e")]) == 2
