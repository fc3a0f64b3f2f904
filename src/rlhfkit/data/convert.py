"""`rlhf data convert IN --to rankings|pairs|prompts --out F`: our JSON Lines formats from any accepted format.

- rankings: from scored completions (best score first, equal scores tied) or rankings;
- pairs: from any preference format (explicit or implicit prompt), or every strictly ordered pair of rankings
  and scored completions (C(K,2) without ties);
- prompts: from every format with a prompt (data/formats.py `read_prompts`).

A conversation's `tools` are written beside its prompt (a list of tool schemas), as the readers read them back.

The output is written atomically (a temporary file renamed), so a bad row leaves no half-written file.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlhfkit.config import required
from rlhfkit.data.formats import read_format, read_preferences, read_prompts
from rlhfkit.data.jsonl import check_writable, write_jsonl
from rlhfkit.data.pairs import rankings_to_pair_records
from rlhfkit.data.readers import DataOptions
from rlhfkit.data.schemas import tools_field
from rlhfkit.errors import UserError

TARGETS = ("rankings", "pairs", "prompts")


@dataclass
class ConvertConfig(DataOptions):
    data: str | None = required("data file or datasets folder (any accepted format)", positional=True)
    to: str | None = required("format to write: rankings | pairs | prompts")
    out: str | None = required("output JSONL")

    def check(self) -> None:
        if self.to not in TARGETS:
            raise UserError(f"--to {self.to!r}: expected one of {', '.join(TARGETS)}")


def convert(cfg: ConvertConfig) -> int:
    cfg.check()
    check_writable(cfg.out)
    fmt, _ = read_format(cfg.data, cfg)
    if cfg.to == "prompts":
        records = [{**r.get("extra", {}), **{k: v for k, v in r.items() if k != "extra"}}
                   for r in read_prompts(cfg.data, cfg)]
    else:
        kind, records = read_preferences(cfg.data, cfg, command="data convert")
        if cfg.to == "pairs" and kind == "rankings":
            records = rankings_to_pair_records(records)
        elif cfg.to == "rankings" and kind == "pairs":
            raise UserError(f"{cfg.data}: a {fmt} file holds pairs, not rankings; use --to pairs")
    records = [{**r, **tools_field(r["prompt"])} for r in records]  # a conversation's tools go with it
    n = write_jsonl(cfg.out, records)
    print(f"data convert: {n} {cfg.to} from a {fmt} file {cfg.data} -> {cfg.out}")
    return n
