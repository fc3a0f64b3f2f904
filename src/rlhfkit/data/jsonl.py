"""JSON Lines readers and writers.

Readers validate every line before anything is trained and fail with `path:line: what is wrong`.
Writers are atomic: they write a temporary file beside the target and rename it, so a crash, a bad record
or a full disk never leaves a half-written file behind (`rlhfkit.storage`).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from rlhfkit.errors import UserError, at
from rlhfkit.storage import append_text, atomic_file

Validator = Callable[[dict, Callable[[str], UserError]], dict]


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, object]]:
    """Yield (line number, decoded JSON) for each non-blank line; bad JSON -> `path:line: ...`. A gzip-compressed
    file (`.jsonl.gz`, found by its magic bytes) is read through `gzip`; a UTF-8 byte-order mark is skipped."""
    path = Path(path)
    if not path.exists():
        raise at(path, None, "no such file")
    if path.is_dir():
        raise at(path, None, "is a directory, not a JSON Lines file")
    try:
        with path.open("rb") as raw:
            compressed = raw.read(2) == b"\x1f\x8b"
        handle = gzip.open(path, "rt", encoding="utf-8-sig") if compressed else path.open("r", encoding="utf-8-sig")
    except OSError as exc:
        raise at(path, None, f"cannot read: {exc.strerror}") from None
    with handle:
        lineno = 0
        try:
            for lineno, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise at(path, lineno, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
                except RecursionError:
                    raise at(path, lineno, "invalid JSON: nested too deeply") from None
                if "\\u" in line and _has_lone_surrogate(obj):  # "\ud800" is JSON but not text: no writer takes it
                    raise at(path, lineno, "invalid text: a \\uD800-\\uDFFF escape that is not half of a pair")
                yield lineno, obj
        except UnicodeDecodeError:
            raise at(path, lineno + 1, "not UTF-8 text (a binary file? accepted: JSON Lines, JSON, Parquet, CSV, "
                                       "a datasets folder)") from None
        except (OSError, EOFError) as exc:  # a damaged or truncated .gz
            raise at(path, lineno + 1, f"cannot read: {exc}") from None


def read_json(path: str | Path, what: str) -> object:
    """One JSON document (`what` names it in the error): a missing or unreadable file, or bad JSON, is one line
    naming the file."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not {what} ({str(exc).splitlines()[0]})") from None


def _has_lone_surrogate(obj) -> bool:
    try:
        json.dumps(obj, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def read_jsonl(path: str | Path, validate: Validator | None = None, *, allow_empty: bool = False) -> list[dict]:
    """Read and validate every record; the file must hold at least one unless `allow_empty`."""
    records = []
    for lineno, obj in iter_jsonl(path):
        error = lambda message, _n=lineno: at(path, _n, message)  # noqa: E731
        if not isinstance(obj, dict):
            raise error(f"expected a JSON object, got {_json_type(obj)}")
        records.append(validate(obj, error) if validate else obj)
    if not records and not allow_empty:
        raise at(path, None, "file is empty (no JSON records)")
    return records


def jsonl_line(record: dict) -> str:
    """One record as a line of our JSONL files (non-ASCII characters written as they are, not escaped)."""
    return json.dumps(record, ensure_ascii=False) + "\n"


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write records atomically (temp file + fsync + rename); returns how many were written. On a full disk:
    one line (`storage.no_space`), the temporary file removed and the previous file, if any, intact."""
    count = 0
    with atomic_file(path, "w") as handle:
        for record in records:
            handle.write(jsonl_line(record))
            count += 1
    return count


def append_jsonl(path: str | Path, record: dict) -> None:
    """Append one record (metrics logs), straight to the file so a killed run keeps every line it acknowledged;
    on a full disk the log keeps its whole lines and the error is one line."""
    append_text(path, jsonl_line(record))


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def json_type(value) -> str:
    return _json_type(value)


def check_writable(path: str | Path) -> Path:
    """Fail early (before any work) when an output file cannot be created."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path}: is a directory; --out needs a file path")
    parent = path.parent if str(path.parent) else Path(".")
    if parent.exists() and not parent.is_dir():
        raise UserError(f"{parent}: is not a directory")
    return path
