"""The data-reading flags of every command that reads data files (light: imports no data library, so a command's
config, and `rlhf CMD --help`, load without datasets or pyarrow; the readers are in `readers.py`)."""

from __future__ import annotations

from dataclasses import dataclass

from rlhfkit.config import option


@dataclass
class DataOptions:
    """How a command reads its data files (a mixin of every config that reads data)."""
    split: str | None = option(None, "split of a DatasetDict folder (default: train when it has one)")
    field: list[str] = option([], "map a column onto one of our fields, NAME=COLUMN (comma list), "
                                  "e.g. prompt=question,chosen=good")
