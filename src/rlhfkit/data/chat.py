"""Where records become token ids: the one place every trainer, scorer and sampler encodes text (issue 16).

A prompt P is a str or a Conversation (a list of {"role", "content"} messages); a completion C is a str or the
assistant message(s) that follow a conversational prompt (a str after a Conversation is one assistant message).

- A str prompt is encoded as the model's own inference does: `tokenizer(text)`, with its special tokens (BOS
  where the tokenizer adds one). A Conversation: `apply_chat_template(conv, add_generation_prompt=True)`, whose
  template writes BOS itself (no second one).
- A str completion after a str prompt: its tokens (no special tokens) + EOS. After a Conversation: the template's
  rendering of prompt + completion, minus the prompt's rendering, cut right after the first stop token — what
  generation stops at (a template's trailing "\\n" after `<|im_end|>` is dropped); for the reward model, a
  completion of several messages (a trajectory: assistant turns, tool calls, tool results) is cut after its last
  turn's stop token instead (`completion_ids(whole=True)`).
  Where the prompt's ids are not the start of the full rendering's ids, the completion is the text of the full
  rendering after the prompt's text, encoded on its own (as TRL does): generation starts from the prompt's ids,
  so these are the ids it produces. A byte-level BPE with GPT-2's pre-tokenizer rule needs it under a Llama-3
  template: the generation prompt's "\\n\\n" is one token at the end of the prompt but two before the completion's
  first word. Only a template whose full rendering does not start with the prompt's text is refused.
- A Conversation's `tools` (data/schemas.py) go to every render of it: `apply_chat_template(..., tools=...)`; a
  template that would drop them, or an assistant message's `tool_calls`, or cannot render a tool message, is
  refused in one line (`render_text`).
- Stop ids: the tokenizer's EOS ∪ generation_config's eos_token_id (an int or a list) ∪ the template's
  end-of-turn token for conversational prompts.
- Too long: prompts lose tokens on the left (a leading BOS is kept), completions on the right; `Truncation`
  counts the rows cut, or refuses them (truncation="error").

The toy world's word-level tokenizer adds no special tokens and has no template: its ids are what they always were.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rlhfkit.data.schemas import tools_of
from rlhfkit.errors import UserError

_PROBE = "\u2063probe\u2063"  # the assistant content of the conversation rendered to find the end-of-turn token


def is_conversation(value) -> bool:
    return isinstance(value, list)


class TokenIds(list):
    """A conversation given as its token ids: the next turn of a multi-turn rollout (engines/multiturn.py) continues
    the exact ids before it — nothing is rendered or encoded again. A conversation, so its stop ids include the
    template's end of turn."""


def as_messages(completion) -> list[dict]:
    """A completion after a conversational prompt as messages: a str is one assistant message."""
    return [{"role": "assistant", "content": completion}] if isinstance(completion, str) else list(completion)


def model_dir(tokenizer) -> str:
    return str(getattr(tokenizer, "name_or_path", "") or "the model")


def set_chat_template(tokenizer, path: str | os.PathLike | None):
    """--chat-template FILE: a Jinja template that sets or replaces the tokenizer's (saved with the model)."""
    if path is None:
        return tokenizer
    path = Path(path)
    try:
        tokenizer.chat_template = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the chat template (--chat-template): {exc}") from None
    return tokenizer


def require_template(tokenizer) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"{model_dir(tokenizer)}: conversational data, but the tokenizer has no chat template "
                        "(pass one with --chat-template FILE)")


def render_text(tokenizer, messages: list[dict], generation_prompt: bool, tools: list[dict] | None = None) -> str:
    """The chat template's text of `messages` (with `tools`, the tool schemas, when given).

    A template that cannot show what the conversation holds is refused in one line rather than trained on
    silently: one that raises on a tool message (Gemma's: roles must alternate user/model), one whose text is
    the same with and without the row's `tools` (the model would never see them), or without an assistant
    message's `tool_calls` (the call it is trained to make would be an empty turn)."""
    require_template(tokenizer)
    text = _apply(tokenizer, messages, generation_prompt, tools)
    if tools and text == _apply(tokenizer, messages, generation_prompt, None):
        raise UserError(f"{model_dir(tokenizer)}: the chat template does not render tools: the row's `tools` would "
                        "never reach the model (pass a template that writes them with --chat-template FILE)")
    if any(m.get("tool_calls") for m in messages):
        bare = [{k: v for k, v in m.items() if k != "tool_calls"} for m in messages]
        if text == _apply(tokenizer, bare, generation_prompt, tools):
            raise UserError(f"{model_dir(tokenizer)}: the chat template does not render tool calls: an assistant "
                            "message's `tool_calls` would be dropped (pass a template that writes them with "
                            "--chat-template FILE)")
    return text


def _apply(tokenizer, messages: list[dict], generation_prompt: bool, tools: list[dict] | None) -> str:
    try:
        return tokenizer.apply_chat_template(messages, add_generation_prompt=generation_prompt, tokenize=False,
                                             tools=tools)
    except Exception as exc:  # jinja2's TemplateError, or a template's own raise_exception(...)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if any(m.get("role") == "tool" for m in messages):
            raise UserError(f"{model_dir(tokenizer)}: the chat template cannot render tool messages (role 'tool'): "
                            f"{reason}") from None
        raise UserError(f"{model_dir(tokenizer)}: the chat template cannot render this conversation: "
                        f"{reason}") from None


def encode_text(tokenizer, text: str) -> list[int]:
    """A rendered text's ids, as `apply_chat_template(tokenize=True)` encodes it: the template wrote the specials."""
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def render(tokenizer, messages: list[dict], generation_prompt: bool, tools: list[dict] | None = None) -> list[int]:
    return encode_text(tokenizer, render_text(tokenizer, messages, generation_prompt, tools))


def prompt_ids(tokenizer, prompt) -> list[int]:
    """The prompt's ids as the model's inference encodes them (see the module docstring)."""
    if isinstance(prompt, TokenIds):
        return list(prompt)
    if is_conversation(prompt):
        return render(tokenizer, prompt, True, tools_of(prompt))
    return list(tokenizer(prompt)["input_ids"])


def end_of_turn_id(tokenizer) -> int | None:
    """The special token the chat template closes an assistant turn with (None without a template or one).

    Found by rendering a probe conversation: the first special token after the assistant's content."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    probe = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": _PROBE}]
    try:
        text = tokenizer.apply_chat_template(probe, tokenize=False)
    except Exception:  # a template that refuses the probe has no end-of-turn we can find
        return None
    if _PROBE not in text:
        return None
    after = tokenizer(text[text.index(_PROBE) + len(_PROBE):], add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids) | {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    return next((i for i in after if i in special), None)


def eos_ids(value) -> list[int]:
    """An eos_token_id field (None, an int or a list) as a list."""
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def stop_ids(tokenizer, model_or_config=None, conversational: bool = False) -> set[int]:
    """EOS ∪ generation_config.eos_token_id ∪ (for conversational prompts) the template's end-of-turn token."""
    stops = set(eos_ids(tokenizer.eos_token_id))
    generation = getattr(model_or_config, "generation_config", None)
    if generation is not None:
        stops |= set(eos_ids(getattr(generation, "eos_token_id", None)))
    if conversational:
        end = end_of_turn_id(tokenizer)
        if end is not None:
            stops.add(end)
    return stops


def completion_ids(tokenizer, prompt, completion, finished: bool = True, prompt_tokens: list[int] | None = None,
                   stops: set[int] | None = None, whole: bool = False) -> list[int]:
    """The completion's ids after `prompt`, ending with its stop token when `finished` (see the module docstring).

    `prompt_tokens`: `prompt_ids(tokenizer, prompt)` when the caller has them already. `whole`: a trajectory
    (several messages) is kept through its last turn's stop token — what the reward model scores; without it the
    ids end at the first stop token, where generation of one turn ends (SFT's and DPO's targets: a loss over a
    trajectory's tool results would train the policy on the environment's tokens)."""
    if not is_conversation(prompt):
        ids = list(tokenizer(completion, add_special_tokens=False)["input_ids"])
        return ids + [tokenizer.eos_token_id] if finished else ids
    head = prompt_tokens if prompt_tokens is not None else prompt_ids(tokenizer, prompt)
    messages = as_messages(completion)
    rest = continuation(tokenizer, list(prompt), messages, head, tools_of(prompt))
    stops = stops if stops is not None else stop_ids(tokenizer, None, True)
    ends = [i for i, t in enumerate(rest) if t in stops]
    if not ends:
        return rest
    # One turn ends at its first stop token; a trajectory (assistant turns, tool calls, tool results) at its last
    # turn's: every turn before it is scored with it.
    end = ends[-1] if whole and len(messages) > 1 else ends[0]
    return rest[:end + 1] if finished else rest[:end]


def continuation(tokenizer, prompt: list[dict], messages: list[dict], head: list[int],
                 tools: list[dict] | None) -> list[int]:
    """The ids that `messages` add after a prompt whose ids are `head` (its rendering with the generation prompt):
    the full rendering's ids after `head` where `head` starts them, else the full rendering's text after the
    prompt's, encoded on its own — what generation produces after `head` (module docstring)."""
    full = render_text(tokenizer, prompt + messages, False, tools)
    ids = encode_text(tokenizer, full)
    if ids[:len(head)] == head:
        return ids[len(head):]
    text = render_text(tokenizer, prompt, True, tools)
    if not full.startswith(text):
        raise UserError(f"{model_dir(tokenizer)}: the chat template is not prefix-stable: the rendered prompt is "
                        "not the start of the rendered prompt + completion")
    return encode_text(tokenizer, full[len(text):])


def conversation_ids(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """SFT's {"messages": ...}: the rendered conversation and a loss mask on every assistant turn — its content
    through its end-of-turn token, and not one system, user or template token.

    Each prefix is rendered incrementally: the tokens an assistant message adds to the conversation before it
    (rendered with the generation prompt) are its turn, up to and including the first stop token. Where the ids of
    a longer prefix do not start with those of a shorter one (module docstring), each new stretch of the rendering
    is encoded on its own: the sequence a conversation grows into, turn by turn, when each assistant turn is
    generated after the ids before it."""
    tools = tools_of(messages)
    try:
        return _turn_by_turn(tokenizer, messages, tools, by_text=False)
    except _NotPrefix:
        try:
            return _turn_by_turn(tokenizer, messages, tools, by_text=True)
        except _NotPrefix:
            raise UserError(f"{model_dir(tokenizer)}: the chat template is not prefix-stable: a conversation's "
                            "rendering does not start with the rendering of its first turns") from None


class _NotPrefix(Exception):
    pass


def _turn_by_turn(tokenizer, messages: list[dict], tools, by_text: bool) -> tuple[list[int], list[int]]:
    """(ids, loss mask) of `conversation_ids`; with `by_text`, each stretch's text is encoded on its own."""
    stops = stop_ids(tokenizer, None, True)
    ids: list[int] = []
    mask: list[int] = []
    done = ""  # by_text: the text of the rendering that `ids` encode

    def more(rendered: str) -> list[int]:  # the ids `rendered` adds after `ids`
        if by_text:
            if not rendered.startswith(done):
                raise _NotPrefix
            return encode_text(tokenizer, rendered[len(done):])
        new = encode_text(tokenizer, rendered)
        if new[:len(ids)] != ids:
            raise _NotPrefix
        return new[len(ids):]

    for i, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        head = render_text(tokenizer, messages[:i], True, tools)
        new = more(head)
        ids, mask, done = ids + new, mask + [0] * len(new), head
        turn = more(render_text(tokenizer, messages[:i + 1], False, tools))
        end = next((k for k, t in enumerate(turn) if t in stops), None)
        turn = turn if end is None else turn[:end + 1]  # through the stop token generation ends the turn with
        ids, mask = ids + turn, mask + [1] * len(turn)
        if by_text:
            done += tokenizer.decode(turn, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    rest = more(render_text(tokenizer, messages, False, tools))
    return ids + rest, mask + [0] * len(rest)


class Truncation:
    """Fits rows into `max_length` tokens: prompts lose tokens on the left (keeping a leading BOS), the rest on
    the right; counts the rows cut (`report` logs the count once), or refuses them with mode "error"."""

    def __init__(self, max_length: int, mode: str = "truncate", what: str = "max_length"):
        self.max_length, self.mode, self.what, self.cut = max_length, mode, what, 0

    def refuse_or_count(self, where: str, length: int, limit: int) -> None:
        if self.mode == "error":
            raise UserError(f"{where}: {length} tokens, longer than {self.what} {limit} (--truncation error; "
                            "drop --truncation error to cut long rows)")
        self.cut += 1

    def prompt(self, ids: list[int], bos: int | None, where: str = "a prompt", limit: int | None = None) -> list[int]:
        """A prompt alone (generation): its last `limit` tokens, a leading BOS kept."""
        limit = self.max_length if limit is None else limit
        if len(ids) <= limit:
            return ids
        self.refuse_or_count(where, len(ids), limit)
        return keep_left(ids, limit, bos)

    def pair(self, prompt: list[int], target: list[int], bos: int | None, where: str = "a row"
             ) -> tuple[list[int], list[int]]:
        """prompt + target in `max_length` tokens: the target keeps at most max_length - 1, the prompt the rest."""
        limit = self.max_length
        if len(prompt) + len(target) <= limit:
            return prompt, target
        self.refuse_or_count(where, len(prompt) + len(target), limit)
        target = target[:limit - 1] if len(target) >= limit else target
        return keep_left(prompt, limit - len(target), bos), target

    def text(self, ids: list[int], where: str = "a row") -> list[int]:
        """A text + EOS: cut on the right, the EOS kept last."""
        if len(ids) <= self.max_length:
            return ids
        self.refuse_or_count(where, len(ids), self.max_length)
        return ids[:self.max_length - 1] + ids[-1:]

    def report(self, command: str) -> None:
        if self.cut:
            print(f"{command}: {self.cut} rows longer than {self.what} {self.max_length} were truncated "
                  "(prompts from the left, the rest from the right; --truncation error refuses them)",
                  file=sys.stderr)


def keep_left(ids: list[int], n: int, bos: int | None) -> list[int]:
    """The last `n` ids; a leading BOS stays in front."""
    if n <= 0:
        return []
    if bos is not None and ids and ids[0] == bos and n > 1:
        return [bos] + ids[len(ids) - (n - 1):]
    return ids[len(ids) - n:]


def example_ids(tokenizer, record: dict, truncation: Truncation, where: str = "a row",
                stops: set[int] | None = None) -> tuple[list[int], list[int]]:
    """An SFT record as (input ids, loss mask): prompt + completion (loss on the completion and its stop token),
    {"text"} (loss on every token) or {"messages"} (loss on every assistant turn)."""
    if "messages" in record:
        ids, mask = conversation_ids(tokenizer, record["messages"])
        if len(ids) > truncation.max_length:
            truncation.refuse_or_count(where, len(ids), truncation.max_length)
            ids, mask = ids[:truncation.max_length], mask[:truncation.max_length]
        return ids, mask
    if "text" in record:
        ids = truncation.text(list(tokenizer(record["text"])["input_ids"]) + [tokenizer.eos_token_id], where)
        return ids, [1] * len(ids)
    prompt = prompt_ids(tokenizer, record["prompt"])
    target = completion_ids(tokenizer, record["prompt"], record["completion"], True, prompt, stops)
    prompt, target = truncation.pair(prompt, target, tokenizer.bos_token_id, where)
    return prompt + target, [0] * len(prompt) + [1] * len(target)
