"""Rankings to and from Label Studio and Argilla 2, in the file shapes their documentation gives.

Label Studio (JSON export, https://labelstud.io/guide/export#JSON and https://labelstud.io/guide/task_format):
a JSON array of tasks `{"id", "data": {...}, "annotations": [{"result": [...], "completed_by", "was_cancelled"}]}`.
Two templates are read:
- Ranker (https://labelstud.io/tags/ranker): `data.items` is the `List` of outputs `[{"id", "title", "body"}]`;
  the result is `{"type": "ranker", "value": {"ranker": {...}}}`. Without `Bucket`s the inner dict is
  `{<ranker name>: [ids, best first]}`, a strict order; with buckets it is `{<bucket>: [ids], ...}` and each
  bucket is one tier (its outputs tie), best bucket first (the order of the labeling config, which the export
  keeps; `buckets=` gives it explicitly). "_" (outputs left in the list) is not a bucket: every output must be placed.
- Pairwise (https://labelstud.io/templates/pairwise_comparison): `data.text1`, `data.text2`, result
  `{"type": "pairwise", "value": {"selected": "left" | "right"}}`; it has no "equal".
Our export writes the Ranker template with one bucket per tier (`label_studio_config` gives its XML). A trajectory
is shown as text (tool calls as "name(arguments)"); the turns a labeler flagged go, as JSON lines, to a TextArea
`turn_flags` (Label Studio) or a TextQuestion `turn_flags` (Argilla), see `turn_flags_text`.

Argilla 2 (`Dataset.to_disk` / `records.to_json`, https://docs.argilla.io/latest/how_to_guides/import_export/):
a JSON array of records `{"id", "fields": {...}, "metadata", "suggestions", "responses": {<question>: [{"value",
"user_id", "status"}]}, "vectors", "_server_id"}`.
- RankingQuestion (https://docs.argilla.io/latest/reference/argilla/settings/questions/#rg.RankingQuestion): its
  value is the option values best first, `["output_2", "output_1"]` (the SDK's form), or the server's
  `[{"value": "output_2", "rank": 1}, ...]`, where equal ranks tie. The options name the fields of the outputs.
- RatingQuestion: one per output, named `rating_<field>` (or `<field>_rating`); higher is better, equal ties.
Only submitted answers are read (a response without a status counts as submitted; drafts and discards are not).
"""

from __future__ import annotations

import json
from collections import defaultdict

from rlhfkit.data.jsonl import read_json
from rlhfkit.data.schemas import ranking_record
from rlhfkit.errors import UserError, at
from rlhfkit.label.trajectory import conversation_text
from rlhfkit.storage import atomic_file

TOOLS = ("label-studio", "argilla")
LS_RANKER, LS_LIST = "rank", "outputs"  # the tag names of our Ranker labeling config
ARGILLA_RANKING = "ranking"
LS_TURN_FLAGS = ARGILLA_TURN_FLAGS = "turn_flags"  # where a ranking's flagged turns go (`turn_flags_text`)


# ------------------------------------------------------------------------------------------------ reading

def read_json_array(path: str) -> list[dict]:
    data = read_json(path, "a JSON file")
    if not isinstance(data, list) or not all(isinstance(d, dict) for d in data):
        raise UserError(f"{path}: expected a JSON array of objects (a Label Studio or Argilla export)")
    return data


def detect(rows: list[dict]) -> str | None:
    """'label-studio' (tasks with data and annotations), 'argilla' (records with fields and responses) or None."""
    if rows and all("data" in r and "annotations" in r for r in rows):
        return "label-studio"
    if rows and all("fields" in r and "responses" in r for r in rows):
        return "argilla"
    return None


def to_rankings(path: str, buckets: list[str] | None = None, prompt_field: str = "prompt") -> tuple[str, list[dict]]:
    """(the tool, our ranking records) from a Label Studio or Argilla export file."""
    rows = read_json_array(path)
    tool = detect(rows)
    if tool == "label-studio":
        return tool, label_studio_rankings(rows, path, buckets, prompt_field)
    if tool == "argilla":
        return tool, argilla_rankings(rows, path, prompt_field)
    raise UserError(f"{path}: neither a Label Studio JSON export (tasks with 'data' and 'annotations') nor an "
                    "Argilla export (records with 'fields' and 'responses')")


def _checked(record: dict, path: str, where: str) -> dict:
    return ranking_record(record, lambda message: UserError(f"{path}: {where}: {message}"))


def _labeler(value) -> str:
    if isinstance(value, dict):  # some exports expand the user
        return str(value.get("email") or value.get("id"))
    return str(value) if value is not None else "unknown"


def label_studio_rankings(tasks: list[dict], path: str, buckets: list[str] | None = None,
                          prompt_field: str = "prompt") -> list[dict]:
    out = []
    for n, task in enumerate(tasks):
        where = f"task {task.get('id', n)}"
        data = task.get("data") or {}
        if prompt_field not in data:
            raise at(path, None, f"{where}: data has no '{prompt_field}' (the prompt)")
        for ann in task.get("annotations") or []:
            if ann.get("was_cancelled"):
                continue  # skipped in Label Studio: no answer
            for result in ann.get("result") or []:
                kind = result.get("type")
                if kind == "ranker":
                    completions, ids = _ls_items(data, path, where)
                    ranking = _ls_ranker(result, ids, buckets, path, where)
                elif kind == "pairwise":
                    if "text1" not in data or "text2" not in data:
                        raise at(path, None, f"{where}: a pairwise result needs data.text1 and data.text2")
                    completions = [data["text1"], data["text2"]]
                    selected = (result.get("value") or {}).get("selected")
                    if selected not in ("left", "right"):
                        raise at(path, None, f"{where}: pairwise 'selected' must be left or right, got {selected!r}")
                    ranking = [[0], [1]] if selected == "left" else [[1], [0]]
                else:
                    continue  # another control (a comment box, a rating): not a comparison
                out.append(_checked({"id": str(data.get("id", task.get("id", n))), "prompt": data[prompt_field],
                                     "completions": completions, "ranking": ranking,
                                     "labeler": _labeler(ann.get("completed_by"))}, path, where))
    if not out:
        raise at(path, None, "no Ranker or Pairwise answers in this Label Studio export")
    return out


def _ls_items(data: dict, path: str, where: str) -> tuple[list[str], list[str]]:
    items = data.get("items")
    if not isinstance(items, list) or not all(isinstance(i, dict) and "id" in i for i in items):
        raise at(path, None, f"{where}: a ranker result needs data.items, a list of {{id, body}} (the List tag)")
    texts = [i.get("body", i.get("title", "")) for i in items]
    return texts, [str(i["id"]) for i in items]


def _ls_ranker(result: dict, ids: list[str], buckets: list[str] | None, path: str, where: str) -> list[list[int]]:
    inner = (result.get("value") or {}).get("ranker")
    if not isinstance(inner, dict):
        raise at(path, None, f"{where}: a ranker result's value must be {{\"ranker\": {{...}}}}")
    index = {i: n for n, i in enumerate(ids)}
    name = result.get("from_name")
    if list(inner) == [name]:  # List + Ranker without buckets: one strict order
        groups = [[item] for item in inner[name]]
    else:
        order = buckets or [b for b in inner if b != "_"]
        unknown = [b for b in inner if b != "_" and b not in order]
        if unknown:
            raise at(path, None, f"{where}: bucket {unknown[0]!r} is not among --buckets {','.join(order)}")
        groups = [inner[b] for b in order if inner.get(b)]
    ranking = []
    for group in groups:
        missing = [i for i in group if str(i) not in index]
        if missing:
            raise at(path, None, f"{where}: ranked id {missing[0]!r} is not in data.items")
        ranking.append([index[str(i)] for i in group])
    placed = {i for g in ranking for i in g}
    if len(placed) != len(ids):
        left = [ids[i] for i in range(len(ids)) if i not in placed]
        raise at(path, None, f"{where}: output {left[0]!r} was not placed in a bucket; every output needs a tier")
    return ranking


def argilla_rankings(records: list[dict], path: str, prompt_field: str = "prompt") -> list[dict]:
    out = []
    for n, rec in enumerate(records):
        where = f"record {rec.get('id', n)}"
        fields = rec.get("fields") or {}
        if prompt_field not in fields:
            raise at(path, None, f"{where}: fields has no '{prompt_field}' (the prompt)")
        by_user: dict[str, dict[str, object]] = defaultdict(dict)
        for question, answers in (rec.get("responses") or {}).items():
            for a in answers or []:
                if a.get("status", "submitted") == "submitted" and a.get("value") is not None:
                    by_user[_labeler(a.get("user_id"))][question] = a["value"]
        for user, answers in by_user.items():
            found = _argilla_answer(answers, fields, prompt_field, path, where)
            if found is None:
                continue
            names, ranking = found
            out.append(_checked({"id": str(rec.get("id", n)), "prompt": fields[prompt_field],
                                 "completions": [fields[f] for f in names], "ranking": ranking, "labeler": user},
                                path, where))
    if not out:
        raise at(path, None, "no submitted RankingQuestion or RatingQuestion answers in this Argilla export")
    return out


def _argilla_answer(answers: dict, fields: dict, prompt_field: str, path: str, where: str
                    ) -> tuple[list[str], list[list[int]]] | None:
    """(the output fields in record order, tie groups best first) from one user's answers."""
    ranked = [v for v in answers.values() if isinstance(v, list)]
    if ranked:
        value = ranked[0]
        ranks = [(v["value"], v.get("rank", n + 1)) if isinstance(v, dict) else (v, n + 1)
                 for n, v in enumerate(value)]
        higher_is_better = False
    else:
        ranks = []
        for question, v in answers.items():
            field = question.removeprefix("rating_").removesuffix("_rating")
            if field != question and field in fields and isinstance(v, (int, float)):
                ranks.append((field, v))
        if len(ranks) < 2:
            return None  # neither a ranking nor ratings of two or more outputs
        higher_is_better = True
    unknown = [f for f, _ in ranks if f not in fields or f == prompt_field]
    if unknown:
        raise at(path, None, f"{where}: ranked option {unknown[0]!r} is not a field of the record")
    names = [f for f in fields if f in {f for f, _ in ranks}]
    score = dict(ranks)
    levels = sorted(set(score.values()), reverse=higher_is_better)
    return names, [[names.index(f) for f in names if score[f] == level] for level in levels]


# ------------------------------------------------------------------------------------------------ writing

def _items(rankings: list[dict]) -> list[tuple[dict, list[dict]]]:
    """Rankings grouped by item (id, prompt, completions), in file order."""
    groups: dict[str, tuple[dict, list[dict]]] = {}
    for r in rankings:
        key = json.dumps([r["id"], r["prompt"], r["completions"]], ensure_ascii=False)
        groups.setdefault(key, (r, []))[1].append(r)
    return list(groups.values())


def _text(value) -> str:
    """A Conversation completion (or prompt) as plain text, tool calls as "name(arguments)": both tools show
    strings."""
    if isinstance(value, str):
        return value
    return conversation_text(value)


def turn_flags_text(ranking: dict) -> str | None:
    """A ranking's flagged turns as JSON text, one object a line {"output": n (1-based, as shown), "turn": t (the
    message's index in that trajectory, 0 first), "reason"}; None when it has none. Label Studio keeps it in a
    TextArea result, Argilla in a TextQuestion: neither has a place for a turn of an output."""
    lines = [json.dumps({"output": i + 1, "turn": f["turn"], "reason": f["reason"]}, ensure_ascii=False)
             for i, flags in enumerate(ranking.get("turn_flags") or []) for f in flags]
    return "\n".join(lines) or None


def label_studio_config(k: int, turn_flags: bool = False) -> str:
    """The Ranker labeling config our export fits: the prompt, the outputs as a List, one bucket per tier; with
    `turn_flags`, the TextArea `LS_TURN_FLAGS` that holds the flagged turns (`turn_flags_text`)."""
    buckets = "\n".join(f'    <Bucket name="tier-{t}" title="Tier {t}{" (best)" if t == 1 else ""}"/>'
                        for t in range(1, k + 1))
    area = (f'  <TextArea name="{LS_TURN_FLAGS}" toName="{LS_LIST}" editable="true" '
            'placeholder="flagged turns: one JSON object a line {output, turn, reason}"/>\n') if turn_flags else ""
    return (f'<View>\n  <Text name="prompt" value="$prompt"/>\n  <List name="{LS_LIST}" value="$items" '
            f'title="Outputs"/>\n  <Ranker name="{LS_RANKER}" toName="{LS_LIST}">\n{buckets}\n  </Ranker>\n'
            f'{area}</View>\n')


def to_label_studio(rankings: list[dict]) -> list[dict]:
    """Tasks to import into a Label Studio project with `label_studio_config`: one per item, each labeler's
    ranking an annotation (bucket tier-t holds the outputs of tier t)."""
    tasks = []
    for first, group in _items(rankings):
        items = [{"id": str(i), "title": f"Output {i + 1}", "body": _text(c)}
                 for i, c in enumerate(first["completions"])]
        annotations = [{"result": [{"from_name": LS_RANKER, "to_name": LS_LIST, "type": "ranker",
                                    "value": {"ranker": {f"tier-{t + 1}": [str(i) for i in g]
                                                         for t, g in enumerate(r["ranking"])}}}]
                        + ([{"from_name": LS_TURN_FLAGS, "to_name": LS_LIST, "type": "textarea",
                             "value": {"text": [flagged]}}] if (flagged := turn_flags_text(r)) else []),
                        "completed_by": r["labeler"]} for r in group]
        tasks.append({"data": {"id": first["id"], "prompt": _text(first["prompt"]), "items": items},
                      "annotations": annotations})
    return tasks


def to_argilla(rankings: list[dict]) -> tuple[list[dict], int]:
    """(Argilla 2 records, how many rankings had ties): fields prompt, output_1..K; a RankingQuestion
    `ranking` per labeler. Argilla's ranking value is an order without ties, so tied outputs are listed in
    index order (the count says how many rankings that touched); Likert ratings, where given, go to
    RatingQuestions `rating_output_i`, which keep the ties."""
    records, tied = [], 0
    for first, group in _items(rankings):
        names = [f"output_{i + 1}" for i in range(len(first["completions"]))]
        responses: dict[str, list[dict]] = defaultdict(list)
        for r in group:
            tied += any(len(g) > 1 for g in r["ranking"])
            responses[ARGILLA_RANKING].append({"value": [names[i] for g in r["ranking"] for i in sorted(g)],
                                               "user_id": r["labeler"], "status": "submitted"})
            for name, score in zip(names, r.get("likert") or []):
                responses[f"rating_{name}"].append({"value": score, "user_id": r["labeler"], "status": "submitted"})
            if (flagged := turn_flags_text(r)) is not None:
                responses[ARGILLA_TURN_FLAGS].append({"value": flagged, "user_id": r["labeler"],
                                                      "status": "submitted"})
        records.append({"id": first["id"], "fields": {"prompt": _text(first["prompt"]),
                                                      **{n: _text(c) for n, c in zip(names, first["completions"])}},
                        "metadata": {}, "suggestions": {}, "responses": dict(responses), "vectors": {},
                        "_server_id": None})
    return records, tied


def write_json(path: str, rows: list[dict]) -> None:
    with atomic_file(path, "w") as handle:
        handle.write(json.dumps(rows, ensure_ascii=False, indent=1) + "\n")
