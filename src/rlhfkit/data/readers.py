"""Rows from the files users bring: JSON Lines, JSON arrays, Parquet, CSV and `datasets.save_to_disk` folders.

`read_rows(path)` yields `(where, row)` for every row: `where` is the line number for JSON Lines (errors read
`path:LINE: ...`, as they always have) and `"row N"` for every other source (`path:row N: ...`, row 1 is the
first). Which reader runs:

- `.jsonl`, a `.json` holding lines, any other name, gzip-compressed (`.gz`) too: our stdlib-json reader
  (`jsonl.py`), for line-exact errors and no type inference (a JSON value stays what it is);
- a `.json` (or `.json.gz`) whose first character is `[`: `json.load`, one array of objects;
- Parquet (found by its `PAR1` magic bytes, whatever the file is called): `pyarrow.parquet`, batch by batch;
  nested columns (lists of {role, content}) come out as plain lists and dicts;
- `.csv`: `pyarrow.csv`, every column read as a string (a CSV has no types: "1" stays "1", an empty cell "");
- a folder written by `save_to_disk`: `datasets.load_from_disk`, a Dataset, or a DatasetDict and its `--split`
  (default `train` when it has one; `--split` is ignored by single-table sources).

A UTF-8 byte-order mark is skipped. `--field NAME=COLUMN` renames a column of the file to one of our field
names before any format is detected (`prompt=question,chosen=response_j`).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from rlhfkit.config import option
from rlhfkit.data.jsonl import iter_jsonl, json_type
from rlhfkit.errors import UserError, at

# The names `--field` may map a column onto: every field of the formats in data/formats.py.
FIELD_NAMES = ("prompt", "completion", "chosen", "rejected", "text", "messages", "completions", "scores",
               "ranking", "label", "labels", "id", "task", "labeler", "group", "likert", "flags", "notes",
               "finished", "tools")
PARQUET_MAGIC, GZIP_MAGIC = b"PAR1", b"\x1f\x8b"
DEFAULT_SPLIT = "train"


@dataclass
class DataOptions:
    """How a command reads its data files (a mixin of every config that reads data)."""
    split: str | None = option(None, "split of a DatasetDict folder (default: train when it has one)")
    field: list[str] = option([], "map a column onto one of our fields, NAME=COLUMN (comma list), "
                                  "e.g. prompt=question,chosen=good")


def field_map(fields: list[str] | None) -> dict[str, str]:
    """`["prompt=question"]` -> {"question": "prompt"} (column -> our name); a malformed entry -> one line."""
    mapping: dict[str, str] = {}
    for item in fields or []:
        name, eq, column = (part.strip() for part in item.partition("="))
        if not eq or not name or not column:
            raise UserError(f"--field {item!r}: expected NAME=COLUMN, e.g. prompt=question")
        if name not in FIELD_NAMES:
            raise UserError(f"--field {item!r}: unknown field '{name}' (known: {', '.join(FIELD_NAMES)})")
        if column in mapping:
            raise UserError(f"--field {item!r}: column '{column}' is mapped twice")
        mapping[column] = name
    return mapping


def read_rows(path: str | Path, *, split: str | None = None, fields: list[str] | None = None
              ) -> Iterator[tuple[int | str, dict]]:
    """(where, row) for every row of a data file or folder; every row is a dict of plain Python values."""
    path = Path(path)
    mapping = field_map(fields)
    rows = _source(path, split)
    first = True
    for where, row in rows:
        if not isinstance(row, dict):
            raise at(path, where, f"expected a JSON object, got {json_type(row)}")
        if mapping:
            if first:
                missing = [c for c in mapping if c not in row]
                if missing:
                    raise at(path, None, f"--field {mapping[missing[0]]}={missing[0]}: no column "
                                         f"'{missing[0]}' (columns: {', '.join(map(str, row))})")
            row = {**{k: v for k, v in row.items() if k not in mapping and k not in mapping.values()},
                   **{mapping.get(k, k): v for k, v in row.items() if k in mapping}}
        first = False
        yield where, row


def _source(path: Path, split: str | None) -> Iterator[tuple[int | str, object]]:
    if not path.exists():
        raise at(path, None, "no such file")
    if path.is_dir():
        return _dataset_rows(path, split)
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError as exc:
        raise at(path, None, f"cannot read: {exc.strerror}") from None
    if head == PARQUET_MAGIC:
        return _parquet_rows(path)
    if path.suffix.lower() == ".csv":
        return _csv_rows(path)
    if _starts_with_bracket(path, gz=head[:2] == GZIP_MAGIC):
        return _json_array_rows(path, gz=head[:2] == GZIP_MAGIC)
    return iter_jsonl(path)


def _starts_with_bracket(path: Path, gz: bool) -> bool:
    """A `.json` (or `.json.gz`) file whose first non-space character is `[` is one JSON array."""
    name = path.name.lower()
    if not (name.endswith(".json") or name.endswith(".json.gz")):
        return False
    try:
        with (gzip.open(path, "rt", encoding="utf-8-sig") if gz else path.open("r", encoding="utf-8-sig")) as f:
            while chunk := f.read(4096):
                text = chunk.lstrip()
                if text:
                    return text[0] == "["
    except (UnicodeDecodeError, OSError, EOFError, gzip.BadGzipFile):
        return False  # the JSON Lines reader names the problem and its line
    return False


def _json_array_rows(path: Path, gz: bool) -> Iterator[tuple[str, object]]:
    try:
        with (gzip.open(path, "rt", encoding="utf-8-sig") if gz else path.open("r", encoding="utf-8-sig")) as f:
            rows = json.load(f)
    except json.JSONDecodeError as exc:
        raise at(path, exc.lineno, f"invalid JSON: {exc.msg} (column {exc.colno})") from None
    except UnicodeDecodeError:
        raise at(path, None, "not UTF-8 text") from None
    except RecursionError:
        raise at(path, None, "invalid JSON: nested too deeply") from None
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise at(path, None, f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if not isinstance(rows, list):
        raise at(path, None, f"expected a JSON array of objects, got {json_type(rows)}")
    for n, row in enumerate(rows, start=1):
        yield f"row {n}", row


def _parquet_rows(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
        n = 0
        for batch in batches:
            for row in batch.to_pylist():
                n += 1
                yield f"row {n}", row
    except (pa.ArrowException, OSError) as exc:
        raise at(path, None, f"cannot read as Parquet: {_first_line(exc)}") from None


def _csv_rows(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        names = pa_csv.open_csv(path).schema.names
        table = pa_csv.read_csv(path, convert_options=pa_csv.ConvertOptions(
            column_types={name: pa.string() for name in names}))
    except (pa.ArrowException, OSError) as exc:
        raise at(path, None, f"cannot read as CSV: {_first_line(exc)}") from None
    for n, row in enumerate(table.to_pylist(), start=1):
        yield f"row {n}", row


def _dataset_rows(path: Path, split: str | None) -> Iterator[tuple[str, dict]]:
    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise at(path, None, "is a directory but not a `datasets` save_to_disk folder (no dataset_info.json or "
                             "dataset_dict.json)") from None
    except Exception as exc:  # noqa: BLE001 - `datasets` raises many kinds; the user needs the one line
        raise at(path, None, f"cannot load with datasets.load_from_disk: {_first_line(exc)}") from None
    if isinstance(loaded, datasets.DatasetDict):
        names = list(loaded)
        wanted = split or (DEFAULT_SPLIT if DEFAULT_SPLIT in loaded else None)
        if wanted is None:
            raise at(path, None, f"a DatasetDict without a '{DEFAULT_SPLIT}' split: choose one with --split "
                                 f"({', '.join(names)})")
        if wanted not in loaded:
            raise at(path, None, f"--split {wanted}: no such split (splits: {', '.join(names)})")
        loaded = loaded[wanted]
    for n, row in enumerate(loaded, start=1):
        yield f"row {n}", row


def _first_line(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
