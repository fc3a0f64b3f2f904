"""`rlhf label serve|import|invite|revoke|guidelines|export|stats|convert`: a config dataclass and a function each."""

from __future__ import annotations

import json
from pathlib import Path

import uvicorn

from rlhfkit.data.formats import read_candidates
from rlhfkit.data.jsonl import check_writable, read_json, read_jsonl, write_jsonl
from rlhfkit.data.schemas import ranking_record
from rlhfkit.errors import UserError, at
from rlhfkit.label import blind, interop
from rlhfkit.label.app import create_app
from rlhfkit.label.configs import (
    ExportConfig,
    ForeignConfig,
    GuidelinesConfig,
    ImportConfig,
    InviteConfig,
    RevokeConfig,
    ServeConfig,
    StatsConfig,
    parse_duration,
)
from rlhfkit.label.db import is_disk_full, open_engine, upgrade
from rlhfkit.label.export import records
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

def serve(cfg: ServeConfig) -> None:
    cfg.check()
    store = open_store(cfg.db, migrate=True, lease_seconds=cfg.lease_seconds)
    app = create_app(store, secure_cookie=cfg.secure_cookie,
                     public_url=cfg.public_url or f"http://{cfg.host}:{cfg.port}")
    print(f"labeling app on http://{cfg.host}:{cfg.port}/ (API docs at /docs)", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")


# ---------------------------------------------------------------------------------------------- import

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

def invite(cfg: InviteConfig) -> str:
    cfg.check()
    token = open_store(cfg.db, migrate=True).invite(cfg.project, cfg.name, cfg.role, replace=cfg.replace,
                                                    expires_in=parse_duration(cfg.expires, "expires"),
                                                    single_use=cfg.single_use)
    link = f"{cfg.public_url.rstrip('/')}/invite/{token}"
    print(link)
    return link


def revoke(cfg: RevokeConfig) -> None:
    cfg.check()
    open_store(cfg.db, migrate=True).revoke(cfg.project, cfg.name)
    print(f"{cfg.name} can no longer log in to project {cfg.project}; their live item went back to the queue")


# ------------------------------------------------------------------------------------------ guidelines

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
        config.write_text(interop.label_studio_config(k, any(r.get("turn_flags") for r in rankings)),
                          encoding="utf-8")
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
