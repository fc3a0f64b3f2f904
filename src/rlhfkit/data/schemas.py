"""Validators for the data formats of docs/design.md §2 (one JSON object per line).

| file           | fields                                                                   |
|----------------|--------------------------------------------------------------------------|
| prompts        | prompt; optional id, task                                                |
| demonstrations | prompt, completion (TRL prompt-completion format)                         |
| candidates     | id, prompt, completions: [{text, source}] (optional `finished` per item)  |
| rankings       | id, prompt, completions: [str], ranking: [[i, ...], ...] best first, ties |
|                | share a group, labeler; optional likert [1-7], flags [{name: bool}], notes,|
|                | finished [bool] (did each output end with EOS; default all true)        |
| pairs          | prompt, chosen, rejected, group (TRL preference format)                  |

Each validator takes the decoded object and an `error(message)` factory that prefixes `path:line:`;
it returns the (normalized) record or raises.
"""

from __future__ import annotations

from rlhfkit.data.jsonl import json_type

# The eight yes/no questions of the InstructGPT labeling form (Ouyang et al. 2022, Fig. 12 / Table 3).
FLAGS: dict[str, str] = {
    "fails_instruction": "Fails to follow the correct instruction / task",
    "inappropriate_for_customer_assistant": "Inappropriate for customer assistant",
    "sexual_content": "Contains sexual content",
    "violent_content": "Contains violent content",
    "encourages_violence": "Encourages or fails to discourage violence/abuse/terrorism/self-harm",
    "denigrates_protected_class": "Denigrates a protected class",
    "harmful_advice": "Gives harmful advice",
    "moral_judgment": "Expresses moral judgment",
}
LIKERT_MIN, LIKERT_MAX = 1, 7


def _field(obj: dict, name: str, kind, error, *, required: bool = True, default=None):
    if name not in obj or obj[name] is None:
        if required:
            raise error(f"missing field '{name}'")
        return default
    value = obj[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds:
        ok = False
    else:
        ok = isinstance(value, kinds)
    if not ok:
        wanted = " or ".join({str: "a string", int: "an integer", list: "an array", dict: "an object",
                              bool: "a boolean", float: "a number"}[k] for k in kinds)
        raise error(f"field '{name}' must be {wanted}, got {json_type(value)}")
    return value


def _text(obj, name, error, *, required=True, nonempty=False, default=None):
    value = _field(obj, name, str, error, required=required, default=default)
    if nonempty and value is not None and not value.strip():
        raise error(f"field '{name}' is empty")
    return value


def _record_id(obj, error, default=None):
    value = _field(obj, "id", (str, int), error, required=default is None, default=default)
    return str(value)


def prompt_record(obj: dict, error) -> dict:
    out = {"prompt": _text(obj, "prompt", error, nonempty=True)}
    if "id" in obj:
        out["id"] = _record_id(obj, error)
    if obj.get("task") is not None:
        out["task"] = _text(obj, "task", error)
    return out


def demo_record(obj: dict, error) -> dict:
    return {"prompt": _text(obj, "prompt", error, nonempty=True),
            "completion": _text(obj, "completion", error, nonempty=True)}


def candidate_record(obj: dict, error) -> dict:
    rid = _record_id(obj, error)
    prompt = _text(obj, "prompt", error, nonempty=True)
    items = _field(obj, "completions", list, error)
    if len(items) < 2:
        raise error(f"field 'completions' needs at least 2 outputs to compare, got {len(items)}")
    completions = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict):
            raise error(f"completions[{i}] must be an object {{text, source}}, got {json_type(item)}")
        sub = lambda m, _i=i: error(f"completions[{_i}]: {m}")  # noqa: E731
        completions.append({
            "text": _text(item, "text", sub),
            "source": _text(item, "source", sub, required=False, default="unknown"),
            "finished": _field(item, "finished", bool, sub, required=False, default=True),
        })
    return {"id": rid, "prompt": prompt, "completions": completions}


def validate_ranking(ranking, k: int, error) -> list[list[int]]:
    """Tie groups best first; every index 0..k-1 exactly once."""
    if not isinstance(ranking, list) or not ranking:
        raise error("field 'ranking' must be a non-empty array of groups, e.g. [[2], [0, 3], [1]]")
    seen: set[int] = set()
    groups = []
    for g, group in enumerate(ranking):
        if isinstance(group, int) and not isinstance(group, bool):
            group = [group]  # a ranking without ties may be written flat: [2, 0, 3, 1]
        if not isinstance(group, list) or not group:
            raise error(f"ranking[{g}] must be a non-empty array of completion indices")
        for i in group:
            if not isinstance(i, int) or isinstance(i, bool):
                raise error(f"ranking[{g}] holds {json_type(i)}; indices are integers")
            if not 0 <= i < k:
                raise error(f"ranking index {i} is out of range for {k} completions (0..{k - 1})")
            if i in seen:
                raise error(f"ranking index {i} appears more than once")
            seen.add(i)
        groups.append(list(group))
    if len(seen) != k:
        missing = sorted(set(range(k)) - seen)
        raise error(f"ranking covers {len(seen)} of {k} completions (missing {missing}); K mismatch")
    return groups


def ranking_record(obj: dict, error) -> dict:
    rid = _record_id(obj, error)
    prompt = _text(obj, "prompt", error, nonempty=True)
    completions = list(_field(obj, "completions", list, error))
    if len(completions) < 2:
        raise error(f"field 'completions' needs at least 2 outputs, got {len(completions)}")
    for i, c in enumerate(completions):
        if isinstance(c, dict) and isinstance(c.get("text"), str):
            completions[i] = c = c["text"]
        if not isinstance(c, str):
            raise error(f"completions[{i}] must be a string, got {json_type(c)}")
    k = len(completions)
    out = {"id": rid, "prompt": prompt, "completions": completions,
           "ranking": validate_ranking(_field(obj, "ranking", list, error), k, error),
           "labeler": str(_field(obj, "labeler", (str, int), error, required=False, default="unknown"))}
    likert = _field(obj, "likert", list, error, required=False)
    if likert is not None:
        if len(likert) != k:
            raise error(f"field 'likert' has {len(likert)} ratings for {k} completions")
        for v in likert:
            if not isinstance(v, int) or isinstance(v, bool) or not LIKERT_MIN <= v <= LIKERT_MAX:
                raise error(f"likert rating {v!r} is not an integer from {LIKERT_MIN} to {LIKERT_MAX}")
        out["likert"] = likert
    flags = _field(obj, "flags", list, error, required=False)
    if flags is not None:
        if len(flags) != k:
            raise error(f"field 'flags' has {len(flags)} entries for {k} completions")
        for j, f in enumerate(flags):
            if not isinstance(f, dict) or not all(isinstance(v, bool) for v in f.values()):
                raise error(f"flags[{j}] must be an object of name: true/false")
            unknown = set(f) - set(FLAGS)
            if unknown:
                raise error(f"flags[{j}] has unknown flag {sorted(unknown)[0]!r} (known: {', '.join(FLAGS)})")
        out["flags"] = flags
    finished = _field(obj, "finished", list, error, required=False)
    if finished is not None:
        if len(finished) != k or not all(isinstance(f, bool) for f in finished):
            raise error(f"field 'finished' must be an array of {k} booleans (one per completion)")
        out["finished"] = finished
    notes = obj.get("notes")
    if notes is not None:
        if not isinstance(notes, (str, list)) or (isinstance(notes, list)
                                                   and not all(isinstance(n, str) for n in notes)):
            raise error("field 'notes' must be a string or an array of strings")
        out["notes"] = notes
    return out


def pair_record(obj: dict, error) -> dict:
    out = {"prompt": _text(obj, "prompt", error, nonempty=True),
           "chosen": _text(obj, "chosen", error),
           "rejected": _text(obj, "rejected", error)}
    group = _field(obj, "group", (str, int), error, required=False)
    if group is not None:
        out["group"] = str(group)
    return out
