"""What the app takes from a request or a command line, checked once: text, row ids, people's names.

- **Text.** JSON may escape half of a UTF-16 surrogate pair (`"\\ud800"` is valid JSON), and a multipart form
  may name its own charset (`charset=utf-7` decodes `+2AA-` to one): Python then holds a `str` that is no
  Unicode text, which neither database nor the response can encode. `Text` (the API models) and
  `check_form` (every posted form, through `deps.read_form`) refuse it with a 422 naming the field.
- **Integers.** Every integer of a path or a body is bounded: ids are `RowId`s, at most `DB_INT_MAX`, the
  largest a PostgreSQL INTEGER column holds (SQLite's hold 2⁶³ − 1; a bigger id names no row, and the driver
  raises on it); any other integer is an `Int` within the same 32 bits.
- **Names.** A person's name is what admin tables and exports show: `person_name` normalizes it (NFKC,
  whitespace collapsed) and refuses characters one cannot see, so that "ann" and "ann" + U+200B are not two
  people who look the same; `name_key` is what two names must not share (case and width ignored).
"""

from __future__ import annotations

import unicodedata
from typing import Annotated

from pydantic import AfterValidator, Field

from rlhfkit.errors import UserError

DB_INT_MAX = 2**31 - 1  # PostgreSQL INTEGER (the id columns of db.py)
MAX_NAME = 200  # the `project.name` and `labeler.name` columns (String(200))

# General categories a name may not hold (Unicode Standard §4.5): control, format (zero-width, bidi), private
# use, surrogate, unassigned, line and paragraph separators.
REFUSED_CATEGORIES = {"Cc": "a control character", "Cf": "an invisible format character",
                      "Co": "a private-use character", "Cs": "a lone surrogate", "Cn": "an unassigned code point",
                      "Zl": "a line separator", "Zp": "a paragraph separator"}
# Default_Ignorable_Code_Point (DerivedCoreProperties.txt) outside Cf, after NFKC: drawn as nothing (the
# combining grapheme joiner, Hangul fillers, Khmer inherent vowels).
IGNORABLE = {0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5}
# Part of the spelling beside other scripts, invisible beside ASCII: ZWNJ and ZWJ (Persian and Indic names,
# emoji sequences) are allowed between two letters, marks or symbols outside ASCII; variation selectors
# (emoji and text style, CJK and Mongolian variants) after one.
JOINERS = {0x200C, 0x200D}
SELECTORS = {0x180B, 0x180C, 0x180D, 0x180F, *range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)}
IN_WORDS_ONLY = JOINERS | SELECTORS


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


def _beside_a_word(name: str, i: int) -> bool:
    """A joiner at `name[i]` between, or a selector after, a letter, mark or symbol outside ASCII."""
    def wordlike(j: int) -> bool:
        return 0 <= j < len(name) and not name[j].isascii() and unicodedata.category(name[j])[0] in "LMS"
    return wordlike(i - 1) and (ord(name[i]) in SELECTORS or wordlike(i + 1))


def person_name(raw: str) -> str:
    """A person's name as stored: NFKC, each run of white space one space, none at the ends. Refused (`BadInput`):
    empty, longer than `MAX_NAME`, or holding a character one cannot see (`REFUSED_CATEGORIES`, `IGNORABLE`, a
    joiner or variation selector outside a word of another script)."""
    if (problem := unicode_problem(raw)) is not None:
        raise BadInput(f"name {raw!r} {problem}")
    name = " ".join(unicodedata.normalize("NFKC", raw).split())
    if not name:
        raise BadInput("--name is empty")
    if len(name) > MAX_NAME:
        raise BadInput(f"name is {len(name)} characters long (after Unicode NFKC normalization); at most {MAX_NAME}")
    for i, ch in enumerate(name):
        category = unicodedata.category(ch)
        if ord(ch) in IN_WORDS_ONLY and _beside_a_word(name, i):
            continue
        if _invisible(ch):
            what = REFUSED_CATEGORIES.get(category, "an invisible character")
            label = unicodedata.name(ch, "")
            raise BadInput(f"name {name!r} holds {what}, U+{ord(ch):04X}{f' {label}' if label else ''}, at position "
                           f"{i + 1}; a name is plain visible text")
    return name


def _invisible(ch: str) -> bool:
    return unicodedata.category(ch) in REFUSED_CATEGORIES or ord(ch) in IGNORABLE or ord(ch) in IN_WORDS_ONLY


def name_key(name: str) -> str:
    """What two people of one project may not share: the name as one reads it (NFKC, case-folded, white space
    collapsed, invisible characters dropped): "Ann", "ANN", "ａｎｎ" and, stored before these rules, "ann" +
    U+200B are one name."""
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    return " ".join("".join(ch for ch in folded if not _invisible(ch)).split())
