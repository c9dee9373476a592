"""Files written whole or not at all, and exclusive locks: what the store, the prepared datasets
and the rendered tables share.

Every file is written to a temporary name in its folder (``.<name>.tmp-...``), synced and renamed
into place, so a killed process never leaves a half-written file; it gets the mode a plain
``open`` gives (0644 under the usual umask 022: readable by the group on shared storage). A write
that fails (disk full, quota, permissions) raises ``StoreWriteError`` naming the file and leaves
the earlier version in place.

``exclusive_lock(path)`` holds an OS file lock (``flock``) for a block; the OS releases it when
the process dies, however it dies. ``LockHeld`` when another process has it.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path

import numpy as np

TEMP_MARK = ".tmp-"                                              # in the names of files being written


class StoreWriteError(OSError):
    """A store file that could not be written (disk full, quota, permissions); names the file."""


class LockHeld(RuntimeError):
    """Another live process holds the lock."""


@contextlib.contextmanager
def exclusive_lock(path):
    """Hold ``path``'s OS lock for the block (the file is created if missing); ``LockHeld`` if
    another process has it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LockHeld(str(path)) from None
        yield
    finally:
        handle.close()                                   # closing releases the lock


def is_locked(path) -> bool:
    """Whether a process holds ``path``'s lock now."""
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def _file_mode() -> int:
    """What a plain ``open`` would give under the process's umask (read once, at import: setting
    the umask to read it is not thread-safe)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_FILE_MODE = _file_mode()


def _atomic(path: Path, write) -> None:
    """Write ``path`` through ``write(binary file)`` into a temporary file renamed into place."""
    path = Path(path)
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}{TEMP_MARK}")
        os.fchmod(handle, _FILE_MODE)                    # mkstemp makes 0600; results are shared
        with os.fdopen(handle, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException as err:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        if isinstance(err, (KeyboardInterrupt, SystemExit, StoreWriteError)):
            raise
        if isinstance(err, OSError) or "inline_container" in str(err) or "unexpected pos" in str(err):
            raise StoreWriteError(_write_failure(path, err)) from err    # torch.save reports ENOSPC so
        raise


def _write_failure(path: Path, err: BaseException) -> str:
    import errno
    import shutil
    reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
    try:
        free = shutil.disk_usage(path.parent if path.parent.exists() else Path.cwd()).free
    except OSError:
        free = None
    if getattr(err, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or (free is not None and free < 64 << 20):
        where = f" ({free / 2**20:.1f} MiB free)" if free is not None else ""
        return f"{path}: could not be written: the disk is full{where} ({reason[:200]}); free space and rerun"
    return f"{path}: could not be written ({reason[:200]})"


def write_with(path, write) -> None:
    """Write ``path`` atomically through ``write(binary file)`` (e.g. a figure's ``savefig``)."""
    _atomic(path, write)


def write_json(path, data) -> None:
    _atomic(path, lambda f: f.write(json.dumps(data, indent=2, sort_keys=True, default=plain).encode()))


def write_text(path, text: str) -> None:
    _atomic(path, lambda f: f.write(text.encode()))


def write_csv(path, rows: list[dict], fields: list[str] | None = None) -> None:
    """Rows of dicts as CSV (columns: ``fields``, or the first row's keys)."""
    import csv
    import io
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields or list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def write_array(path, array: np.ndarray) -> None:
    _atomic(path, lambda f: np.save(f, array))


def write_arrays(path, **arrays: np.ndarray) -> None:
    """Named arrays as one ``.npz`` (no pickled objects: strings as unicode arrays)."""
    write_with(path, lambda f: np.savez(f, **arrays))


def save_torch(path, obj) -> None:
    import torch
    _atomic(path, lambda f: torch.save(obj, f))


def plain(value):
    """NumPy scalars as Python numbers, for ``json.dumps(default=plain)``."""
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
