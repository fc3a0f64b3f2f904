"""`rlhf label serve|import|invite|revoke|guidelines|export|stats|convert`: a config dataclass and a function each."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from rlhfkit.config import option, required
from rlhfkit.data.formats import read_candidates
from rlhfkit.data.jsonl import check_writable, read_json, read_jsonl, write_jsonl
from rlhfkit.data.options import DataOptions
from rlhfkit.data.schemas import ranking_record
from rlhfkit.errors import UserError, at
from rlhfkit.label import assign, blind, interop
from rlhfkit.label.app import DEFAULT_PUBLIC_URL, create_app
from rlhfkit.label.db import MODES, ROLES, is_disk_full, normalize_url, open_engine, upgrade
from rlhfkit.label.export import FORMATS, records
from rlhfkit.label.stats import format_stats, project_stats
from rlhfkit.label.store import MAX_GUIDELINES, DiskFull, Store

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


def serve(cfg: ServeConfig) -> None:
    cfg.check()
    store = open_store(cfg.db, migrate=True, lease_seconds=cfg.lease_seconds)
    app = create_app(store, secure_cookie=cfg.secure_cookie,
                     public_url=cfg.public_url or f"http://{cfg.host}:{cfg.port}")
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
    if cfg.eval is not None:  # validate both files before touching the database
        items = blind.pair_items(blind.read_arm(cfg.eval, cfg), blind.read_arm(cfg.candidates, cfg), cfg.seed,
                                 cfg.eval, cfg.candidates)
    else:
        items = read_items(cfg.candidates, cfg.mode, cfg)  # validate the whole file before touching the database
    store = open_store(cfg.db, migrate=True)
    added, present = store.import_items(cfg.project, cfg.mode, cfg.overlap, items)
    p = store.project(cfg.project)
    print(f"project {p.name} ({p.mode}, overlap {p.overlap}): {added} items added, {present} already there")
    if cfg.eval is not None:
        print(f"blind evaluation: A = {cfg.eval}, B = {cfg.candidates}; which side A is on was drawn per item "
              f"with seed {cfg.seed} and is not shown to labelers ({sum(arm_first(i) for i in items)} of "
              f"{len(items)} items have A first)")
    return added, present


def arm_first(item: dict) -> bool:
    return blind.arm_of(item["completions"][0]["source"]) == "A"


# ---------------------------------------------------------------------------------------------- invite

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


def invite(cfg: InviteConfig) -> str:
    cfg.check()
    token = open_store(cfg.db, migrate=True).invite(cfg.project, cfg.name, cfg.role, replace=cfg.replace,
                                                    expires_in=parse_duration(cfg.expires, "expires"),
                                                    single_use=cfg.single_use)
    link = f"{cfg.public_url.rstrip('/')}/invite/{token}"
    print(link)
    return link


@dataclass
class RevokeConfig:
    db: str | None = required("database: a SQLite file or a URL")
    project: str | None = required("project name")
    name: str | None = required("the person whose link and sessions end (their answers stay)")

    def check(self) -> None:
        normalize_url(self.db)


def revoke(cfg: RevokeConfig) -> None:
    cfg.check()
    open_store(cfg.db, migrate=True).revoke(cfg.project, cfg.name)
    print(f"{cfg.name} can no longer log in to project {cfg.project}; their live item went back to the queue")


# ------------------------------------------------------------------------------------------ guidelines

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


def guidelines(cfg: GuidelinesConfig) -> str:
    cfg.check()
    if cfg.show:
        text = open_store(cfg.db).guidelines(cfg.project)
        print(text)
        return text
    text = ""
    if cfg.file is not None:
        try:
            text = Path(cfg.file).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(f"{cfg.file}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{cfg.file}: cannot read it as UTF-8 text ({exc.__class__.__name__})") from None
        if len(text) > MAX_GUIDELINES:
            raise UserError(f"{cfg.file}: longer than {MAX_GUIDELINES} characters")
    open_store(cfg.db, migrate=True).set_guidelines(cfg.project, text)
    state = f"set, {len(text)} characters" if text else "removed"
    print(f"project {cfg.project}: guidelines {state}; labelers see them before their next item")
    return text


# ---------------------------------------------------------------------------------------------- export

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


def check_tool(tool: str | None) -> None:
    if tool is not None and tool not in interop.TOOLS:
        raise UserError(f"--to {tool!r}: expected one of {', '.join(interop.TOOLS)}")


def export(cfg: ExportConfig) -> int:
    cfg.check()
    check_writable(cfg.out)
    rows = open_store(cfg.db).submissions(cfg.project)
    if cfg.to is not None:
        return write_foreign(records(rows, "rankings"), cfg.to, cfg.out)
    n = write_jsonl(cfg.out, records(rows, cfg.format))
    print(f"{n} {cfg.format} records from {len(rows)} submissions -> {cfg.out}")
    return n


def write_foreign(rankings: list[dict], tool: str, out: str) -> int:
    """Rankings as a Label Studio tasks file (with its labeling config beside it) or Argilla 2 records."""
    if tool == "label-studio":
        tasks = interop.to_label_studio(rankings)
        config = Path(out).with_suffix(".label-config.xml")
        k = max((len(r["completions"]) for r in rankings), default=2)
        interop.write_json(out, tasks)
        config.write_text(interop.label_studio_config(k), encoding="utf-8")
        print(f"{len(rankings)} rankings of {len(tasks)} items -> {out} (Label Studio tasks with annotations); "
              f"labeling config: {config}")
        return len(tasks)
    records_, tied = interop.to_argilla(rankings)
    interop.write_json(out, records_)
    print(f"{len(rankings)} rankings of {len(records_)} items -> {out} (Argilla 2 records, RankingQuestion "
          f"'{interop.ARGILLA_RANKING}')" + (f"; {tied} rankings had ties, which Argilla's ranking cannot hold: tied "
                                             "outputs are listed in index order" if tied else ""))
    return len(records_)


# --------------------------------------------------------------------------------------------- convert

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


def foreign_convert(cfg: ForeignConfig) -> int:
    cfg.check()
    check_writable(cfg.out)
    if cfg.to != "rankings":
        return write_foreign(read_jsonl(cfg.file, ranking_record), cfg.to, cfg.out)
    tool, rankings = interop.to_rankings(cfg.file, cfg.buckets or None, cfg.prompt_field)
    n = write_jsonl(cfg.out, rankings)
    print(f"{n} rankings of {len({r['id'] for r in rankings})} items from a {tool} export -> {cfg.out}")
    return n


# ----------------------------------------------------------------------------------------------- stats

@dataclass
class StatsConfig:
    db: str | None = required("database: a SQLite file or a URL")
    project: str | None = required("project name")
    json: bool = option(False, "print JSON instead of a table")
    report: str | None = option(None, "a JSON report with win rates by gold or RM (`rlhf eval winrate --json-out`, "
                                      "`rlhf demo`'s report.json): shown next to the people's blind A/B win rate")

    def check(self) -> None:
        normalize_url(self.db)


def read_report(path: str) -> dict:
    report = read_json(path, "a JSON report")
    found = blind.report_win_rates(report) if isinstance(report, dict) else {}
    if not found:
        raise UserError(f"{path}: no win rates in it (expected `rlhf eval winrate --json-out` or a demo report.json)")
    return found


def stats(cfg: StatsConfig) -> dict:
    cfg.check()
    reference = read_report(cfg.report) if cfg.report else None
    store = open_store(cfg.db)
    st = project_stats(store.progress(cfg.project), store.submissions(cfg.project), store.gold_answers(cfg.project))
    if reference is not None:
        st["reference_win_rates"] = reference
    print(json.dumps(st, indent=2) if cfg.json else format_stats(st))
    return st
