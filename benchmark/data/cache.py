"""A per-machine cache of generated phantom pairs.

A CT phantom is scanned whole at 512x512 (about a second each, after a 12-second projector build),
so every process of a grid would spend a minute making the same 52 pairs. They are kept as
``.npz`` files (NumPy arrays only: loading runs no code) in ``MEDIR_BENCH_DATA_CACHE`` (default
``~/.cache/medir-bench/phantoms``; ``off`` turns the cache off), named by what they are and by a
hash of the code that makes them, so a change of the physics or of the phantoms never reuses stale
pairs. Files are written whole (a temporary file, then a rename): processes that make the same pairs
at once each write complete, identical files. A file that cannot be read is made again.
"""
from __future__ import annotations

import functools
import hashlib
import os
import warnings
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

CACHE_ENV = "MEDIR_BENCH_DATA_CACHE"
GENERATORS = ("degradations.py", "phantoms.py", "projector.py", "sources.py", "../base/vocabulary.py")


def folder() -> Path | None:
    value = os.environ.get(CACHE_ENV, "")
    if value.lower() == "off":
        return None
    return Path(value or Path.home() / ".cache" / "medir-bench" / "phantoms").expanduser()


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """sha256 of the modules that generate the pairs (first 12 hex digits)."""
    digest = hashlib.sha256()
    for name in GENERATORS:
        digest.update((Path(__file__).parent / name).read_bytes())
    return digest.hexdigest()[:12]


def arrays(name: str, make: Callable[[], tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(lq, hq) of ``name`` from the cache, or made by ``make()`` and cached."""
    where = folder()
    if where is None:
        return make()
    path = where / f"{name}-{code_version()}.npz"
    try:
        with np.load(path, allow_pickle=False) as stored:
            return stored["lq"], stored["hq"]
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        warnings.warn(f"{path}: an unreadable cached phantom file ({type(err).__name__}: {err}); making it again")
    lq, hq = make()
    try:
        where.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
        np.savez(partial, lq=lq, hq=hq)
        os.replace(partial, path)
    except OSError as err:
        warnings.warn(f"{where}: could not cache the phantom pairs ({err}); set {CACHE_ENV} to a writable "
                      f"folder, or to 'off'")
    return lq, hq
