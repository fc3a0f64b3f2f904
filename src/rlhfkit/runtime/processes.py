"""Which process this is, for the helpers every process runs but only process 0 writes from (the run directory,
progress bars); the launching and the collectives are in `train/distributed.py`."""

from __future__ import annotations

import os


def is_main_process() -> bool:
    """Process 0 of a multi-process run, or the only process."""
    return int(os.environ.get("RANK", "0")) == 0
