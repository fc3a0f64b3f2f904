"""The dataset formats we accept, by TRL's names (https://huggingface.co/docs/trl/dataset_formats), and ours.

A file's format is decided by the keys of its first row; every other row must have the same format (else
`path:row N: ...` naming both). Each format is normalized to the records of docs/design.md §2: a prompt P is a
string or a Conversation (a list of {role, content}), a completion C a string or the assistant turn(s).

| format | keys | read by |
|---|---|---|
| language modeling | `text` (conversational: `messages`) | sft |
| prompt-completion | `prompt`, `completion` | sft (and prompts) |
| prompt-only | `prompt` | ppo, sample, label import (demo) |
| preference, explicit prompt | `prompt`, `chosen`, `rejected` (our pairs, + `group`) | rm, dpo, eval rm |
| preference, whole conversations | `prompt`, `chosen`, `rejected` repeating the prompt (UltraFeedback) | rm, dpo |
| preference, implicit prompt | `chosen`, `rejected`: the shared prefix is split off as the prompt | rm, dpo |
| scored completions | `prompt`, `completions`, `scores`: a ranking, best score first, equal scores tied | rm, dpo |
| rankings (ours) | `id`, `prompt`, `completions`, `ranking`, `labeler` | rm, dpo, eval rm |
| candidates (ours) | `id`, `prompt`, `completions: [{text, source}]` | label import |
| unpaired preference | `prompt`, `completion`, `label` | refused by rm and dpo (below) |

Every format with a prompt also serves as prompts (`read_prompts`; repeated prompts of pairs or rankings once).
Any conversational row may carry `tools` (TRL's column: the tool schemas, a list of objects or a JSON string of one):
every chat-template render of its conversation passes them (data/schemas.py `Conversation`).

Whole conversations beside an explicit prompt (HuggingFaceH4/ultrafeedback_binarized: a string `prompt`, and
`chosen`/`rejected` as the full message lists [user, assistant]): the prompt is their shared prefix (as for an
implicit prompt, below), and the explicit `prompt` must agree with it — a string equal to the prefix's single user
turn, or messages equal to the prefix; one that disagrees is an error naming the row.

The implicit prompt (HH-RLHF: `"\\n\\nHuman: ... \\n\\nAssistant: ..."` in both texts): for strings, the longest
common prefix, moved back to a word boundary (never inside a word), with the space before the first differing
word going to the completions — byte-level BPE tokenizers carry a word's leading space in its token (`ĠThe`), so
" The" is the token the policy generates after the prompt. For Conversations, everything before the last
assistant turn is the prompt, and it must be the same in chosen and rejected.

Unpaired preference (KTO: one completion and a desirable/undesirable `label`) is refused by `rlhf rm` and
`rlhf dpo` with one line: both train on comparisons (−log σ(r_w − r_l), Bradley–Terry), and a thumbs-up on one
completion is not one. Pairing a desirable with an undesirable completion of the same prompt would invent
comparisons nobody made, and silently for prompts that have only one kind; KTO's own loss is the honest use of
such data, and it is not implemented here.

A pair whose chosen equals its rejected carries no preference (its loss is log 2 whatever the model does): it
is dropped with a count; a file left with none is an error.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator

from rlhfkit.data.jsonl import json_type
from rlhfkit.data.readers import read_rows
from rlhfkit.data.schemas import (
    candidate_record,
    conversation,
    demo_record,
    pair_record,
    prompt_record,
    prompt_value,
    ranking_record,
    tools_of,
    with_tools,
)
from rlhfkit.errors import UserError, at

LM, CONV_LM = "language modeling", "conversational language modeling"
PROMPT_COMPLETION, PROMPT_ONLY = "prompt-completion", "prompt-only"
PREFERENCE, IMPLICIT = "preference", "preference (implicit prompt)"
UNPAIRED, STEPWISE, SCORED = "unpaired preference", "stepwise supervision", "scored completions"
RANKINGS, CANDIDATES = "rankings", "candidates"

# Each format's keys, in the order `detect` tries them (the first whose keys a row has wins).
KEYS: dict[str, tuple[str, ...]] = {
    RANKINGS: ("prompt", "completions", "ranking"),
    SCORED: ("prompt", "completions", "scores"),
    STEPWISE: ("prompt", "completions", "labels"),
    CANDIDATES: ("prompt", "completions"),
    PREFERENCE: ("prompt", "chosen", "rejected"),
    IMPLICIT: ("chosen", "rejected"),
    UNPAIRED: ("prompt", "completion", "label"),
    PROMPT_COMPLETION: ("prompt", "completion"),
    CONV_LM: ("messages",),
    LM: ("text",),
    PROMPT_ONLY: ("prompt",),
}
ACCEPTED = "; ".join(f"{name} ({', '.join(keys)})" for name, keys in KEYS.items())


def options(opts) -> dict:
    """read_rows' keyword arguments from a config with the DataOptions fields (or None)."""
    return {"split": getattr(opts, "split", None), "fields": getattr(opts, "field", None)}


def detect(row: dict) -> str | None:
    present = {k for k, v in row.items() if v is not None}
    return next((name for name, keys in KEYS.items() if set(keys) <= present), None)


def read_format(path, opts=None) -> tuple[str, Iterator[tuple[int | str, dict, Callable]]]:
    """(the file's format, an iterator of (where, row, error factory)); every row checked against the format."""
    rows = read_rows(path, **options(opts))
    first = next(rows, None)
    if first is None:
        raise at(path, None, "file is empty (no records)")
    fmt = detect(first[1])
    if fmt is None:
        raise at(path, first[0], f"no known format has the keys {sorted(first[1])} (accepted: {ACCEPTED})")

    def checked():
        yield first[0], first[1], _error(path, first[0])
        for where, row in rows:
            error = _error(path, where)
            found = detect(row)
            if found != fmt:
                missing = [k for k in KEYS[fmt] if row.get(k) is None]
                what = f"missing field '{missing[0]}'" if missing else f"a {found} row"
                raise error(f"{what}: this row is {found or 'of no known format'}, the file is {fmt} "
                            "(by its first row)")
            yield where, row, error
    return fmt, checked()


def _error(path, where):
    return lambda message: at(path, where, message)


# ------------------------------------------------------------------------------------------------ sft

def read_sft(path, opts=None) -> list[dict]:
    """SFT records: {"prompt", "completion"} | {"text"} | {"messages"} (docs/design.md §2)."""
    fmt, rows = read_format(path, opts)
    if fmt not in (PROMPT_COMPLETION, LM, CONV_LM):
        raise at(path, None, f"a {fmt} file; sft trains on {PROMPT_COMPLETION} (prompt, completion), "
                             f"{LM} (text) or {CONV_LM} (messages) rows")
    return [_sft_record(fmt, row, error) for _, row, error in rows]


def _sft_record(fmt: str, row: dict, error) -> dict:
    if fmt == PROMPT_COMPLETION:
        return demo_record(row, error)
    if fmt == LM:
        text = row["text"]
        if not isinstance(text, str) or not text.strip():
            raise error(f"field 'text' must be a non-empty string, got {json_type(text)}")
        return {"text": with_tools(text, row, error, "text")}
    messages = conversation(row["messages"], "messages", error)
    if not any(m["role"] == "assistant" for m in messages):
        raise error("field 'messages' has no assistant turn to train on")
    return {"messages": with_tools(messages, row, error, "messages")}


# ---------------------------------------------------------------------------------------- preferences

def read_preferences(path, opts=None, *, command: str = "rm") -> tuple[str, list[dict]]:
    """("rankings" or "pairs", records) from any preference format; pairs whose chosen equals rejected are
    dropped with a count on stderr."""
    fmt, rows = read_format(path, opts)
    if fmt in (RANKINGS, SCORED):
        return "rankings", [ranking_record(row, error) if fmt == RANKINGS else scored_to_ranking(row, where, error)
                            for where, row, error in rows]
    if fmt == UNPAIRED:
        raise at(path, None, f"unpaired preference data (prompt, completion, label): {command} trains on "
                             "comparisons of two completions, and a label on one completion is not one (see "
                             "rlhfkit/data/formats.py); give preference pairs or rankings")
    if fmt not in (PREFERENCE, IMPLICIT):
        raise at(path, None, f"a {fmt} file; {command} needs preferences: {PREFERENCE} (prompt, chosen, "
                             f"rejected), {IMPLICIT} (chosen, rejected), {SCORED} (prompt, completions, scores) "
                             f"or {RANKINGS}")
    pairs = [pair_record(split_implicit(row, error) if fmt == IMPLICIT else explicit_prompt(row, error), error)
             for _, row, error in rows]
    kept = [p for p in pairs if p["chosen"] != p["rejected"]]
    if not kept:
        raise at(path, None, f"no usable pair: in all {len(pairs)} pairs chosen equals rejected")
    if len(kept) < len(pairs):
        print(f"{command}: dropped {len(pairs) - len(kept)} pairs whose chosen equals rejected ({path})",
              file=sys.stderr)
    return "pairs", kept


def scored_to_ranking(row: dict, where, error) -> dict:
    """Scored completions -> a ranking record: best score first, equal scores in one tie group."""
    completions, scores = row["completions"], row["scores"]
    if not isinstance(completions, list) or not isinstance(scores, list):
        raise error("fields 'completions' and 'scores' must be arrays")
    if len(scores) != len(completions):
        raise error(f"field 'scores' has {len(scores)} scores for {len(completions)} completions")
    for s in scores:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s):
            raise error(f"score {s!r} is not a finite number")
    groups: dict[float, list[int]] = {}
    for i in sorted(range(len(scores)), key=lambda i: -scores[i]):
        groups.setdefault(float(scores[i]), []).append(i)
    rid = row.get("id", str(where).removeprefix("row "))
    return ranking_record({"id": rid, "prompt": row["prompt"], "completions": completions,
                           "ranking": list(groups.values()), "labeler": row.get("labeler", "scores")}, error)


def split_implicit(row: dict, error) -> dict:
    """{chosen, rejected} sharing their prompt -> {prompt, chosen, rejected} (the rules: module docstring)."""
    chosen, rejected = row["chosen"], row["rejected"]
    if isinstance(chosen, list) and isinstance(rejected, list):
        c, r = conversation(chosen, "chosen", error), conversation(rejected, "rejected", error)
        cut_c, cut_r = _last_assistant(c, "chosen", error), _last_assistant(r, "rejected", error)
        if c[:cut_c] != r[:cut_r]:
            raise error("chosen and rejected differ before their last assistant turn: no shared prompt")
        if not cut_c:
            raise error("chosen starts with its assistant turn: no prompt to split off")
        return {**row, "prompt": c[:cut_c], "chosen": c[cut_c:], "rejected": r[cut_r:]}
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        raise error(f"fields 'chosen' and 'rejected' must both be strings or both lists of messages, got "
                    f"{json_type(chosen)} and {json_type(rejected)}")
    if chosen == rejected:
        return {**row, "prompt": chosen, "chosen": "", "rejected": ""}  # no preference: dropped by the caller
    cut = shared_prefix(chosen, rejected)
    if not chosen[:cut].strip():
        raise error("chosen and rejected share no prefix to split off as the prompt (give a 'prompt' field)")
    return {**row, "prompt": chosen[:cut], "chosen": chosen[cut:], "rejected": rejected[cut:]}


def explicit_prompt(row: dict, error) -> dict:
    """A preference row with an explicit prompt, its completions after it: chosen and rejected given as whole
    conversations that repeat the prompt (UltraFeedback binarized) are split at their shared prefix, which the
    explicit prompt must agree with (module docstring); any other row is returned as it is."""
    chosen, rejected, prompt = row["chosen"], row["rejected"], row["prompt"]
    if not (isinstance(chosen, list) and isinstance(rejected, list)):
        return row
    if all(c and isinstance(c[0], dict) and c[0].get("role") == "assistant" for c in (chosen, rejected)):
        return row  # TRL's conversational explicit prompt: the completions are the assistant turns alone
    split = split_implicit(row, error)
    prefix = split["prompt"]
    if isinstance(prompt, list):
        agrees = conversation(prompt, "prompt", error) == prefix
    else:
        agrees = (isinstance(prompt, str) and len(prefix) == 1 and prefix[0]["role"] == "user"
                  and prefix[0]["content"].strip() == prompt.strip())
    if not agrees:
        what = "the single user turn" if isinstance(prompt, str) else "the messages"
        raise error(f"field 'prompt' is not {what} that 'chosen' and 'rejected' start with (they repeat the "
                    f"prompt as whole conversations; their shared prefix has {len(prefix)} message(s))")
    return split


def shared_prefix(a: str, b: str) -> int:
    """Where the prompt ends: the longest common prefix, moved back out of a word (and off the end of either
    text: a completion is never empty), then before its space.

    >>> s = "Q: why? A: Yes"; s[:shared_prefix(s, "Q: why? A: Yeah")]
    'Q: why? A:'
    """
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    def inside_word(k):  # noqa: E306 - a character on both sides of k that is not a space
        return k > 0 and not a[k - 1].isspace() and any(k < len(s) and not s[k].isspace() for s in (a, b))
    while n > 0 and (inside_word(n) or n in (len(a), len(b))):  # and leave each completion a word at least
        n -= 1
    if n > 0 and a[n - 1] == " ":
        n -= 1
    return n


def _last_assistant(messages: list[dict], name: str, error) -> int:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i]["role"] == "assistant":
            return i
    raise error(f"field '{name}' has no assistant turn")


# -------------------------------------------------------------------------------------------- prompts

def read_prompts(path, opts=None) -> list[dict]:
    """Prompt records {"prompt", "id"?, "task"?, "extra"?} from any format with a prompt; a prompt that
    repeats in pairs, rankings or candidates is kept once (a prompt-only file is kept as it is)."""
    fmt, rows = read_format(path, opts)
    if fmt == LM:
        raise at(path, None, f"a {LM} file (text) has no prompts; give {PROMPT_ONLY} rows (prompt)")
    if fmt == PROMPT_ONLY:
        return [_prompt_only(row, error) for _, row, error in rows]
    out, seen = [], set()
    for _, row, error in rows:
        if fmt == CONV_LM:
            messages = conversation(row["messages"], "messages", error)
            prompt = messages[:_last_assistant(messages, "messages", error)]
            if not prompt:
                raise error("field 'messages' starts with its assistant turn: no prompt")
            prompt = with_tools(prompt, row, error, "messages")
        elif fmt == IMPLICIT:
            if row["chosen"] == row["rejected"]:
                continue  # no prompt to find where nothing differs
            prompt = with_tools(split_implicit(row, error)["prompt"], row, error)
        else:
            prompt = prompt_value(explicit_prompt(row, error) if fmt == PREFERENCE else row, error)
        key = json.dumps([prompt, tools_of(prompt)], ensure_ascii=False, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        record = {"prompt": prompt}
        if row.get("id") is not None:
            record["id"] = str(row["id"])
        out.append(record)
    return out


def _prompt_only(row: dict, error) -> dict:
    record = prompt_record(row, error)
    extra = {k: v for k, v in row.items() if k not in ("prompt", "id", "task")}
    if extra:
        record["extra"] = extra
    return record


# ------------------------------------------------------------------------------------------ candidates

def read_candidates(path, opts=None, *, allow_prompts: bool = False) -> tuple[str, list[tuple]]:
    """("candidates", [(where, record)]) or, with `allow_prompts` and a file without completions,
    ("prompts", [(where, record)]); a prompt stays as given (a Conversation stays a list)."""
    fmt, rows = read_format(path, opts)
    if fmt == CANDIDATES:
        return "candidates", [(where, candidate_record(row, error)) for where, row, error in rows]
    if allow_prompts and fmt == PROMPT_ONLY:
        return "prompts", [(where, _prompt_only(row, error)) for where, row, error in rows]
    raise UserError(f"{path}: a {fmt} file; expected {CANDIDATES} (id, prompt, completions: [{{text, source}}])"
                    + (f" or {PROMPT_ONLY} rows" if allow_prompts else ""))
