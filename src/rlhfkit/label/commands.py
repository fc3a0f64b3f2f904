"""`rlhf label serve|import|invite|export|stats`: one config dataclass and one function each."""

from __future__ import annotations

import json
from dataclasses import dataclass

import uvicorn

from rlhfkit.config import option, required
from rlhfkit.data.formats import read_candidates
from rlhfkit.data.jsonl import check_writable, write_jsonl
from rlhfkit.data.readers import DataOptions
from rlhfkit.errors import UserError, at
from rlhfkit.label import assign
from rlhfkit.label.app import create_app
from rlhfkit.label.db import MODES, ROLES, is_disk_full, normalize_url, open_engine, upgrade
from rlhfkit.label.export import FORMATS, records
from rlhfkit.label.stats import format_stats, project_stats
from rlhfkit.label.store import DiskFull, Store

MAX_OUTPUTS = 9  # keys 1-9 place outputs in tiers


def open_store(db: str, *, migrate: bool = False, **kwargs) -> Store:
    engine = open_engine(db)
    try:
        if migrate:
            upgrade(engine)
        return Store(engine, **kwargs)
    except Exception as exc:  # an unreachable server or a file that is not a database
        if isinstance(exc, UserError):
            raise
        if is_disk_full(exc):  # the migration's transaction was rolled back
            raise DiskFull(f"--db {db!r}: the disk is full, nothing was written; free some space and try again"
                           ) from None
        raise UserError(f"--db: cannot open the database: {str(exc).splitlines()[0]}") from None


# ----------------------------------------------------------------------------------------------- serve

@dataclass
class ServeConfig:
    db: str | None = required("database: a SQLite file (labels.db) or a URL (postgresql://user@host/db)")
    host: str = option("127.0.0.1", "address to listen on (loopback by default)")
    port: int = option(8000, "TCP port")
    lease_seconds: float = option(assign.DEFAULT_LEASE_SECONDS, "seconds a labeler holds an item before it returns")
    secure_cookie: bool = option(False, "mark the session cookie Secure (set this when served over HTTPS)")

    def check(self) -> None:
        normalize_url(self.db)
        if not 0 <= self.port <= 65535:  # 0: the system picks a free port
            raise UserError(f"config key 'port' must be from 0 to 65535, got {self.port}")
        if not self.lease_seconds > 0:
            raise UserError(f"config key 'lease_seconds' must be above 0, got {self.lease_seconds}")


def serve(cfg: ServeConfig) -> None:
    cfg.check()
    store = open_store(cfg.db, migrate=True, lease_seconds=cfg.lease_seconds)
    app = create_app(store, secure_cookie=cfg.secure_cookie)
    print(f"labeling app on http://{cfg.host}:{cfg.port}/ (API docs at /docs)", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")


# ---------------------------------------------------------------------------------------------- import

@dataclass
class ImportConfig(DataOptions):
    candidates: str | None = required("candidates JSONL (id, prompt, completions: [{text, source}]); "
                                      "for --mode demo a prompts file works too", positional=True)
    db: str | None = required("database: a SQLite file or a URL")
    project: str | None = required("project name (created on first import)")
    mode: str = option("rank", "rank | pairwise | demo")
    overlap: int | None = option(None, "distinct labelers per item (default 3 for a new project)")

    def check(self) -> None:
        normalize_url(self.db)
        if not self.project.strip():
            raise UserError("--project is empty")
        if self.mode not in MODES:
            raise UserError(f"--mode {self.mode!r}: expected one of {', '.join(MODES)}")
        if self.overlap is not None and self.overlap < 1:
            raise UserError(f"--overlap {self.overlap}: each item needs at least one labeler")


def read_items(path: str, mode: str, opts=None) -> list[dict]:
    """Candidates (or, for demo, prompts) checked for this mode: pairwise needs exactly 2 outputs,
    rank 2 to 9; ids are unique within the file. A prompt is kept as given (a Conversation stays a list)."""
    kind, found = read_candidates(path, opts, allow_prompts=mode == "demo")
    if kind == "prompts":
        return [{"id": r.get("id", str(n)), "prompt": r["prompt"]} for n, (_, r) in enumerate(found, start=1)]
    rows = [r for _, r in found]
    seen: dict[str, int | str] = {}
    for (n, r) in found:
        k = len(r["completions"])
        if mode == "pairwise" and k != 2:
            raise at(path, n, f"--mode pairwise needs exactly 2 completions per record, got {k}")
        if mode == "rank" and k > MAX_OUTPUTS:
            raise at(path, n, f"--mode rank shows at most {MAX_OUTPUTS} completions, got {k}")
        if r["id"] in seen:
            raise at(path, n, f"id {r['id']!r} appears twice (first on record {seen[r['id']]})")
        seen[r["id"]] = n
        if mode == "demo":
            r["completions"] = []  # a demonstration is written from the prompt alone
    return rows


def import_items(cfg: ImportConfig) -> tuple[int, int]:
    cfg.check()
    items = read_items(cfg.candidates, cfg.mode, cfg)  # validate the whole file before touching the database
    store = open_store(cfg.db, migrate=True)
    added, present = store.import_items(cfg.project, cfg.mode, cfg.overlap, items)
    p = store.project(cfg.project)
    print(f"project {p.name} ({p.mode}, overlap {p.overlap}): {added} items added, {present} already there")
    return added, present


# ---------------------------------------------------------------------------------------------- invite

@dataclass
class InviteConfig:
    db: str | None = required("database: a SQLite file or a URL")
    project: str | None = required("project name")
    name: str | None = required("the person's name (their `labeler` in exports)")
    role: str = option("labeler", "labeler | admin")
    base_url: str = option("http://127.0.0.1:8000", "where the app is reached, for the printed link")

    def check(self) -> None:
        normalize_url(self.db)
        if self.role not in ROLES:
            raise UserError(f"--role {self.role!r}: expected one of {', '.join(ROLES)}")
        if not self.name.strip():
            raise UserError("--name is empty")


def invite(cfg: InviteConfig) -> str:
    cfg.check()
    token = open_store(cfg.db, migrate=True).invite(cfg.project, cfg.name, cfg.role)
    link = f"{cfg.base_url.rstrip('/')}/invite/{token}"
    print(link)
    return link


# ---------------------------------------------------------------------------------------------- export

@dataclass
class ExportConfig:
    db: str | None = required("database: a SQLite file or a URL")
    project: str | None = required("project name")
    format: str = option("rankings", "rankings | pairs | demos | raw")
    out: str | None = required("output JSONL file")

    def check(self) -> None:
        normalize_url(self.db)
        if self.format not in FORMATS:
            raise UserError(f"--format {self.format!r}: expected one of {', '.join(FORMATS)}")


def export(cfg: ExportConfig) -> int:
    cfg.check()
    check_writable(cfg.out)
    rows = open_store(cfg.db).submissions(cfg.project)
    n = write_jsonl(cfg.out, records(rows, cfg.format))
    print(f"{n} {cfg.format} records from {len(rows)} submissions -> {cfg.out}")
    return n


# ----------------------------------------------------------------------------------------------- stats

@dataclass
class StatsConfig:
    db: str | None = required("database: a SQLite file or a URL")
    project: str | None = required("project name")
    json: bool = option(False, "print JSON instead of a table")

    def check(self) -> None:
        normalize_url(self.db)


def stats(cfg: StatsConfig) -> dict:
    cfg.check()
    store = open_store(cfg.db)
    st = project_stats(store.progress(cfg.project), store.submissions(cfg.project))
    print(json.dumps(st, indent=2) if cfg.json else format_stats(st))
    return st
