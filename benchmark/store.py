"""The store: one folder per run under ``<out>/<grid>/``; the only thing rendering reads.

    <out>/<grid>/grid.json            the grid's name, table, title, scale and its runs in order
    <out>/<grid>/<slug>-<id>/
        spec.json                     the resolved configuration (and the spec's id, label)
        environment.json              versions, device, threads, WKV backend, seed, git commit
        status.json                   state (running / done / failed), reason, times, pid, host
        checkpoint.pt                 the resumable training state (model, optimizer, iteration)
        best.pt                       the weights with the best validation PSNR
        train.json, train_log.csv     the training summary and the loss / validation curve
        test.json, test_images.csv    mean and per-image PSNR / SSIM / RMSE (and of the inputs)
        profile.json                  params, MACs in both conventions, latency
        erf.npy                       the effective receptive field maps, one per image (images, H, W)
        error.log                     the traceback of a failed run
        .lock                         held (an OS file lock) by the process that runs the run

A run is run by one process at a time: ``run_lock`` takes an exclusive ``flock`` on the run's
``.lock`` (released by the OS when the process dies, however it dies), and a second process that
finds it held skips the run (``RunBusy``). ``is_live`` tells a run whose process still holds its
lock from one whose ``status.json`` says ``running`` but whose process is gone.

Every file is written to a temporary name and renamed into place, so a killed process never
leaves a half-written result; ``status.json`` turns ``done`` last.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from pathlib import Path

import numpy as np

def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(handle, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


class RunBusy(RuntimeError):
    """Another live process holds the run's lock."""


@contextlib.contextmanager
def run_lock(folder):
    """Hold the run's lock for the block; ``RunBusy`` (naming the holder) if another process has it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / ".lock", "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            status = run_state(folder)
            holder = f"pid {status['pid']} on {status.get('host', '?')}" if "pid" in status else "another process"
            raise RunBusy(f"{folder}: {holder} is running this run") from None
        yield
    finally:
        handle.close()                                   # closing releases the lock


def is_live(folder) -> bool:
    """Whether a process holds the run's lock now."""
    path = Path(folder) / ".lock"
    if not path.is_file():
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def write_json(path, data) -> None:
    _atomic(path, lambda f: f.write(json.dumps(data, indent=2, sort_keys=True, default=_plain).encode()))


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


def save_torch(path, obj) -> None:
    import torch
    _atomic(path, lambda f: torch.save(obj, f))


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_json(path, default=None):
    path = Path(path)
    if not path.is_file():
        return default
    return json.loads(path.read_text())


def run_state(folder) -> dict:
    """The status of a run folder (``pending`` when it has none)."""
    return read_json(Path(folder) / "status.json", {"state": "pending"})


def write_grid(grid_dir, metadata: dict) -> None:
    write_json(Path(grid_dir) / "grid.json", metadata)


def read_grid(grid_dir) -> dict:
    metadata = read_json(Path(grid_dir) / "grid.json")
    if metadata is None:
        raise FileNotFoundError(f"{grid_dir}: not a grid store (no grid.json); run python -m benchmark.run --grid ...")
    return metadata


def load_index(grid_dir):
    """One pandas DataFrame row per (run, task): the grid order, the run's state, its profile and
    its mean test metrics (NaN where a stage has not finished)."""
    import pandas as pd
    grid_dir = Path(grid_dir)
    metadata = read_grid(grid_dir)
    rows = []
    for run in metadata["runs"]:
        folder = grid_dir / run["folder"]
        spec = read_json(folder / "spec.json", {})
        config = spec.get("config", {})
        status = run_state(folder)
        profile = read_json(folder / "profile.json", {})
        test = read_json(folder / "test.json", {})
        common = {"index": run["index"], "id": run["id"], "folder": run["folder"], "label": run["label"],
                  "state": status["state"], "reason": status.get("reason", ""),
                  "model": spec.get("model", ""), "seed": config.get("seed"), "task": config.get("task"),
                  "params_m": profile.get("params_m"), "deploy_params_m": profile.get("deploy_params_m"),
                  "paper_gmacs": profile.get("paper_gmacs"), "full_gmacs": profile.get("full_gmacs"),
                  "latency_ms": profile.get("latency_ms")}
        per_task = test.get("tasks") or {}
        if not per_task:
            rows.append({**common, "eval_task": None})
        for task, scores in per_task.items():
            rows.append({**common, "eval_task": task, **scores})
    return pd.DataFrame(rows)


def load_image_scores(grid_dir):
    """One pandas DataFrame row per (finished run, tested image) from the runs' ``test_images.csv``:
    label, seed, run id, task, image index and the per-image metrics (ours and the input's)."""
    import pandas as pd
    grid_dir = Path(grid_dir)
    frames = []
    for run in read_grid(grid_dir)["runs"]:
        folder = grid_dir / run["folder"]
        path = folder / "test_images.csv"
        if run_state(folder)["state"] != "done" or not path.is_file():
            continue
        frame = pd.read_csv(path)
        seed = read_json(folder / "spec.json", {}).get("config", {}).get("seed")
        frames.append(frame.assign(label=run["label"], seed=seed, id=run["id"], grid_index=run["index"]))
    columns = ["label", "seed", "id", "grid_index", "task", "index"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
