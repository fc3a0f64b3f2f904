"""Writing files so that a full disk is a fault, not a traceback (docs/design.md §8).

Every output of the toolkit (checkpoints, final models, config.toml, metrics.jsonl, JSONL files) is written
through this module:

  - into a temporary file or directory beside its target, flushed and fsynced, then renamed into place (one
    atomic rename on POSIX): a crash or a full disk leaves the previous file or the new one, never half of one;
  - where the size is known beforehand (the bytes of the tensors to save), the free space is checked first
    with `shutil.disk_usage`, with a margin (`needed_bytes`), so nothing is written that cannot fit;
  - a write that still fails for lack of space (ENOSPC, EDQUOT, EFBIG; torch's and safetensors' errors that
    wrap them) removes its temporary files and becomes one `UserError` line naming the path, the space
    needed, the space free and what was kept:
      `OUT/resume/step-40: no space left on the device (needs ~2.1 MB, 0.4 MB free); the previous checkpoint
      OUT/resume/step-20 is intact: free space and rerun with --resume`
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from rlhfkit.errors import UserError

# What the operating system says when a write does not fit (write(2): ENOSPC, EDQUOT, EFBIG).
FULL = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "disk quota exceeded",
        errno.EFBIG: "file too large for the file system (or the limit on file size)"}
# The same, as the Rust (safetensors) and C++ (torch) writers put it into their messages.
FULL_WORDS = ("no space left on device", "os error 28", "disk quota exceeded", "os error 122", "file too large")

# Free space asked for beyond the tensors' bytes: torch.save's zip records and 64-byte alignment, a safetensors
# header, a model's config and tokenizer files. Generous on purpose: refusing a save that would just have fit
# costs a rerun; one that fails halfway costs the same and more I/O.
MARGIN_FRACTION = 0.10
MARGIN_PER_TENSOR = 1024
MARGIN_BYTES = 64 * 1024


# ------------------------------------------------------------------------------------------------ sizes

def tensor_bytes(obj) -> tuple[int, int]:
    """(bytes, count) of the tensors and arrays in a nested state (dicts, lists, tuples, modules): what
    torch.save or save_pretrained will write, each storage once (tied weights, views share one).

    Duck-typed, so that this module (imported by every writer, the labeling app's too) does not import torch."""
    seen, total, count = set(), 0, 0
    stack = [obj]
    while stack:
        item = stack.pop()
        if _is_module(item):
            stack.extend(item.state_dict().values())
        elif hasattr(item, "untyped_storage"):  # a torch.Tensor: torch.save writes its whole storage
            if item.is_meta or str(item.layout) != "torch.strided":  # no bytes, or not saved as one storage
                continue
            storage = item.untyped_storage()
            key = (storage.data_ptr(), str(item.device))
            if key not in seen:
                seen.add(key)
                total, count = total + storage.nbytes(), count + 1
        elif hasattr(item, "nbytes") and hasattr(item, "dtype"):  # a NumPy array (the RNG states)
            total, count = total + int(item.nbytes), count + 1
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
        elif isinstance(item, (bytes, str)):
            total += len(item)
    return total, count


def _is_module(obj) -> bool:
    """A torch.nn.Module (its state_dict holds its tensors)."""
    return hasattr(obj, "state_dict") and hasattr(obj, "named_parameters")


def needed_bytes(*objects) -> int:
    """The free space to ask for before saving `objects`: their tensors' bytes plus the margin above."""
    size, count = tensor_bytes(list(objects))
    return int(size * (1 + MARGIN_FRACTION)) + count * MARGIN_PER_TENSOR + MARGIN_BYTES


def free_bytes(path: str | os.PathLike) -> int:
    """Free space (for this user) on the file system that holds `path`, or would hold it once created."""
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 50_000 else f"{size / 1e3:.1f} kB"


# ------------------------------------------------------------------------------------- the one line

def full_disk_reason(exc: BaseException) -> str | None:
    """Why a write failed, when it failed for lack of space ('no space left on the device', ...); None otherwise.

    torch.save wraps the OSError of the file it writes in a RuntimeError ("[enforce fail at
    inline_container.cc:672] . unexpected pos ..."), with the OSError as its context; safetensors raises a
    SafetensorError whose message holds the OS error: the whole chain is read."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in FULL:
            return FULL[exc.errno]
        if any(words in str(exc).lower() for words in FULL_WORDS):
            return FULL[errno.ENOSPC] if "quota" not in str(exc).lower() else FULL[errno.EDQUOT]
        exc = exc.__cause__ or exc.__context__
    return None


def no_space(path, reason: str, needed: str, kept: str) -> UserError:
    """`path: no space left on the device (needs ~X, Y free); <what was kept>` — one line."""
    free = mb(free_bytes(path))
    return UserError(f"{path}: {reason} ({needed}, {free} free)" + (f"; {kept}" if kept else ""))


def check_space(path, needed: int, kept: str = "") -> None:
    """Refuse, before writing anything, a write of `needed` bytes (margin included) that cannot fit."""
    if needed > free_bytes(path):
        raise no_space(path, FULL[errno.ENOSPC], f"needs ~{mb(needed)}", kept)


@contextmanager
def full_disk_is_a_fault(path, needed: int | None = None, kept: str = "", cleanup: Callable[[], None] = None):
    """Run a write; whatever stops it, `cleanup` runs (temporary files removed); a failure for lack of space
    becomes one UserError line (see `no_space`)."""
    try:
        yield
    except BaseException as exc:
        if cleanup is not None:
            cleanup()
        reason = full_disk_reason(exc)
        if reason is None:
            raise
        size = f"needs ~{mb(needed)}" if needed else "the write did not fit"
        raise no_space(path, reason, size, kept) from None


# ---------------------------------------------------------------------------------------- atomic writes

@contextmanager
def atomic_dir(final: str | os.PathLike, needed: int = 0, kept: str = "") -> Iterator[Path]:
    """Yield a temporary directory `.tmp-NAME` beside `final`; once the body has written into it, its files are
    fsynced and it is renamed to `final` (replacing a directory of that name). On any failure it is removed."""
    final = Path(final)
    tmp = final.parent / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed while writing it
    if needed:
        check_space(final, needed, kept)
    with full_disk_is_a_fault(final, needed, kept, cleanup=lambda: shutil.rmtree(tmp, ignore_errors=True)):
        tmp.mkdir(parents=True)
        yield tmp
        for item in tmp.rglob("*"):
            if item.is_file():
                fsync_file(item)
        shutil.rmtree(final, ignore_errors=True)  # e.g. a checkpoint of the same step from a run that died later
        os.replace(tmp, final)
        fsync_dir(final.parent)


def replace_files(out: str | os.PathLike, write: Callable[[Path], None], needed: int = 0, kept: str = "") -> None:
    """`write(tmp)` the files of a directory into `out/.saving`, then move each into `out` by an atomic rename.

    For a directory that holds more than these files (the run directory holds the final model beside
    config.toml and metrics.jsonl): a full disk or a crash while writing leaves every file of `out` as it was."""
    out = Path(out)
    created = not out.exists()
    kept = kept or ("nothing was written" if created else f"the files in {out} are unchanged")
    if needed:
        check_space(out, needed, kept)
    tmp = out / ".saving"
    shutil.rmtree(tmp, ignore_errors=True)

    def cleanup() -> None:
        shutil.rmtree(tmp, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)  # only the directory this call made, still empty

    with full_disk_is_a_fault(out, needed, kept, cleanup=cleanup):
        tmp.mkdir(parents=True)
        write(tmp)
        for item in tmp.rglob("*"):
            if item.is_file():
                fsync_file(item)
    for item in sorted(tmp.iterdir()):  # renames within one file system need no space
        target = out / item.name
        if target.is_dir() and not item.is_dir():
            shutil.rmtree(target)
        os.replace(item, target)
    tmp.rmdir()
    fsync_dir(out)


def save_pretrained_atomic(out: str | os.PathLike, *objects) -> None:
    """`save_pretrained` each object (a model, a tokenizer) into `out`, as `replace_files` does: the free space
    for the models' tensors is checked first, and a full disk leaves the previous files of `out` intact."""
    def write(tmp: Path) -> None:
        for obj in objects:
            obj.save_pretrained(tmp)
    replace_files(out, write, needed_bytes(*[o for o in objects if _is_module(o)]))


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w", needed: int = 0, kept: str = ""):
    """Yield a handle on a temporary file beside `path`, renamed to `path` once written and fsynced; removed
    on any failure (the previous `path` is then intact). The file gets the permissions `open` would give it."""
    path = Path(path)
    kept = kept or (f"{path} is unchanged" if path.exists() else "")
    if needed:
        check_space(path, needed, kept)
    with full_disk_is_a_fault(path, needed, kept):  # a directory or an empty file can be one too many
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with full_disk_is_a_fault(path, needed, kept, cleanup=lambda: Path(tmp).unlink(missing_ok=True)):
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_file(path, "w", needed=len(text.encode("utf-8"))) as handle:
        handle.write(text)


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append to a log, straight to the file (a killed run keeps every line it acknowledged); a line that does
    not fit is cut off again, so the log never ends halfway through a line."""
    path, data = Path(path), text.encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        except OSError as exc:
            os.ftruncate(fd, start)
            reason = full_disk_reason(exc)
            if reason is None:
                raise
            raise no_space(path, reason, f"needs {len(data)} bytes more",
                           f"{path} is whole up to its last line") from None
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------- fsync

def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (POSIX: the directory entry is data of the directory)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
