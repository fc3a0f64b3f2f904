"""Validators for the data formats of docs/design.md §2 (one JSON object per line).

| file           | fields                                                                   |
|----------------|--------------------------------------------------------------------------|
| prompts        | prompt; optional id, task                                                |
| demonstrations | prompt, completion (TRL prompt-completion format)                         |
| candidates     | id, prompt, completions: [{text, source}] (optional `finished` per item)  |
| rankings       | id, prompt, completions: [str], ranking: [[i, ...], ...] best first, ties |
|                | share a group, labeler; optional likert [1-7], flags [{name: bool}], notes,|
|                | finished [bool] (did each output end with EOS; default all true),        |
|                | turn_flags [[{turn, reason}]] (a trajectory's flagged turns, per output),|
|                | judge_draft "shown"/"hidden" (the app served the judge's ranking as a    |
|                | starting draft, or not; absent: unknown)                                 |
| pairs          | prompt, chosen, rejected, group (TRL preference format); optional        |
|                | chosen_turn_flags, rejected_turn_flags (as in rankings)                  |

A prompt P is a string or a Conversation (a list of messages {role, content}, TRL's conversational format); a
completion C is a string or, after a Conversation prompt, a Conversation of the assistant turn(s). A string
completion after a Conversation prompt is the content of one assistant message (what `rlhf sample` writes).

A row's optional `tools` (TRL's column: the JSON schemas of the functions the model may call, a list of objects or a
JSON string of one, as Hugging Face datasets often store it) belongs to its conversation: the prompt (or SFT's
`messages`) becomes a `Conversation` carrying them, and every chat-template render of it passes `tools=` — the tool
list the model will see at inference. Tools beside a string prompt are refused (no template renders them).

Each validator takes the decoded object and an `error(message)` factory that prefixes `path:line:`;
it returns the (normalized) record or raises.
"""

from __future__ import annotations

import json

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
ROLES = ("system", "user", "assistant", "tool")
JUDGE_DRAFTS = ("shown", "hidden")  # a ranking's `judge_draft`: was the judge's ranking the labeler's starting draft


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


def conversation(value, name: str, error) -> list[dict]:
    """A list of messages {role, content}: a known role and string content each; other non-null keys of a
    message (a tool call's `name`, ...) are kept for the chat template.

    An assistant message that calls tools (TRL's and OpenAI's `tool_calls`: [{"type": "function", "function":
    {"name", "arguments"}}], checked and normalized by `tool_calls_value`) may have no content (null or absent): it
    is read as "" — the template writes the calls."""
    if not isinstance(value, list) or not value:
        raise error(f"field '{name}' must be a non-empty list of messages {{role, content}}")
    out = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise error(f"{name}[{i}] must be a message {{role, content}}, got {json_type(message)}")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise error(f"{name}[{i}]: role {role!r} is not one of {', '.join(ROLES)}")
        calls = tool_calls_value(message.get("tool_calls"), f"{name}[{i}]", role, error)
        if calls:
            message = {**message, "tool_calls": calls}
            content = "" if content is None else content
        if not isinstance(content, str):
            raise error(f"{name}[{i}]: content must be a string, got {json_type(content)}")
        out.append({"role": role, "content": content,
                    **{k: v for k, v in message.items() if k not in ("role", "content") and v is not None}})
    return out


def tool_calls_value(calls, where: str, role: str, error) -> list[dict] | None:
    """An assistant turn's `tool_calls` (TRL's and the chat templates' shape): a list of {"type": "function",
    "function": {"name", "arguments"}} (or {"name", "arguments"}; an "id" may sit beside), a name a non-empty
    string, the arguments an object or a JSON string of one. Arguments given as a JSON string (OpenAI's wire format)
    are read into their object: templates write them with `tojson`, which would quote the string. None when the
    message has none."""
    if calls is None:
        return None
    if role != "assistant":
        raise error(f"{where}: only an assistant turn calls tools; this one is {role!r}")
    if not isinstance(calls, list) or not calls:
        raise error(f"{where}: tool_calls must be a non-empty list of calls {{function: {{name, arguments}}}}")
    out = []
    for j, call in enumerate(calls):
        fn = call.get("function", call) if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"].strip():
            raise error(f"{where}: tool_calls[{j}] must be {{function: {{name, arguments}}}} with a name")
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args)
            except (json.JSONDecodeError, RecursionError):
                raise error(f"{where}: tool_calls[{j}] ({fn['name']}): arguments are a string but not JSON") from None
        if not isinstance(args, dict):
            raise error(f"{where}: tool_calls[{j}] ({fn['name']}): arguments must be an object or a JSON string of "
                        f"one, got {json_type(args)}")
        fn = {**fn, "arguments": args}
        out.append({**call, "function": fn} if "function" in call else fn)
    return out


class Conversation(list):
    """Messages with the tool schemas the chat template renders them with (`tools`, None when the row has none).

    A list like any other conversation (sliced, compared, written as JSON: the messages), it carries its tools
    wherever a prompt goes — sampling, PPO's rollouts, a reward model re-encoding it with its own template."""

    def __init__(self, messages=(), tools: list[dict] | None = None):
        super().__init__(messages)
        self.tools = tools


def tools_of(prompt) -> list[dict] | None:
    """The tool schemas a prompt is rendered with (None: no tools)."""
    return getattr(prompt, "tools", None)


def tools_field(prompt) -> dict:
    """{"tools": [...]} for a record written beside this prompt ({} without tools): what the readers read back."""
    tools = tools_of(prompt)
    return {"tools": tools} if tools else {}


def tools_value(obj: dict, error) -> list[dict] | None:
    """A row's `tools`: a list of objects (JSON schemas), or a JSON string of one; absent, null or empty: None."""
    value = obj.get("tools")
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, RecursionError):
            raise error("field 'tools' is a string but not JSON (expected a list of tool schemas)") from None
    if value is None or value == []:
        return None
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise error(f"field 'tools' must be a list of tool schemas (objects), or a JSON string of one, got "
                    f"{json_type(value)}")
    return value


def with_tools(messages: list[dict], obj: dict, error, name: str = "prompt"):
    """`messages` as a Conversation carrying the row's tools (the messages as they are without tools)."""
    tools = tools_value(obj, error)
    if tools is None:
        return messages
    if not isinstance(messages, list):
        raise error(f"field 'tools' needs a conversation: '{name}' is a string, and no chat template renders "
                    "tools beside it (give it as messages)")
    return Conversation(messages, tools)


def prompt_value(obj: dict, error, name: str = "prompt"):
    """P: a non-empty string or a Conversation (carrying the row's `tools`, if any)."""
    value = obj.get(name)
    if isinstance(value, list):
        return with_tools(conversation(value, name, error), obj, error, name)
    return with_tools(_text(obj, name, error, nonempty=True), obj, error, name)


def completion_value(value, name: str, prompt, error, *, nonempty: bool = False):
    """C after prompt P: a string, or (after a Conversation prompt) a Conversation starting with the assistant."""
    if isinstance(value, list):
        if not isinstance(prompt, list):
            raise error(f"field '{name}' is a conversation but the prompt is a string; give both as messages "
                        "or both as strings")
        messages = conversation(value, name, error)
        if messages[0]["role"] != "assistant":
            raise error(f"field '{name}' must start with an assistant message, got {messages[0]['role']!r}")
        return messages
    return _text({name: value}, name, error, nonempty=nonempty)


def _record_id(obj, error, default=None):
    value = _field(obj, "id", (str, int), error, required=default is None, default=default)
    return str(value)


def prompt_record(obj: dict, error) -> dict:
    out = {"prompt": prompt_value(obj, error)}
    if "id" in obj:
        out["id"] = _record_id(obj, error)
    if obj.get("task") is not None:
        out["task"] = _text(obj, "task", error)
    return out


def demo_record(obj: dict, error) -> dict:
    prompt = prompt_value(obj, error)
    if obj.get("completion") is None:
        raise error("missing field 'completion'")
    return {"prompt": prompt, "completion": completion_value(obj["completion"], "completion", prompt, error,
                                                             nonempty=True)}


def candidate_record(obj: dict, error, min_completions: int = 2) -> dict:
    """A candidates row: id, prompt, completions [{text, source, finished}] (at least `min_completions`: 2 to
    compare; one policy's arm of a blind evaluation holds 1)."""
    rid = _record_id(obj, error)
    prompt = prompt_value(obj, error)
    items = _field(obj, "completions", list, error)
    if len(items) < min_completions:
        raise error(f"field 'completions' needs at least {min_completions} outputs to compare, got {len(items)}")
    completions = []
    for i, item in enumerate(items):
        if isinstance(item, (str, list)):
            item = {"text": item}
        if not isinstance(item, dict):
            raise error(f"completions[{i}] must be an object {{text, source}}, got {json_type(item)}")
        sub = lambda m, _i=i: error(f"completions[{_i}]: {m}")  # noqa: E731
        completions.append({
            "text": completion_value(item.get("text"), "text", prompt, sub) if item.get("text") is not None
            else _text(item, "text", sub),
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
    prompt = prompt_value(obj, error)
    completions = list(_field(obj, "completions", list, error))
    if len(completions) < 2:
        raise error(f"field 'completions' needs at least 2 outputs, got {len(completions)}")
    for i, c in enumerate(completions):
        if isinstance(c, dict) and isinstance(c.get("text"), (str, list)):
            completions[i] = c = c["text"]
        if not isinstance(c, (str, list)):
            raise error(f"completions[{i}] must be a string, got {json_type(c)}")
        completions[i] = completion_value(c, f"completions[{i}]", prompt, error)
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
    turn_flags = _field(obj, "turn_flags", list, error, required=False)
    if turn_flags is not None:
        if len(turn_flags) != k:
            raise error(f"field 'turn_flags' has {len(turn_flags)} entries for {k} completions")
        out["turn_flags"] = [turn_flag_list(f, c, f"turn_flags[{j}]", error)
                             for j, (f, c) in enumerate(zip(turn_flags, completions))]
    notes = obj.get("notes")
    if notes is not None:
        if not isinstance(notes, (str, list)) or (isinstance(notes, list)
                                                   and not all(isinstance(n, str) for n in notes)):
            raise error("field 'notes' must be a string or an array of strings")
        out["notes"] = notes
    draft = obj.get("judge_draft")  # the labeling app: was the judge's ranking shown as a draft (absent: unknown)
    if draft is not None:
        if draft not in JUDGE_DRAFTS:
            raise error(f"field 'judge_draft' must be one of {', '.join(JUDGE_DRAFTS)}, got {draft!r}")
        out["judge_draft"] = draft
    return out


def turn_flag_list(flags, completion, where: str, error) -> list[dict]:
    """The turns a labeler flagged in one trajectory: [{"turn": t, "reason": "..."}], `t` the index of the message
    in the completion (0 = its first message), each turn at most once, the reason a non-empty text."""
    if not isinstance(flags, list):
        raise error(f"{where} must be an array of {{turn, reason}}, got {json_type(flags)}")
    if flags and not isinstance(completion, list):
        raise error(f"{where}: the completion is a text, not a trajectory of turns; only a turn can be flagged")
    out, seen = [], set()
    for flag in flags:
        turn, reason = (flag.get("turn"), flag.get("reason")) if isinstance(flag, dict) else (None, None)
        if isinstance(turn, bool) or not isinstance(turn, int) or not isinstance(reason, str) or not reason.strip():
            raise error(f"{where}: each flag must be {{turn: an integer, reason: a non-empty text}}")
        if not 0 <= turn < len(completion):
            raise error(f"{where}: turn {turn} does not exist (the trajectory has {len(completion)} turns, "
                        f"0..{len(completion) - 1})")
        if turn in seen:
            raise error(f"{where}: turn {turn} is flagged twice")
        seen.add(turn)
        out.append({"turn": turn, "reason": reason})
    return out


def pair_record(obj: dict, error) -> dict:
    prompt = prompt_value(obj, error)
    out = {"prompt": prompt}
    for name in ("chosen", "rejected"):
        if obj.get(name) is None:
            raise error(f"missing field '{name}'")
        out[name] = completion_value(obj[name], name, prompt, error)
    for name in ("chosen", "rejected"):  # the turns a labeler flagged in each trajectory (label export)
        flags = obj.get(f"{name}_turn_flags")
        if flags:
            out[f"{name}_turn_flags"] = turn_flag_list(flags, out[name], f"{name}_turn_flags", error)
    group = _field(obj, "group", (str, int), error, required=False)
    if group is not None:
        out["group"] = str(group)
    return out
