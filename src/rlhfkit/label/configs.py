"""The configs of `rlhf label ...` (light: `rlhf label CMD --help` loads no FastAPI, SQLAlchemy or Alembic)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

from rlhfkit.config import option, required
from rlhfkit.data.options import DataOptions
from rlhfkit.errors import UserError
from rlhfkit.label import assign, interop
from rlhfkit.label.names import MODES, ROLES, normalize_url

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"


def check_public_url(url: str, key: str) -> None:
    if not re.fullmatch(r"https?://[^/\s]+(/\S*)?", url):
        raise UserError(f"config key '{key}': expected an http(s) URL such as https://labels.example.org, got {url!r}")


DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhd])")


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str, key: str) -> float | None:
    """'90m', '48h', '7d' -> seconds; 'never' -> None."""
    if text.strip().lower() == "never":
        return None
    m = DURATION.fullmatch(text.strip())
    if m is None or float(m.group(1)) <= 0:
        raise UserError(f"config key '{key}': expected a duration such as 30m, 48h, 7d or 'never', got {text!r}")
    return float(m.group(1)) * DURATION_UNITS[m.group(2)]


def check_tool(tool: str | None) -> None:
    if tool is not None and tool not in interop.TOOLS:
        raise UserError(f"--to {tool!r}: expected one of {', '.join(interop.TOOLS)}")


Format = Literal["rankings", "pairs", "demos", "raw"]


FORMATS = get_args(Format)


@dataclass
class ServeConfig:
    db: str | None = required("database: a SQLite file (labels.db) or a URL (postgresql://user@host/db)")
    host: str = option("127.0.0.1", "address to listen on (loopback by default)")
    port: int = option(8000, "TCP port")
    lease_seconds: float = option(assign.DEFAULT_LEASE_SECONDS, "seconds a labeler holds an item before it returns")
    secure_cookie: bool = option(False, "mark the session cookie Secure (set this when served over HTTPS)")
    public_url: str | None = option(None, "where people reach the app (https://labels.example.org): the start "
                                          "of invite links on the admin page (default http://HOST:PORT)")

    def check(self) -> None:
        normalize_url(self.db)
        if self.public_url is not None:
            check_public_url(self.public_url, "public_url")
        if not 0 <= self.port <= 65535:  # 0: the system picks a free port
            raise UserError(f"config key 'port' must be from 0 to 65535, got {self.port}")
        if not self.lease_seconds > 0:
            raise UserError(f"config key 'lease_seconds' must be above 0, got {self.lease_seconds}")


@dataclass
class ImportConfig(DataOptions):
    candidates: str | None = required("candidates JSONL (id, prompt, completions: [{text, source}]); "
                                      "for --mode demo a prompts file works too", positional=True)
    db: str | None = required("database: a SQLite file or a URL")
    project: str | None = required("project name (created on first import)")
    mode: str = option("rank", "rank | pairwise | demo")
    overlap: int | None = option(None, "distinct labelers per item (default 3 for a new project)")
    eval: str | None = option(None, "blind evaluation of two policies: policy A's outputs; the positional file "
                                    "holds policy B's on the same prompts (`--mode pairwise --eval A.jsonl B.jsonl`)")
    seed: int = option(0, "with --eval: the seed that draws, per item, whether A is shown as the first output")

    def check(self) -> None:
        normalize_url(self.db)
        if not self.project.strip():
            raise UserError("--project is empty")
        if self.mode not in MODES:
            raise UserError(f"--mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if self.eval is not None and self.mode != "pairwise":
            raise UserError(f"--eval compares two policies side by side: it needs --mode pairwise, not {self.mode!r}")
        if self.overlap is not None and self.overlap < 1:
            raise UserError(f"--overlap {self.overlap}: each item needs at least one labeler")


@dataclass
class InviteConfig:
    db: str | None = required("database: a SQLite file or a URL")
    project: str | None = required("project name")
    name: str | None = required("the person's name (their `labeler` in exports)")
    role: str = option("labeler", "labeler | admin")
    public_url: str = option(DEFAULT_PUBLIC_URL, "where the app is reached (serve's --public-url), for the printed "
                                                 "link")
    expires: str = option("7d", "the link stops working after this long: 30m, 48h, 7d, ... or 'never'")
    single_use: bool = option(False, "the link logs in once (one browser); later clicks need a new invite")
    replace: bool = option(False, "re-invite someone who has a live link: it is replaced and they are logged out")

    def check(self) -> None:
        normalize_url(self.db)
        if self.role not in ROLES:
            raise UserError(f"--role {self.role!r}: expected one of {', '.join(ROLES)}")
        if not self.name.strip():
            raise UserError("--name is empty")
        check_public_url(self.public_url, "public_url")
        parse_duration(self.expires, "expires")


@dataclass
class RevokeConfig:
    db: str | None = required("database: a SQLite file or a URL")
    project: str | None = required("project name")
    name: str | None = required("the person whose link and sessions end (their answers stay)")

    def check(self) -> None:
        normalize_url(self.db)


@dataclass
class GuidelinesConfig:
    file: str | None = option(None, "a Markdown file with the project's instructions for labelers", positional=True)
    db: str | None = required("database: a SQLite file or a URL")
    project: str | None = required("project name")
    clear: bool = option(False, "remove the guidelines instead")
    show: bool = option(False, "print the current guidelines instead")

    def check(self) -> None:
        normalize_url(self.db)
        if sum([self.file is not None, self.clear, self.show]) != 1:
            raise UserError("give one of: a Markdown FILE, --clear, --show")


@dataclass
class ExportConfig:
    db: str | None = required("database: a SQLite file or a URL")
    project: str | None = required("project name")
    format: str = option("rankings", "rankings | pairs | demos | raw")
    out: str | None = required("output JSONL file (a JSON file with --to)")
    to: str | None = option(None, "write the rankings for another tool instead: label-studio (tasks with "
                                  "annotations, and the labeling config beside them) | argilla (Argilla 2 records)")

    def check(self) -> None:
        normalize_url(self.db)
        if self.format not in FORMATS:
            raise UserError(f"--format {self.format!r}: expected one of {', '.join(FORMATS)}")
        check_tool(self.to)
        if self.to is not None and self.format != "rankings":
            raise UserError(f"--to {self.to} writes rankings; leave out --format {self.format}")


@dataclass
class ForeignConfig:
    file: str | None = required("a Label Studio JSON export or an Argilla 2 records.json (with --to rankings), "
                                "or a rankings JSONL (with --to label-studio|argilla)", positional=True)
    out: str | None = required("the file to write")
    to: str = option("rankings", "rankings | label-studio | argilla")
    buckets: list[str] = option([], "Label Studio Ranker buckets, best first, comma-separated (default: their "
                                    "order in the export)")
    prompt_field: str = option("prompt", "the task data key (Label Studio) or record field (Argilla) of the prompt")

    def check(self) -> None:
        if self.to != "rankings":
            check_tool(self.to)


@dataclass
class StatsConfig:
    db: str | None = required("database: a SQLite file or a URL")
    project: str | None = required("project name")
    json: bool = option(False, "print JSON instead of a table")
    report: str | None = option(None, "a JSON report with win rates by gold or RM (`rlhf eval winrate --json-out`, "
                                      "`rlhf demo`'s report.json): shown next to the people's blind A/B win rate")

    def check(self) -> None:
        normalize_url(self.db)


@dataclass
class ReviewConfig:
    db: str | None = required("database: a SQLite file or a URL")
    project: str | None = required("project name")
    limit: int = option(20, "items to print, most disputed first")
    json: bool = option(False, "print the whole queue as JSON instead")

    def check(self) -> None:
        normalize_url(self.db)
        if self.limit < 1:
            raise UserError(f"--limit must be at least 1, got {self.limit}")


@dataclass
class LockConfig:
    db: str | None = required("database: a SQLite file or a URL")
    project: str | None = required("project name")
    item: str | None = option(None, "lock only this item (its imported id)")
    unlock: bool = option(False, "open it for edits again")

    def check(self) -> None:
        normalize_url(self.db)


@dataclass
class GoldConfig:
    file: str | None = option(None, "gold items: a rankings JSONL file (id, prompt, completions, ranking = the known "
                                    "answer)", positional=True)
    db: str | None = required("database: a SQLite file or a URL")
    project: str | None = required("project name (import its items first)")
    rate: float | None = option(None, "share of each labeler's items that are gold, 0-1 (e.g. 0.1)")
    threshold: float | None = option(None, "flag labelers whose gold accuracy or agreement is below this, 0-1 "
                                           "(default 0.7)")

    def check(self) -> None:
        normalize_url(self.db)
        if self.file is None and self.rate is None and self.threshold is None:
            raise UserError("give a gold FILE, --rate or --threshold")
        for name, value in (("--rate", self.rate), ("--threshold", self.threshold)):
            if value is not None and not 0 <= value <= 1:
                raise UserError(f"{name} must be from 0 to 1, got {value}")
