"""Round r's rankings for `rlhf loop`: where they come from, and the checks an export passes before the loop
trains on it.

Three sources (`--labels`):
- simulated: the toy world's labelers rank the candidates (the default);
- files: someone imports the round's candidates into the labeling app and puts its rankings export at
  LABELS_DIR/round-r.jsonl; until the file is there the loop prints the commands and exits with code 3;
- app: the loop adds each round's items to one project of the app's database, so the same people and the same
  invite links serve every round; it prints the runbook once and waits, polling the database, until enough
  items have their rankings (`--min-coverage` of the items, each ranked by `--per-item` people), then exports them.

Every export is checked before it is used (`check_export`): each record must be a ranking of one of this round's
items with this round's completions (round 1's export under round 2's name is refused), and below
--min-coverage the loop refuses unless --allow-partial. The export's SHA-256 goes into the round's state.json,
so an export that changes after its round trained on it is reported, with `--redo-round N` to retrain from it.
"""

from __future__ import annotations

import hashlib
import math
import shlex
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from rlhfkit.data.jsonl import iter_jsonl, json_type, jsonl_line, write_jsonl
from rlhfkit.data.schemas import ranking_record
from rlhfkit.errors import Waiting, at
from rlhfkit.label.commands import open_store, read_items
from rlhfkit.label.configs import ServeConfig
from rlhfkit.label.export import ranking_records

INVITE_SECONDS = 14 * 24 * 3600  # a loop's rounds take days; the links outlive several (`rlhf label invite` renews)
ADMIN = "admin"                  # the person the loop invites to watch progress and agreement in the app


@dataclass
class Coverage:
    """How much of a round is labeled: items ranked by `overlap` distinct people are complete."""
    items: int
    complete: int
    rankings: int
    overlap: int

    def needed(self, min_coverage: float) -> int:
        return math.ceil(min_coverage * self.items - 1e-9)

    def describe(self) -> str:
        share = self.complete / self.items if self.items else 0.0
        return (f"{self.complete} of {self.items} items have {self.overlap} rankings ({share:.0%}), "
                f"{self.rankings} rankings in all")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def jsonl_bytes(records: list[dict]) -> bytes:
    """The bytes `write_jsonl` writes for these records (what an export's hash is taken of)."""
    return "".join(map(jsonl_line, records)).encode("utf-8")


def export_format(obj: dict) -> str | None:
    """The other formats `rlhf label export` writes, told apart by their fields (None: not one of them)."""
    if "chosen" in obj and "rejected" in obj:
        return "pairs"
    if "tiers" in obj and "kind" in obj:
        return "raw"
    if "completion" in obj and "completions" not in obj:
        return "demos"
    return None


def check_export(path: Path, candidates: list[dict], r: int, *, overlap: int, min_coverage: float,
                 allow_partial: bool) -> tuple[list[dict], Coverage, str]:
    """(rankings, coverage, SHA-256 of the file) of round r's export, checked against the round's candidates."""
    path = Path(path)
    items = {c["id"]: [o["text"] for o in c["completions"]] for c in candidates}
    rankings, people = [], defaultdict(set)
    for lineno, obj in iter_jsonl(path):
        def error(message, _n=lineno):
            return at(path, _n, message)
        if not isinstance(obj, dict):
            raise error(f"expected a JSON object, got {json_type(obj)}")
        if (kind := export_format(obj)) is not None:
            raise error(f"this is a {kind} export; the loop needs the rankings export "
                        "(`rlhf label export --format rankings`)")
        record = ranking_record(obj, error)
        if record["id"] not in items:
            raise error(f"item {record['id']!r} is not one of round {r}'s {len(items)} items (its ids start with "
                        f"'r{r}-'): is this another round's export?")
        if record["completions"] != items[record["id"]]:
            raise error(f"item {record['id']!r}: the completions differ from round {r}'s candidates.jsonl "
                        "(an export of other candidates?)")
        rankings.append(record)
        people[record["id"]].add(record["labeler"])
    cov = Coverage(len(items), sum(len(people[i]) >= overlap for i in items), len(rankings), overlap)
    if not rankings:
        raise at(path, None, f"no rankings (round {r} has {len(items)} items to label)")
    if cov.complete < cov.needed(min_coverage) and not allow_partial:
        raise at(path, None, f"{cov.describe()}; the loop needs {min_coverage:.0%} of the items complete "
                             "(--min-coverage): label the rest, or pass --allow-partial to train on these")
    return rankings, cov, sha256(path.read_bytes())


def file_digest(path: Path) -> str | None:
    return sha256(path.read_bytes()) if path.is_file() else None


# ---------------------------------------------------------------------------------------- the app

class LabelingApp:
    """The loop's project in the labeling app's database: one project for every round, so the people and their
    links stay; round r's items are those whose ids start with `r{r}-` (the loop's sampling names them so)."""

    def __init__(self, db: str, project: str):
        self.db, self.project = db, project
        self.store = open_store(db, migrate=True)

    def exists(self) -> bool:
        return any(p.name == self.project for p in self.store.projects())

    def people(self) -> set[str]:
        return {p["name"] for p in self.store.progress(self.project)["people"]}

    def add_round(self, candidates: Path, overlap: int) -> int:
        """Add the round's items (again: nothing happens); how many were new."""
        added, _ = self.store.import_items(self.project, "rank", overlap, read_items(str(candidates), "rank"))
        return added

    def invite(self, name: str, role: str = "labeler") -> str:
        return self.store.invite(self.project, name, role, expires_in=INVITE_SECONDS)

    def coverage(self, ids: set[str], overlap: int) -> Coverage:
        counts = [(answers, people) for item, answers, people in self.store.item_answer_counts(self.project)
                  if item in ids]
        return Coverage(len(ids), sum(people >= overlap for _, people in counts), sum(a for a, _ in counts), overlap)

    def export(self, ids: set[str], out: Path) -> int:
        """The round's rankings export, as `rlhf label export --format rankings` writes it, into `out`."""
        return write_jsonl(out, self.records(ids))

    def records(self, ids: set[str]) -> list[dict]:
        return ranking_records([row for row in self.store.submissions(self.project) if row["id"] in ids])


def wait_for(app: LabelingApp, r: int, ids: set[str], overlap: int, need: int, *, wait: bool, poll_seconds: float,
             rerun: str) -> Coverage:
    """Poll the database until `need` of the round's items are complete, with a progress bar; without `wait`,
    `Waiting` (exit code 3) when they are not."""
    cov = app.coverage(ids, overlap)
    if cov.complete >= need:
        return cov
    if not wait:
        raise Waiting(f"round {r}: {cov.describe()}; the loop needs {need}. Run `{rerun}` again once they are "
                      "labeled (it goes on from here)")
    bar = tqdm(total=need, initial=cov.complete, desc=f"round {r}: items labeled", unit="item", dynamic_ncols=True)
    while cov.complete < need:
        time.sleep(poll_seconds)
        cov = app.coverage(ids, overlap)
        if min(cov.complete, need) != bar.n:  # redrawn when it moves (a log gets one line per change)
            bar.n = min(cov.complete, need)
            bar.refresh()
    bar.close()
    return cov


# ------------------------------------------------------------------------------------------ runbooks

def app_runbook(app: LabelingApp, *, items: int, overlap: int, need: int, links: dict[str, str], public_url: str,
                rerun: str) -> str:
    """What the people running the loop and the labelers do, printed when the loop creates its project."""
    db, project = shlex.quote(app.db), shlex.quote(app.project)
    invite = f"rlhf label invite --db {db} --project {project} --public-url {public_url} --name NAME"
    lines = [f"Labeling app: project {app.project!r} in {app.db}; round 1 has {items} items, each to be ranked by "
             f"{overlap} different people (--per-item).",
             "  1. Serve the app (another terminal; keep it running for every round):",
             f"       rlhf label serve --db {db} --host 0.0.0.0 --port {_port(public_url)} --public-url {public_url}",
             "  2. Send each person their link. One link per person serves every round of the loop (14 days;",
             "     renew one with --replace):"]
    lines += [f"       {name}: {link}" for name, link in links.items() if name != ADMIN]
    if len(links) <= 1:
        lines.append(f"       (no --invite given) {invite}")
    else:
        lines.append(f"     more people: {invite}")
    if ADMIN in links:
        lines.append(f"     admin (progress, agreement, guidelines, exports in the browser): {links[ADMIN]}")
    lines += [f"  3. Labelers open the link (and first read the guidelines, if you set some: rlhf label guidelines "
              f"FILE.md --db {db} --project {project}),",
              "     and for each item put the outputs in tiers",
              "     (1 = best; outputs of equal quality share a tier) and give each a quality score of 1-7.",
              "     They can stop at any time; an item they skip waits for someone else. Each round's items",
              "     appear in the same queue on the same page as the loop adds them.",
              f"  4. The loop waits for {need} of {items} items to be complete (--min-coverage), then trains.",
              f"     Progress: rlhf label stats --db {db} --project {project}",
              f"     Stop and come back later: Ctrl-C (or --no-wait, exit code 3), then `{rerun}`."]
    return "\n".join(lines)


def files_runbook(candidates: Path, export: Path, r: int, *, overlap: int, rerun: str) -> str:
    db, project, c, e = "labels.db", f"round-{r}", shlex.quote(str(candidates)), shlex.quote(str(export))
    return "\n".join([
        f"round {r}: waiting for labels. Put the candidates into the labeling app and export the rankings:",
        f"  rlhf label import --db {db} --project {project} --mode rank --overlap {overlap} {c}",
        f"  rlhf label invite --db {db} --project {project} --name NAME      (one link per labeler, for "
        "this round's project)",
        f"  rlhf label serve --db {db}                                        (labelers open their links)",
        f"  rlhf label export --db {db} --project {project} --format rankings --out {e}",
        f"then run `{rerun}` again (or use --labels app: one project and one link per person for every round)."])


def _port(url: str) -> int:
    """The port `rlhf label serve` listens on for this public URL: the URL's own, else serve's default (the URL
    is then a proxy's, which forwards to it)."""
    try:
        return urlsplit(url).port or ServeConfig.port
    except ValueError:  # no valid port in the URL
        return ServeConfig.port


