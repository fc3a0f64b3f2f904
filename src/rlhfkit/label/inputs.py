"""What the app takes from a request or a command line, checked once: text and integers.

- **Text.** JSON may escape half of a UTF-16 surrogate pair (`"\\ud800"` is valid JSON), and a multipart form
  may name its own charset (`charset=utf-7` decodes `+2AA-` to one): Python then holds a `str` that is no
  Unicode text, which neither database nor the response can encode. `Text` (the API models) and
  `check_form` (every posted form, through `deps.read_form`) refuse it with a 422 naming the field.
- **Integers.** Every integer of a path or a body is bounded: ids are `RowId`s, at most `DB_INT_MAX`, the
  largest a PostgreSQL INTEGER column holds (SQLite's hold 2⁶³ − 1; a bigger id names no row, and the driver
  raises on it); any other integer is an `Int` within the same 32 bits.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

from rlhfkit.errors import UserError

DB_INT_MAX = 2**31 - 1  # PostgreSQL INTEGER (the id columns of db.py)
MAX_NAME = 200  # the `project.name` and `labeler.name` columns (String(200))


class BadInput(UserError):
    """A request field or option that is not what it must be (HTTP 422); the message names it."""


def unicode_problem(text: str) -> str | None:
    """What makes `text` unwritable as UTF-8 (a lone surrogate, named by code point), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"is not Unicode text: it holds a lone UTF-16 surrogate U+{ord(text[exc.start]):04X}"
    return None


def unicode_text(value: str) -> str:
    if (problem := unicode_problem(value)) is not None:
        raise ValueError(problem)
    return value


Text = Annotated[str, AfterValidator(unicode_text)]
Int = Annotated[int, Field(ge=-DB_INT_MAX - 1, le=DB_INT_MAX)]  # any integer a request may carry
RowId = Annotated[int, Field(ge=1, le=DB_INT_MAX)]  # the id of a row (an assignment, a submission)


def check_form(form) -> None:
    """Every field of a posted form (names and values; uploads are not text) must be Unicode text."""
    for key, value in form.multi_items():
        if (problem := unicode_problem(key)) is not None:
            raise BadInput(f"the name of form field {key!r} {problem}")
        if isinstance(value, str) and (problem := unicode_problem(value)) is not None:
            raise BadInput(f"form field {key!r} {problem}")


def writable(value):
    """`value` with every string made encodable (a lone surrogate shown as its escape, `\\ud800`): for echoing
    what a client sent in an error."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {writable(k): writable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [writable(v) for v in value]
    return value
