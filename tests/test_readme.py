"""The README is a front door (issue 32): at most 300 lines, opening with the two commands, every docs page linked
from it, every relative link in it, in docs/ and in bench/RESULTS.md pointing at a file that exists, and every
command it shows working as written.

Commands are the lines of the fenced code blocks that start with `rlhf ` or `make ` (or `$ rlhf ` in a transcript),
with `\\` continuations joined and a trailing `# comment` dropped. The short ones (`--help`, the `data` and `label`
administration commands in SHORT) run, each code block in its own scratch directory holding the small input files
of FIXTURES, in the order the block shows them; a transcript line after a command that ran must be in what the
command printed. The long ones (training, serving) are checked for naming a real `make` target or `rlhf` command
whose `--help` lists every flag shown; the `rlhf` lines of docs/*.md are checked the same way.

Every `rlhf` invocation goes through the console script's entry point named in pyproject.toml, in one Python
process (tests/readme_driver.py) started with this tree's src/ on PYTHONPATH, so the test holds whether the CLI
imports its commands eagerly or lazily.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.arch_zoo import MATRIX

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MARKDOWN = [README, *sorted(DOCS.glob("*.md")), ROOT / "bench" / "RESULTS.md"]
MAX_README_LINES = 300

# Subcommands quick enough to run in the test; every other command is checked for its name and flags only.
SHORT = {"data convert", "data pairs", "label import", "label guidelines", "label invite", "label revoke",
         "label stats", "label export", "label review", "label lock", "label convert"}

_CANDIDATES = "".join(json.dumps({
    "id": f"p{i}", "prompt": [{"role": "user", "content": f"list {i} colours"}],
    "completions": [{"text": f"red blue {j}", "source": f"sft@T={t}", "finished": True}
                    for j, t in enumerate(("0.7", "1.0", "0.7", "1.0"))]}) + "\n" for i in range(8))


def _write_prefs(path: Path) -> None:
    """TRL's conversational preference format, as the README's walkthrough describes prefs.parquet."""
    rows = [{"prompt": [{"role": "user", "content": f"name {i} fruits"}],
             "chosen": [{"role": "assistant", "content": "apple pear"}],
             "rejected": [{"role": "assistant", "content": f"well , um , {i} ..."}]} for i in range(6)]
    pq.write_table(pa.Table.from_pylist(rows), path)


# The input files a short command may name: name -> writer into a scratch directory.
FIXTURES = {
    "cand.jsonl": lambda p: p.write_text(_CANDIDATES),
    "candidates.jsonl": lambda p: p.write_text(_CANDIDATES),
    "prefs.parquet": _write_prefs,
    "guidelines.md": lambda p: p.write_text("# Guidelines\n\nRank correct, short answers first.\n"),
}


@dataclass
class Shown:
    """One command of a code block, with the transcript lines printed after it (if any)."""

    source: str          # file:line, for messages
    text: str            # the command as written, continuations joined, comment dropped
    block: int           # index of its code block in the file
    transcript: bool     # written as `$ rlhf ...`
    printed: list[str] = field(default_factory=list)


def code_blocks(text: str) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of each fenced block that is not another language's source."""
    blocks, current, start, lang = [], None, 0, ""
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            if current is None:
                current, start, lang = [], number + 1, line[3:].strip()
            else:
                if lang in ("", "bash", "sh", "console", "shell"):
                    blocks.append((start, current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def _strip_comment(line: str) -> str:
    return re.split(r"\s+#\s", line, maxsplit=1)[0].rstrip()


def shown_commands(path: Path) -> list[Shown]:
    found: list[Shown] = []
    for index, (start, lines) in enumerate(code_blocks(path.read_text())):
        i = 0
        while i < len(lines):
            line, number = lines[i], start + i
            transcript = line.startswith("$ ")
            body = line[2:] if transcript else line
            if not re.match(r"(rlhf|make) [a-z-]", body) or re.match(r"rlhf [a-z-]+:", body):
                if found and found[-1].transcript and found[-1].block == index and line.strip():
                    found[-1].printed.append(line.strip())
                i += 1
                continue
            text = body
            while text.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                text = text.rstrip()[:-1] + " " + lines[i].strip()
            for part in _strip_comment(text).split(" ; "):
                found.append(Shown(f"{path.relative_to(ROOT)}:{number}", part.strip(), index, transcript))
            i += 1
    return found


def _entry_point() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'^rlhf\s*=\s*"([\w.]+:\w+)"', text, re.M)
    assert match, "pyproject.toml names no `rlhf` console script"
    return match.group(1)


def run_rlhf(jobs: list[dict], tmp_path: Path) -> list[dict]:
    """Runs each job's argv through the `rlhf` entry point in one process; returns rc, stdout and stderr per job."""
    jobs_file, results_file = tmp_path / "jobs.json", tmp_path / "results.json"
    jobs_file.write_text(json.dumps({"entry": _entry_point(), "jobs": jobs}))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("readme_driver.py")), str(jobs_file),
                           str(results_file)], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(results_file.read_text())


def command_names(help_text: str) -> set[str]:
    """The command names `rlhf --help` lists: the first column of its indented rows."""
    names = set()
    for line in help_text.splitlines():
        match = re.match(r"  ([a-z][a-z-]*(?: [a-z][a-z-]*)?)(?:\s{2,}|$)", line)
        if match:
            names.add(match.group(1))
    return names


def accepted_flags(help_text: str) -> set[str]:
    """The long options a command's --help lists (its option rows, not the prose of the help strings)."""
    flags = set()
    for line in help_text.splitlines():
        if line.lstrip().startswith("-"):
            head = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
            flags.update(re.findall(r"--[a-z0-9][a-z0-9-]*", head))
    return flags


def split_command(words: list[str], names: set[str]) -> str | None:
    for n in (2, 1):
        if len(words) >= n and " ".join(words[:n]) in names:
            return " ".join(words[:n])
    return None


def flags_of(text: str) -> set[str]:
    """Every --flag in a command as written, also inside `[...]` optional groups and `a|b` alternatives."""
    return set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", text))


def group_words() -> set[str]:
    """First words of the two-word commands shown (`label` of `rlhf label serve`): the command groups."""
    words = set()
    for path in [README, *sorted(DOCS.glob("*.md"))]:
        for command in shown_commands(path):
            parts = command.text.split()
            if parts[0] == "rlhf" and len(parts) > 2 and re.fullmatch(r"[a-z][a-z-]*", parts[2]):
                words.add(parts[1])
    return words


def short_jobs(names: set[str], scratch_root: Path) -> tuple[list[Shown], list[dict]]:
    """The README's short commands, as jobs: each code block's in its own scratch directory with FIXTURES."""
    ran, jobs = [], []
    for command in shown_commands(README):
        if not command.text.startswith("rlhf "):
            continue
        words = shlex.split(command.text)[1:]
        if not (words[-1:] == ["--help"] or split_command(words, names) in SHORT):
            continue
        scratch = scratch_root / f"block-{command.block}"
        if not scratch.exists():
            scratch.mkdir(parents=True)
            for fixture, write in FIXTURES.items():
                write(scratch / fixture)
        ran.append(command)
        jobs.append({"argv": words, "cwd": str(scratch)})
    return ran, jobs


@pytest.fixture(scope="module")
def cli(tmp_path_factory) -> dict:
    """`rlhf --help`, every command's `--help`, and the README's short commands run, all from the entry point."""
    tmp = tmp_path_factory.mktemp("readme")
    groups = sorted(group_words())
    top, *group_helps = run_rlhf([{"argv": ["--help"]}] + [{"argv": [g, "--help"]} for g in groups], tmp)
    assert top["rc"] == 0, top["stderr"]
    names = command_names(top["stdout"])
    for group, result in zip(groups, group_helps, strict=True):  # `rlhf label --help` may list its subcommands
        if result["rc"] == 0:
            names |= {name if name.startswith(f"{group} ") else f"{group} {name}"
                      for name in command_names(result["stdout"]) if " " not in name or name.startswith(group)}
    assert {"sft", "rm", "ppo", "label serve"} <= names, top["stdout"]
    ran, jobs = short_jobs(names, tmp / "scratch")
    results = run_rlhf([{"argv": [*name.split(), "--help"]} for name in sorted(names)] + jobs, tmp)
    helps, short = results[:len(names)], results[len(names):]
    return {"names": names, "help": dict(zip(sorted(names), helps, strict=True)),
            "short": list(zip(ran, short, strict=True))}


def test_readme_is_at_most_300_lines_and_opens_with_the_two_commands():
    text = README.read_text()
    assert len(text.splitlines()) <= MAX_README_LINES
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines[0] == "# rlhfkit" and lines[1] == "```", "the two commands come first, right under the title"
    first = code_blocks(text)[0][1]
    assert [line.split("#")[0].strip() for line in first] == ["make demo", "make test"]


def test_the_readmes_architecture_list_is_the_one_the_matrix_test_runs():
    text = README.read_text(encoding="utf-8")
    block = text.split("<!-- architectures:", 1)[1].split("-->", 1)[1].split("<!-- /architectures -->", 1)[0]
    listed = [name.strip() for name in block.replace("\n", " ").split(",") if name.strip()]
    assert listed == list(MATRIX)
    assert f"runs on {len(MATRIX)} architectures" in text


def test_every_docs_page_and_results_are_linked_from_the_readme():
    text = README.read_text()
    for page in [*sorted(DOCS.glob("*.md")), ROOT / "bench" / "RESULTS.md"]:
        assert f"]({page.relative_to(ROOT)}" in text, f"README.md does not link {page.relative_to(ROOT)}"


def _relative_links(path: Path) -> list[str]:
    text = path.read_text()
    targets = re.findall(r"\]\(([^)\s]+)\)", text) + re.findall(r'src="([^"]+)"', text)
    return [t for t in targets if not re.match(r"[a-z]+:", t) and not t.startswith("#")]


def anchors(path: Path) -> set[str]:
    """GitHub's anchors for a page's headings: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", text, re.M)}


@pytest.mark.parametrize("path", MARKDOWN, ids=[str(p.relative_to(ROOT)) for p in MARKDOWN])
def test_every_relative_link_points_at_an_existing_file_and_heading(path):
    text = path.read_text()
    links = _relative_links(path) + re.findall(r"\]\((#[^)\s]+)\)", text)
    missing = [t for t in links if not (path.parent / t.split("#")[0]).exists()]
    assert not missing, f"{path.relative_to(ROOT)} links to missing files: {missing}"
    for link in links:
        target, _, anchor = link.partition("#")
        target_path = path if not target else path.parent / target
        if anchor and target_path.suffix == ".md":
            assert anchor in anchors(target_path), f"{path.relative_to(ROOT)}: no heading for {link}"


def test_every_image_in_docs_is_shown_by_a_page():
    linked = {(path.parent / t).resolve() for path in MARKDOWN for t in _relative_links(path)}
    unshown = [p.name for p in sorted(DOCS.glob("*.png")) if p.resolve() not in linked]
    assert not unshown, f"images in docs/ that no page shows: {unshown}"


def test_make_targets_in_the_readme_exist():
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), re.M))
    shown = [c for c in shown_commands(README) if c.text.startswith("make ")]
    assert shown, "the README shows no make command"
    for command in shown:
        for target in command.text.split()[1:]:
            assert target in targets, f"{command.source}: `{command.text}`: no make target {target!r}"


@pytest.mark.parametrize("path", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_rlhf_command_shown_names_a_command_and_flags_it_accepts(path, cli):
    shown = [c for c in shown_commands(path) if c.text.startswith("rlhf ")]
    problems = []
    for command in shown:
        name = split_command(command.text.split()[1:], cli["names"])
        if name is None:
            if not re.fullmatch(r"rlhf (--help|-h)", command.text):
                problems.append(f"{command.source}: `{command.text}`: no such command")
            continue
        unknown = flags_of(command.text) - accepted_flags(cli["help"][name]["stdout"]) - {"--help"}
        if unknown:
            problems.append(f"{command.source}: `rlhf {name}` does not accept {sorted(unknown)}")
    assert not problems, "\n".join(problems)


def test_the_short_commands_of_the_readme_run_as_written(cli):
    assert any(c.text.startswith(("rlhf data", "rlhf label")) for c, _ in cli["short"]), "no short command ran"
    for command, result in cli["short"]:
        said = result["stdout"] + result["stderr"]
        assert result["rc"] == 0, f"{command.source}: `{command.text}` exited {result['rc']}: {said[-2000:]}"
        for line in command.printed:
            assert line in said, f"{command.source}: `{command.text}` printed {said!r}, not {line!r}"
