"""`rlhf label ...` through the real CLI entry: exit codes, one-line errors, exports that validate."""

import json

import pytest

from rlhfkit.cli import main
from rlhfkit.data.jsonl import read_jsonl
from rlhfkit.data.schemas import demo_record, pair_record, ranking_record
from rlhfkit.label.answers import parse_answer
from rlhfkit.label.api_models import TaskOut
from rlhfkit.label.commands import open_store
from tests.label.conftest import stand_in_answer, write_candidates


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_import_invite_stats_and_errors(tmp_path, capsys):
    db = str(tmp_path / "l.db")
    cands = write_candidates(tmp_path / "c.jsonl", 4, 3)
    assert run(capsys, "label", "import", "--db", db, "--project", "p", "--overlap", "2", str(cands))[0] == 0
    code, out, _ = run(capsys, "label", "import", "--db", db, "--project", "p", str(cands))
    assert code == 0 and "0 items added, 4 already there" in out
    code, out, _ = run(capsys, "label", "invite", "--db", db, "--project", "p", "--name", "ann",
                       "--public-url", "http://labels.example:9000/")
    assert code == 0 and out.startswith("http://labels.example:9000/invite/") and len(out.strip()) > 60
    code, out, _ = run(capsys, "label", "stats", "--db", db, "--project", "p", "--json")
    assert code == 0 and json.loads(out)["items"] == 4


@pytest.mark.parametrize("argv, message", [
    (["label", "import", "--db", "{db}", "--project", "p", "--mode", "pairwise", "{cands}"],
     "c.jsonl:1: --mode pairwise needs exactly 2 completions per record, got 3"),
    (["label", "import", "--db", "{db}", "--project", "p", "--mode", "judge", "{cands}"], "--mode 'judge'"),
    (["label", "import", "--db", "{db}", "--project", "p", "{tmp}/missing.jsonl"], "missing.jsonl: no such file"),
    (["label", "invite", "--db", "{db}", "--project", "nope", "--name", "x"], "unknown project 'nope'"),
    (["label", "invite", "--db", "{db}", "--project", "p", "--name", "x", "--role", "king"], "--role 'king'"),
    (["label", "export", "--db", "{db}", "--project", "p", "--format", "csv", "--out", "{tmp}/x"], "--format 'csv'"),
    (["label", "stats", "--db", "mysql://h/db", "--project", "p"], "only SQLite and PostgreSQL"),
    (["label", "stats", "--db", "{tmp}/no/such/dir/l.db", "--project", "p"], "does not exist"),
])
def test_user_errors_are_one_line_exit_2(tmp_path, capsys, argv, message):
    db = str(tmp_path / "l.db")
    cands = write_candidates(tmp_path / "c.jsonl", 2, 3)
    assert main(["label", "import", "--db", db, "--project", "p", str(cands)]) == 0
    capsys.readouterr()
    code, _, err = run(capsys, *[a.format(db=db, cands=cands, tmp=tmp_path) for a in argv])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_export_formats_validate(tmp_path, capsys):
    db = str(tmp_path / "l.db")
    cands = write_candidates(tmp_path / "c.jsonl", 3, 4)
    records = [json.loads(line) for line in cands.read_text().splitlines()]
    records[0]["completions"][2]["finished"] = False  # never reached EOS (as `rlhf sample` marks it)
    cands.write_text("".join(json.dumps(r) + "\n" for r in records))
    main(["label", "import", "--db", db, "--project", "r", "--overlap", "2", str(cands)])
    main(["label", "import", "--db", db, "--project", "d", "--mode", "demo",
          str(write_candidates(tmp_path / "d.jsonl", 2, 2))])
    store = open_store(db)
    for project, names in (("r", ["ann", "bob"]), ("d", ["dee"])):
        for name in names:
            who = store.who(store.login(store.invite(project, name)))
            while (task := store.next_task(who)) is not None:
                body = stand_in_answer(TaskOut.of(task).model_dump())
                store.submit(who, task.assignment_id, parse_answer(body, who.mode, len(task.outputs)))
    for project, fmt, validator, n in (("r", "rankings", ranking_record, 6), ("r", "pairs", pair_record, 30),
                                       ("d", "demos", demo_record, 2), ("r", "raw", None, 6)):
        out = tmp_path / f"{project}-{fmt}.jsonl"
        assert main(["label", "export", "--db", db, "--project", project, "--format", fmt, "--out", str(out)]) == 0
        assert len(read_jsonl(out, validator)) == n
    rankings = read_jsonl(tmp_path / "r-rankings.jsonl", ranking_record)
    assert [r["finished"] for r in rankings if r["id"] == "q000"] == [[True, True, False, True]] * 2
    assert all(r["finished"] == [True] * 4 for r in rankings if r["id"] != "q000")
