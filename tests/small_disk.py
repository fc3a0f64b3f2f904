"""A small real file system for the full-disk tests: a tmpfs mounted on a test's directory (needs root).

Where mounting is not permitted (not root, no CAP_SYS_ADMIN in a container) the test is skipped, with the
reason `mount` gave.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

PAGE = 4096


@contextmanager
def small_disk(path: Path, size: int):
    """Mount a tmpfs of `size` bytes on `path` for the body; unmounted afterwards (whatever the body did)."""
    path.mkdir(parents=True, exist_ok=True)
    if shutil.which("mount") is None:
        pytest.skip("no mount command: cannot make a small file system for a full-disk test")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs for a full-disk test (needs root): {result.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def resize(path: Path, size: int) -> None:
    """Grow (or shrink) the tmpfs on `path`: what a user does by freeing space."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True, capture_output=True)


def fill(path: Path, leave: int) -> Path:
    """Write a file into the file system of `path` so that about `leave` bytes stay free."""
    filler = path / "filler.bin"
    free = shutil.disk_usage(path).free
    size = max(0, (free - leave) // PAGE * PAGE)
    with open(filler, "wb") as handle:
        handle.write(b"\0" * size)
        handle.flush()
        os.fsync(handle.fileno())
    return filler
