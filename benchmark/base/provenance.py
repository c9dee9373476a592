"""What a run's numbers depend on: the code that can change them, the commit, the machine.

``code_files()`` hashes every source file that can change a run's results (``RESULT_CODE``: the
models, their ops and C++/CUDA kernels, the data, training, scoring, profiling and the ERF), and
``code_hash()`` combines them. Rendering, the store, the CLI, the schedulers, docs and tests are not
in it: changing them changes no number. A finished run records the hash (and the files' hashes) it
ran with; when the current code differs in a file that can change *its* numbers the run is *stale*
(``benchmark.harness.status``), and ``benchmark.harness.run`` runs it again unless ``--keep-stale``.
A kernel that only one backend runs (``BACKEND_FILES``: the Triton WKV, the CPU kernels, mamba_ssm's
binding) is part of a run's code only when the run used that backend, so that a change to a GPU
kernel leaves the CPU runs fresh (and the other way round). Likewise a model family's file
(``models/<name>.py``) is part of a run's code only when the run built that family's preset or one
that imports it (``model_files``): widening one preset leaves the other models' runs fresh.
"""
from __future__ import annotations

import fnmatch
import functools
import hashlib
import subprocess
from pathlib import Path

from benchmark.base import machine, model_files

ROOT = Path(__file__).resolve().parents[2]
# paths under ROOT whose files can change a run's results
RESULT_CODE = ("models", "csrc", "benchmark/data", "benchmark/base/vocabulary.py", "benchmark/harness/config.py",
               "benchmark/harness/erf.py", "benchmark/harness/evaluate.py", "benchmark/harness/inference.py",
               "benchmark/harness/pipeline.py", "benchmark/harness/train.py", "benchmark/results/health.py",
               "benchmark/results/metrics.py", "benchmark/measure/costs.py", "benchmark/measure/timing.py")
SOURCE_SUFFIXES = (".py", ".cpp", ".cu", ".cuh", ".h", ".c")
# {(op, backend): patterns of the files that only that backend runs}. A run records the backend of
# each op its model uses (environment.json "backends"); the files of the other backends cannot change
# its numbers. Shared code (dispatch, limits, the PyTorch fallbacks, csrc/simd.h) is never listed.
BACKEND_FILES = {
    ("wkv", "triton"): ("models/ops/wkv/triton*.py",),
    ("wkv", "cpp"): ("models/ops/wkv/cpu.py", "csrc/wkv_cpu.cpp"),
    ("scan", "cpp"): ("models/ops/selective_scan/cpu.py", "csrc/selective_scan_cpu.cpp"),
    ("scan", "mamba"): ("models/ops/selective_scan/mamba.py",),
}


def code_files(root: Path = ROOT, paths=RESULT_CODE) -> dict[str, str]:
    """{path relative to ``root``: sha256 of its bytes (16 hex digits)} of every source file in
    ``paths``, in path order."""
    files = []
    for entry in paths:
        path = Path(root) / entry
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [f for f in path.rglob("*") if f.is_file() and f.suffix in SOURCE_SUFFIXES
                      and "__pycache__" not in f.parts]
    return {f.relative_to(root).as_posix(): hashlib.sha256(f.read_bytes()).hexdigest()[:16]
            for f in sorted(files)}


def combined(files: dict[str, str]) -> str:
    """One hash (12 hex digits) of a ``code_files`` mapping."""
    return hashlib.sha256("".join(f"{p}\0{h}\n" for p, h in sorted(files.items())).encode()).hexdigest()[:12]


@functools.lru_cache(maxsize=1)
def _current() -> tuple[str, dict[str, str]]:
    files = code_files()
    return combined(files), files


def code_hash() -> str:
    """The current code's hash (computed once per process)."""
    return _current()[0]


def current_files() -> dict[str, str]:
    return dict(_current()[1])


def run_files(files: dict[str, str], backends: dict[str, str], model: str | None = None) -> dict[str, str]:
    """``files`` less the kernel files of the backends that a run with ``backends`` ({op: backend},
    as its environment.json records them) did not use (``BACKEND_FILES``) and, for a run of the
    preset ``model`` (its spec.json ``model``), less the other model families' files
    (``model_files.used_families``)."""
    unused = [pattern for (op, backend), patterns in BACKEND_FILES.items() if backends.get(op) != backend
              for pattern in patterns]
    used = model_files.used_families(model, ROOT) if model else None
    others = model_files.families(ROOT) - used if used is not None else set()
    return {path: digest for path, digest in files.items()
            if path not in others and not any(fnmatch.fnmatchcase(path, pattern) for pattern in unused)}


def changed_files(recorded: dict[str, str] | None, backends: dict[str, str] | None = None,
                  model: str | None = None) -> list[str]:
    """The files whose current hash differs from ``recorded`` (added, removed or changed); with a
    run's ``backends`` (and ``model``), only those that can change that run's numbers (``run_files``)."""
    now = current_files()
    if not recorded:
        return []
    if backends is not None:
        now, recorded = run_files(now, backends, model), run_files(recorded, backends, model)
    return sorted(p for p in set(now) | set(recorded) if now.get(p) != recorded.get(p))


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, cwd=ROOT)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_state() -> dict:
    """The checkout's commit and whether result code differs from it (None outside a git checkout)."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    dirty = _git("status", "--porcelain", "--untracked-files=all", "--", *RESULT_CODE)
    return {"commit": commit, "dirty": bool(dirty) if dirty is not None else None}


def record(device) -> dict:
    """What a run records of its code and machine (``machine.describe``; in environment.json, the hash
    also in status.json) on the torch ``device`` it runs on."""
    return {"code_hash": code_hash(), "code_files": current_files(), **{f"git_{k}": v for k, v in git_state().items()},
            **machine.describe(device)}


def _recorded_backends(status: dict, environment: dict | None) -> dict[str, str] | None:
    """The run's backends when its environment.json records them with the files of the hash in its
    status (None otherwise: then every file of the current code counts)."""
    environment = environment or {}
    files, backends = environment.get("code_files"), environment.get("backends")
    if not files or not isinstance(backends, dict) or combined(files) != status.get("code_hash"):
        return None
    return backends


def is_stale(status: dict, environment: dict | None = None, model: str | None = None) -> bool:
    """A finished (or, a tuned grid's candidate, trained) run made with other code than the current
    (or with unrecorded code); with its ``environment`` (environment.json) and ``model`` (the preset
    its spec.json names), only a change to a file that can change its numbers counts (``run_files``)."""
    if status.get("state") not in ("done", "trained") or status.get("code_hash") == code_hash():
        return False
    backends = _recorded_backends(status, environment)
    if backends is None:
        return True
    return (combined(run_files(environment["code_files"], backends, model))
            != combined(run_files(current_files(), backends, model)))


def stale_reason(status: dict, environment: dict | None, model: str | None = None) -> str:
    """Why a stale run is stale: its code hash against the current one and, where the run recorded
    its files' hashes, which files differ (at most 4 named)."""
    if not status.get("code_hash"):
        return f"made before runs recorded their code; the current code is {code_hash()}"
    changed = changed_files((environment or {}).get("code_files"), _recorded_backends(status, environment), model)
    named = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
    return f"made with code {status['code_hash']}, now {code_hash()}" + (f" ({named} changed)" if changed else "")
