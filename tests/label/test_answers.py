import uuid

import pytest

from rlhfkit.data.schemas import FLAGS
from rlhfkit.label.answers import (
    BadAnswer,
    form_to_body,
    pairwise_tiers,
    parse_answer,
    tiers_to_ranking,
)

CID = str(uuid.uuid4())


def rank_body(**over):
    body = {"client_id": CID, "kind": "rank", "ranking": [[2], [0, 3], [1]], "likert": [4, 2, 7, 4]}
    return body | over


def test_tiers_round_trip_with_ties():
    assert tiers_to_ranking({0: 1, 1: 2, 2: 0, 3: 1}) == [[2], [0, 3], [1]]
    assert parse_answer(rank_body(ranking=[[2], [0, 3], [1]]), "rank", 4).tiers == {2: 0, 0: 1, 3: 1, 1: 2}


def test_rank_answer_fills_every_flag_false_by_default():
    ans = parse_answer(rank_body(flags=[{"sexual_content": True}, {}, {}, {}]), "rank", 4)
    assert ans.ranking() == [[2], [0, 3], [1]]
    assert ans.flags[0]["sexual_content"] is True and set(ans.flags[0]) == set(FLAGS)
    assert ans.likert == {0: 4, 1: 2, 2: 7, 3: 4}


@pytest.mark.parametrize("over, message", [
    ({"ranking": [[2], [0, 3]]}, "missing output index: 1"),
    ({"ranking": [[2], [2, 0, 3], [1]]}, "placed twice"),
    ({"ranking": [[9], [0, 1, 2, 3]]}, "out of range"),
    ({"likert": [4, 2, 8, 4]}, "from 1 to 7"),
    ({"likert": [4, 2]}, "one entry per output"),
    ({"flags": [{"rude": True}, {}, {}, {}]}, "unknown flag"),
    ({"client_id": "not-a-uuid"}, "UUID"),
    ({"kind": "demo"}, "collects 'rank'"),
])
def test_bad_rank_answers_say_what_to_fix(over, message):
    with pytest.raises(BadAnswer, match=message):
        parse_answer(rank_body(**over), "rank", 4)


def test_pairwise_choice_maps_shown_order_to_candidates():
    assert pairwise_tiers("A", [1, 0]) == {1: 0, 0: 1}
    assert pairwise_tiers("B", [1, 0]) == {0: 0, 1: 1}
    assert pairwise_tiers("equal", [1, 0]) == {1: 0, 0: 0}
    with pytest.raises(BadAnswer, match="'A', 'B' or 'equal'"):
        parse_answer({"client_id": CID, "choice": "C"}, "pairwise", 2)


def test_skip_needs_a_known_reason_and_other_needs_a_note():
    assert parse_answer({"client_id": CID, "kind": "skip", "reason": "unclear"}, "demo", 0).reason == "unclear"
    with pytest.raises(BadAnswer, match="needs a note"):
        parse_answer({"client_id": CID, "kind": "skip", "reason": "other"}, "rank", 3)
    with pytest.raises(BadAnswer, match="reason must be one of"):
        parse_answer({"client_id": CID, "kind": "skip", "reason": "bored"}, "rank", 3)


def test_empty_demonstration_is_refused():
    with pytest.raises(BadAnswer, match="empty"):
        parse_answer({"client_id": CID, "text": "   "}, "demo", 0)


class Form(dict):
    def getlist(self, key):
        v = self.get(key)
        return v if isinstance(v, list) else ([] if v is None else [v])


def test_form_tiers_with_gaps_become_dense_groups():
    form = Form({"kind": "rank", "client_id": CID, "elapsed_ms": "500", "tier_0": "3", "tier_1": "1",
                 "tier_2": "3", "likert_0": "5", "likert_1": "6", "likert_2": "5",
                 "flag_1": ["harmful_advice", "bogus"], "note_2": "meh"})
    ans = parse_answer(form_to_body(form, 3), "rank", 3)
    assert ans.ranking() == [[1], [0, 2]]
    assert ans.flags[1]["harmful_advice"] and not ans.flags[0]["harmful_advice"]
    assert ans.notes[2] == "meh" and ans.elapsed_ms == 500


def test_form_with_an_unplaced_output_names_it():
    form = Form({"kind": "rank", "client_id": CID, "tier_0": "1", "likert_0": "5", "likert_1": "5"})
    with pytest.raises(BadAnswer, match="missing output index: 1"):
        parse_answer(form_to_body(form, 2), "rank", 2)
