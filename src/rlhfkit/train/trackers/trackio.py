"""`--report-to trackio`: a trackio run, stored locally (a SQLite file per project in TRACKIO_DIR, by default
~/.cache/huggingface/trackio; `trackio show` opens the dashboard) unless trackio's own TRACKIO_SPACE_ID or
TRACKIO_SERVER_URL send it elsewhere. TRACKIO_PROJECT names the project (default `rlhfkit`); the run is named by
OUT, and `--resume` continues the newest trackio run of that name. trackio's messages go to stderr.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import trackio


class Trackio:
    def __init__(self, run):
        self.run = run

    def log(self, step: int, metrics: dict[str, float]) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        with contextlib.redirect_stdout(sys.stderr):
            trackio.finish()  # the current run (this one), which trackio then forgets: not finished again at exit


def open_tracker(path: Path, name: str, config: dict, resume: bool) -> Trackio:
    with contextlib.redirect_stdout(sys.stderr):
        run = trackio.init(project=os.environ.get("TRACKIO_PROJECT", "rlhfkit"), name=name, config=config,
                           resume="allow" if resume else "never", embed=False)
    return Trackio(run)
