"""Issue 31, item 16: a person's name is what admin tables and exports show, so two people may not look alike.

Names are stored NFKC with white space collapsed; a control or invisible character is refused (NUL, a zero-width
space, bidi controls, soft hyphens, private use, variation selectors beside ASCII); a name that reads like
another of the project ("ANN", "ａｎｎ" beside "ann") is refused. Every path that creates a person goes through
`Store.invite`: the CLI (`rlhf label invite`), the admin page, and the loop's simulated team.
"""

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from rlhfkit.cli import main
from rlhfkit.label.app import create_app
from rlhfkit.label.commands import open_store, read_items
from rlhfkit.label.db import User
from rlhfkit.label.inputs import BadInput, name_key, person_name
from rlhfkit.label.store import AlreadyInvited, Conflict
from tests.label.conftest import write_candidates

INVISIBLE = {
    "ann\u200b": "U+200B",  # zero-width space, the case
    "ann\x00": "U+0000",  # NUL
    "\u200bann": "U+200B",
    "an\u00adn": "U+00AD",  # soft hyphen (Cf)
    "ann\u2066": "U+2066",  # left-to-right isolate (bidi control)
    "\u202eann": "U+202E",  # right-to-left override
    "ann\ufeff": "U+FEFF",  # byte order mark / zero-width no-break space
    "ann\ue000": "U+E000",  # private use
    "ann\u034f": "U+034F",  # combining grapheme joiner (default ignorable, Mn)
    "ann\ufe0f": "U+FE0F",  # a variation selector after ASCII
    "a\u200dnn": "U+200D",  # a zero-width joiner between ASCII letters
    "\u3164": "U+1160",  # Hangul filler (NFKC makes it U+1160)
    "ann\x7f": "U+007F",  # DEL
    "ann\ud800": "U+D800",  # a lone surrogate
}


@pytest.fixture
def store(tmp_path):
    s = open_store(str(tmp_path / "labels.db"), migrate=True)
    s.import_items("p", "rank", 1, read_items(str(write_candidates(tmp_path / "c.jsonl", 2, 2)), "rank"))
    s.invite("p", "ann")
    s.invite("p", "boss", "admin")
    return s


def people(store) -> set[str]:
    return {p["name"] for p in store.progress("p")["people"]}


@pytest.mark.parametrize("name", INVISIBLE)
def test_a_name_with_a_control_or_invisible_character_is_refused(store, name):
    with pytest.raises(BadInput) as exc:
        store.invite("p", name)
    message = str(exc.value)
    assert INVISIBLE[name] in message and "\n" not in message
    message.encode("utf-8")  # the message itself can be written
    assert people(store) == {"ann", "boss"}


@pytest.mark.parametrize("name", ["ANN", "Ann", "ａＮＮ", "Ａnn", " ANN "])
def test_a_name_that_reads_like_another_persons_is_refused(store, name):
    with pytest.raises(Conflict) as exc:
        store.invite("p", name)
    assert not isinstance(exc.value, AlreadyInvited) and "'ann'" in str(exc.value)
    assert people(store) == {"ann", "boss"}


def test_names_are_stored_nfkc_with_white_space_collapsed(store):
    store.invite("p", "ｃｙ")  # fullwidth
    store.invite("p", "  dee \t  fox\n")
    store.invite("p", "ﬁona")  # the fi ligature
    assert people(store) == {"ann", "boss", "cy", "dee fox", "fiona"}
    for same in ("ann ", "ａｎｎ"):  # the same person, not a new one
        with pytest.raises(AlreadyInvited):
            store.invite("p", same)


def test_joiners_and_selectors_stay_where_they_are_spelling(store):
    """ZWNJ in a Persian name, ZWJ in an emoji sequence, VS16 after an emoji: part of how the name is written."""
    for name in ("میر\u200cعلی", "👩\u200d💻", "Ann ❤\ufe0f", "日本語"):
        store.invite("p", name)
        assert name in people(store)
    with pytest.raises(Conflict):  # but they do not tell two people apart
        store.invite("p", "میرعلی")


def test_a_name_stored_before_these_rules_blocks_its_lookalike_and_can_be_revoked(store):
    with Session(store.engine) as s, s.begin():
        s.add(User(project_id=store.project("p").id, name="cy\u200b", role="labeler", invite_hash="0" * 64,
                   created_at=0.0))
    with pytest.raises(Conflict):
        store.invite("p", "cy")
    store.revoke("p", "CY")  # found by how it reads
    assert {p["name"]: p["active"] for p in store.progress("p")["people"]}["cy\u200b"] is False


def test_name_rules():
    assert person_name("  Ｂｏｂ\u3000 Ｓｍｉｔｈ ") == "Bob Smith"
    assert name_key("Bob Smith") == name_key("BOB  SMITH") == name_key("ｂｏｂ smith") == "bob smith"
    with pytest.raises(BadInput, match="empty"):
        person_name(" \u3000\t")
    with pytest.raises(BadInput, match="at most 200"):
        person_name("\ufdfa" * 20)  # one character NFKC expands to 18


def test_the_cli_refuses_an_invisible_name_and_a_lookalike_in_one_line(tmp_path, capsys):
    db = str(tmp_path / "l.db")
    cands = str(write_candidates(tmp_path / "c.jsonl", 2, 2))
    assert main(["label", "import", "--db", db, "--project", "p", cands]) == 0
    base = ["label", "invite", "--db", db, "--project", "p", "--name"]
    assert main(base + ["ann"]) == 0
    capsys.readouterr()
    for name, says in (("ann\u200b", "U+200B"), ("ann\x00", "U+0000"), ("ANN", "'ann'")):
        assert main(base + [name]) == 2
        err = capsys.readouterr().err
        assert says in err and len(err.strip().splitlines()) == 1
    assert {p["name"] for p in open_store(db).progress("p")["people"]} == {"ann"}


def test_the_admin_page_refuses_an_invisible_name_and_a_lookalike(store):
    c = TestClient(create_app(store), base_url="http://127.0.0.1")
    csrf = c.post("/api/session", json={"token": store.invite("p", "boss", "admin", replace=True)}).json()["csrf_token"]
    r = c.post("/admin/invite", data={"csrf_token": csrf, "name": "ann\u200b", "role": "labeler"})
    assert r.status_code == 422 and "U+200B" in r.text
    r = c.post("/admin/invite", data={"csrf_token": csrf, "name": "Ann", "role": "labeler"})
    assert r.status_code == 409 and "ann" in r.text
    r = c.post("/admin/invite", data={"csrf_token": csrf, "name": "ｃｙ", "role": "labeler"}, follow_redirects=False)
    assert r.status_code == 303
    assert people(store) == {"ann", "boss", "cy"}
