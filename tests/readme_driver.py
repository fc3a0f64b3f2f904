"""Runs `rlhf` command lines through the console script's entry point, all in this one process, for
tests/test_readme.py (one start-up instead of one per command).

    python tests/readme_driver.py JOBS.json RESULTS.json

JOBS.json: {"entry": "module:function", "jobs": [{"argv": [...], "cwd": DIR?}, ...]}; each job runs as the console
script runs it (`sys.argv = ["rlhf", *argv]`, `function()`), in its `cwd`. RESULTS.json: one {"rc", "stdout",
"stderr"} per job.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import sys


def main() -> int:
    spec = json.loads(open(sys.argv[1]).read())
    results_path = os.path.abspath(sys.argv[2])
    module, function = spec["entry"].split(":")
    entry = getattr(importlib.import_module(module), function)
    home, results = os.getcwd(), []
    for job in spec["jobs"]:
        os.chdir(job.get("cwd", home))
        sys.argv = ["rlhf", *job["argv"]]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = entry()
            except SystemExit as exc:
                rc = exc.code if isinstance(exc.code, int) or exc.code is None else 1
        results.append({"rc": rc or 0, "stdout": out.getvalue(), "stderr": err.getvalue()})
    os.chdir(home)
    with open(results_path, "w") as f:
        json.dump(results, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
