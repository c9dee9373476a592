"""The store: one folder per run under ``<out>/<grid>/``; the only thing rendering reads.

    <out>/<grid>/grid.json            the grid's name, table, title, scale and its runs in order
    <out>/<grid>/<slug>-<id>/
        spec.json                     the resolved configuration (and the spec's id, label)
        environment.json              versions, device, threads, the backend of each kernel op the
                                      model calls, seed; the code it ran
                                      (``benchmark.base.provenance``: hash, per-file hashes, git commit,
                                      dirty), the CPU model and GPU
        status.json                   state (running / done / failed), reason, times, pid, host, the
                                      code hash; a done run's health verdict (learned or "did not
                                      learn", its gain)
        checkpoint.pt                 the resumable training state (model, optimizer, iteration)
        best.pt                       the weights with the best validation PSNR
        train.json, train_log.csv     the training summary (with its health: loss spikes, whether it
                                      learned) and the loss / gradient norm / validation curve
        test.json, test_images.csv    mean and per-image PSNR / SSIM / RMSE (and of the inputs), each
                                      test image's GLCM complexity
        examples.npz                  a few test images (input, ground truth, this run's output) for
                                      the visual comparison (harness.evaluate.EXAMPLES)
        profile.json                  params, MACs in both conventions, latency; whether the model is a
                                      tiny preset raised to the parameter floor (models.TINY_FLOOR)
        erf.npy                       the effective receptive field maps, one per image (images, H, W)
        error.log                     the traceback of a failed run
        .lock                         held (an OS file lock) by the process that runs the run

A run is run by one process at a time: ``run_lock`` takes an exclusive ``flock`` on the run's
``.lock`` (released by the OS when the process dies, however it dies), and a second process that
finds it held skips the run (``RunBusy``). ``is_live`` tells a run whose process still holds its
lock from one whose ``status.json`` says ``running`` but whose process is gone.

Every file is written whole or not at all (``benchmark.base.files``: a temporary name renamed into
place; ``StoreWriteError`` naming the file when the disk is full), so a killed process never
leaves a half-written result; ``status.json`` turns ``done`` last. Temporary files left by a
killed writer are removed when the run starts again (``clean_leftovers``).

Every file is read through the readers below (``read_status``, ``read_spec``, ``read_test``,
``read_profile``, ``read_erf``, ``read_image_scores``, ``read_weights``): a truncated or malformed
file raises ``StoreError`` naming the file, and ``load_index`` / ``load_image_scores`` turn it
into a ``broken`` run so that ``status`` and ``render`` carry on with the others.
"""
from __future__ import annotations

import contextlib
import enum
import json
from pathlib import Path

import numpy as np

from benchmark.base import files
from benchmark.base.files import (StoreWriteError, save_torch, write_array, write_arrays, write_csv,  # noqa: F401
                                  write_json, write_text, write_with)

class RunState(str, enum.Enum):
    """A run's state. ``status.json`` holds one of the first seven (``partial``: a tuned grid's
    candidate trained to a rung of successive halving, its ``iteration``, continued from its
    checkpoint if it goes on; ``trained``: a candidate trained and validated to the end, not tested:
    ``harness.tuning``); the commands derive the others: ``broken`` (an unreadable store file),
    ``busy`` (another process holds the run), ``stopped`` (running, but its process is gone).
    Equal to its string, written as its string."""
    PENDING = "pending"
    SUBMITTED = "submitted"
    RUNNING = "running"
    PARTIAL = "partial"
    TRAINED = "trained"
    DONE = "done"
    FAILED = "failed"
    BROKEN = "broken"
    BUSY = "busy"
    STOPPED = "stopped"

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


STATES = tuple(s.value for s in list(RunState)[:7])                  # what status.json may say
FINISHED = (RunState.DONE, RunState.TRAINED)                          # a finished run (tested or not)
OUTCOMES = (*FINISHED, RunState.PARTIAL, RunState.FAILED)              # what a run's process ends with
# trained: a tuned grid's candidate, trained and validated, not tested (harness.tuning)
BROKEN = RunState.BROKEN                                          # a run with an unreadable store file


class StoreError(ValueError):
    """A store file that cannot be read as what it should hold; the message names the file."""


def clean_leftovers(folder) -> list[Path]:
    """Remove the temporary files that a killed writer left in the run folder ``folder`` (every
    dotfile but ``.lock``, also those of older versions); returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    leftovers = [p for p in folder.iterdir()      # a run folder's only dotfile of its own is .lock
                 if p.name.startswith(".") and p.name != RunFolder.LOCK and p.is_file()]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return leftovers


class RunBusy(RuntimeError):
    """Another live process holds the run's lock."""


@contextlib.contextmanager
def run_lock(folder):
    """Hold the run's lock for the block; ``RunBusy`` (naming the holder) if another process has it."""
    folder = Path(folder)
    try:
        with files.exclusive_lock(folder / RunFolder.LOCK):
            yield
    except files.LockHeld:
        status = run_state(folder)
        holder = f"pid {status['pid']} on {status.get('host', '?')}" if "pid" in status else "another process"
        raise RunBusy(f"{folder}: {holder} is running this run") from None


class RunFolder:
    """One run's folder: the names of its files (the layout above, one place) as paths, and the
    checks of its stages' results (``unreadable``: a done run's, ``trained_unreadable``: a trained one's)."""
    STATUS, SPEC, ENVIRONMENT = "status.json", "spec.json", "environment.json"
    CHECKPOINT, BEST, TRAIN, TRAIN_LOG = "checkpoint.pt", "best.pt", "train.json", "train_log.csv"
    TEST, IMAGES, EXAMPLES = "test.json", "test_images.csv", "examples.npz"
    PROFILE, ERF, ERROR, LOCK = "profile.json", "erf.npy", "error.log", ".lock"
    TRAINING = (TRAIN, CHECKPOINT)                           # what training computes (besides best.pt)
    TESTING = (TEST, IMAGES, EXAMPLES)                       # what testing computes

    def __init__(self, path):
        self.path = Path(path)
        for attribute in ("status", "spec", "environment", "checkpoint", "best", "train", "train_log", "test",
                          "images", "examples", "profile", "erf", "error"):
            setattr(self, attribute, self.path / getattr(RunFolder, attribute.upper()))

    def unreadable(self) -> str | None:
        return unreadable(self.path)

    def trained_unreadable(self) -> str | None:
        return trained_unreadable(self.path)


RUN_RESULTS = (RunFolder.STATUS, RunFolder.ENVIRONMENT, RunFolder.CHECKPOINT, RunFolder.BEST, RunFolder.TRAIN,
               RunFolder.TRAIN_LOG, RunFolder.TEST, RunFolder.IMAGES, RunFolder.EXAMPLES, RunFolder.PROFILE,
               RunFolder.ERF, RunFolder.ERROR)


def clear_results(folder) -> None:
    """Remove everything a run has computed (its spec and lock stay): it starts from scratch."""
    for name in RUN_RESULTS:
        (Path(folder) / name).unlink(missing_ok=True)


def read_environment(folder) -> dict | None:
    """``environment.json`` (None before the run started)."""
    return read_json(RunFolder(folder).environment, default=None)


def is_live(folder) -> bool:
    """Whether a process holds the run's lock now."""
    return files.is_locked(RunFolder(folder).path / RunFolder.LOCK)


def read_json(path, default=None, kind: type = dict):
    """The JSON in ``path`` (``default`` when there is no file); ``StoreError`` naming the file when
    it is not valid JSON of the expected ``kind``."""
    path = Path(path)
    if not path.is_file():
        return default
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise StoreError(f"{path}: unreadable JSON ({type(err).__name__}: {err})") from None
    _expect(isinstance(data, kind), path, f"a JSON {kind.__name__}", type(data).__name__)
    return data


def _expect(condition: bool, path, expected: str, found) -> None:
    if not condition:
        raise StoreError(f"{path}: expected {expected}, found {found}")


def _is_number(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def read_status(folder) -> dict:
    """The status of a run folder (``pending`` when it has none)."""
    path = RunFolder(folder).status
    status = read_json(path, {"state": RunState.PENDING})
    _expect(status.get("state") in STATES, path, f"a state in {STATES}", repr(status.get("state")))
    return status


def run_state(folder) -> dict:
    """``read_status``, or a ``broken`` status (with the reason) when status.json is unreadable:
    for the commands that must go on with the other runs."""
    try:
        return read_status(folder)
    except StoreError as err:
        return {"state": BROKEN, "reason": str(err)}


def read_spec(folder) -> dict | None:
    path = RunFolder(folder).spec
    spec = read_json(path)
    if spec is not None:
        _expect(isinstance(spec.get("config"), dict) and isinstance(spec.get("label"), str)
                and isinstance(spec.get("model"), str), path, "a run spec (config, label, model)",
                f"keys {sorted(spec)}")
    return spec


def read_test(folder) -> dict | None:
    """``{"tasks": {task: {metric: number}}}`` or None before the test stage."""
    path = RunFolder(folder).test
    test = read_json(path)
    if test is not None:
        tasks = test.get("tasks")
        _expect(isinstance(tasks, dict) and tasks and all(
            isinstance(scores, dict) and scores and all(_is_number(v) for v in scores.values())
            for scores in tasks.values()), path, '{"tasks": {task: {metric: number}}}', json.dumps(test)[:80])
    return test


def read_profile(folder) -> dict | None:
    path = RunFolder(folder).profile
    profile = read_json(path)
    if profile is not None:
        bad = [k for k in ("params_m", "deploy_params_m", "paper_gmacs", "full_gmacs", "latency_ms")
               if not _is_number(profile.get(k))]
        _expect(not bad, path, "numbers for params, MACs and latency", f"non-numbers in {bad}")
    return profile


def read_erf(folder) -> np.ndarray | None:
    """The run's (images, H, W) ERF maps (a single (H, W) map is one image), or None."""
    path = RunFolder(folder).erf
    if not path.is_file():
        return None
    try:
        maps = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise StoreError(f"{path}: unreadable array ({type(err).__name__}: {err})") from None
    _expect(isinstance(maps, np.ndarray) and maps.ndim in (2, 3) and maps.dtype.kind == "f" and maps.size
            and np.isfinite(maps).all(), path, "finite float maps of shape (images, H, W)",
            f"{getattr(maps, 'dtype', type(maps))} of shape {getattr(maps, 'shape', '?')}")
    return maps if maps.ndim == 3 else maps[None]


EXAMPLE_ARRAYS = ("task", "index", "lq", "hq", "output")


def read_examples(folder) -> dict | None:
    """``examples.npz``: a few test images kept with the run for the visual comparison (their task,
    index, input, ground truth and this run's output, (k, H, W) in physical units), or None."""
    path = RunFolder(folder).examples
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError) as err:
        raise StoreError(f"{path}: unreadable ({type(err).__name__}: {err}); expected the run's example images") from None
    _expect(set(EXAMPLE_ARRAYS) <= set(arrays) and arrays["lq"].shape == arrays["hq"].shape == arrays["output"].shape
            and arrays["lq"].ndim == 3 and len(arrays["task"]) == len(arrays["index"]) == len(arrays["lq"]),
            path, f"arrays {', '.join(EXAMPLE_ARRAYS)} of one length (k, H, W)", sorted(arrays))
    return arrays


def read_train_summary(folder) -> dict | None:
    """``train.json`` (the training summary: best validation PSNR, the inputs', the health verdict,
    the loss spikes), or None before training has finished."""
    path = RunFolder(folder).train
    summary = read_json(path)
    if summary is not None:
        _expect(_is_number(summary.get("best_val_psnr")), path, "a training summary with best_val_psnr",
                f"keys {sorted(summary)}")
    return summary


def _read_csv(path: Path, columns, numeric, expected: str):
    """The CSV at ``path`` as a pandas DataFrame with its ``numeric`` columns made numbers (others:
    NaN), or None when there is no file; ``StoreError`` naming the file when it cannot be read, is
    empty or lacks one of ``columns`` (``expected``: what one row is)."""
    import pandas as pd
    if not path.is_file():
        return None
    try:
        frame = pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise StoreError(f"{path}: unreadable CSV ({type(err).__name__}: {err})") from None
    missing = [c for c in columns if c not in frame.columns]
    _expect(not missing and len(frame), path, f"one row per {expected} with columns {list(columns)}",
            f"{len(frame)} rows, missing {missing}")
    return frame.assign(**frame[list(numeric)].apply(pd.to_numeric, errors="coerce"))


def read_train_log(folder):
    """``train_log.csv`` as a pandas DataFrame (iteration, loss, val_psnr (NaN between validations),
    ...), or None before the first checkpoint."""
    path = RunFolder(folder).train_log
    columns = ("iteration", "loss", "val_psnr")
    frame = _read_csv(path, columns, columns, "iteration")
    if frame is not None:
        _expect(frame[["iteration", "loss"]].notna().all().all(), path, "numbers in iteration and loss",
                "empty or non-numeric cells")
    return frame


IMAGE_COLUMNS = ("task", "index", "psnr", "ssim", "rmse", "input_psnr", "input_ssim", "input_rmse")


def read_image_scores(folder):
    """The run's per-image scores (a pandas DataFrame), or None before the test stage. Its
    ``subject`` column names each image's subject (the unit the statistics resample); a run tested
    before subjects were recorded gets each image as its own subject (``{task}-{index}``) and
    ``subject_recorded`` False."""
    path = RunFolder(folder).images
    frame = _read_csv(path, IMAGE_COLUMNS, IMAGE_COLUMNS[1:], "image")
    if frame is not None:
        _expect(frame[list(IMAGE_COLUMNS[1:])].notna().all().all(), path, "numbers in every score column",
                "empty or non-numeric cells")
        recorded = "subject" in frame.columns
        if recorded:
            _expect(frame["subject"].notna().all(), path, "a subject name on every row", "empty subject cells")
            frame = frame.assign(subject=frame["subject"].astype(str))
        else:
            frame = frame.assign(subject=[f"{t}-{i}" for t, i in zip(frame["task"], frame["index"])])
        frame = frame.assign(subject_recorded=recorded)
    return frame


def unreadable(folder) -> str | None:
    """Why a finished run's results cannot all be read (the first bad file and what is wrong with
    it), or None when they can: a run that is ``done`` but ``unreadable`` is run again, and its
    stages whose results read are kept."""
    try:
        for reader in (read_status, read_spec, read_test, read_image_scores, read_examples, read_profile, read_erf):
            reader(folder)
    except StoreError as err:
        return str(err)
    return None


def trained_unreadable(folder) -> str | None:
    """Why a ``trained`` run's training results cannot be read (None when they can)."""
    try:
        read_status(folder)
        read_spec(folder)
        if read_train_summary(folder) is None:
            return f"{RunFolder(folder).train}: missing"
    except StoreError as err:
        return str(err)
    return None


TUNING = "tuning.json"           # a tuned grid's choice per row (harness.tuning), in the grid folder


def read_tuning(grid_dir) -> dict | None:
    """A tuned grid's ``tuning.json``: ``{row label: {"chosen": candidate, "ids": chosen run ids,
    "candidates": {candidate: {"val_psnr": mean, "runs": n}}}}``; None before the choice is made."""
    path = Path(grid_dir) / TUNING
    tuning = read_json(path)
    if tuning is not None:
        _expect(all(isinstance(v, dict) and isinstance(v.get("ids"), list) and "chosen" in v for v in tuning.values()),
                path, "rows with their chosen candidate and run ids", repr(tuning)[:200])
    return tuning


def chosen_ids(tuning: dict) -> set[str]:
    """The run ids of every row's chosen candidate in a ``tuning.json``."""
    return {run_id for row in tuning.values() for run_id in row["ids"]}


def chosen_runs(grid_dir, metadata: dict) -> list[dict]:
    """The runs a table shows: every run of an untuned grid; of a tuned one, the chosen candidates
    (none before the choice is made)."""
    if not metadata.get("tune"):
        return metadata["runs"]
    chosen = chosen_ids(read_tuning(grid_dir) or {})
    return [r for r in metadata["runs"] if r["id"] in chosen]


def read_weights(path, device="cpu") -> dict:
    """A state dict saved by ``save_torch`` (loaded with ``weights_only=True``: nothing in the file
    can run code); ``StoreError`` naming the file when it is missing or unreadable."""
    import torch
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"{path}: missing")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as err:  # UnpicklingError, RuntimeError, EOFError ... for bad files
        reason = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise StoreError(f"{path}: unreadable ({type(err).__name__}: {reason[:200]})") from None
    _expect(isinstance(state, dict), path, "a dict of tensors", type(state).__name__)
    return state


def write_grid(grid_dir, metadata: dict) -> None:
    """Write ``grid.json`` (unless it already holds ``metadata``)."""
    try:
        if read_json(Path(grid_dir) / "grid.json") == json.loads(json.dumps(metadata, default=files.plain)):
            return
    except StoreError:
        pass
    write_json(Path(grid_dir) / "grid.json", metadata)


def read_grid(grid_dir) -> dict:
    path = Path(grid_dir) / "grid.json"
    metadata = read_json(path)
    if metadata is None:
        raise FileNotFoundError(f"{grid_dir}: not a grid store (no grid.json); run python -m benchmark.run --grid ...")
    runs = metadata.get("runs")
    _expect(isinstance(metadata.get("name"), str) and isinstance(runs, list) and all(
        isinstance(r, dict) and {"index", "id", "folder", "label"} <= set(r) for r in runs),
        path, "a grid (name, runs with index, id, folder, label)", f"keys {sorted(metadata)}")
    return metadata


def load_index(grid_dir):
    """One pandas DataFrame row per (run, task): the grid order, the run's state, its profile and
    its mean test metrics (NaN where a stage has not finished). A run with an unreadable file is
    one row in state ``broken`` whose reason names the file."""
    import pandas as pd
    grid_dir = Path(grid_dir)
    metadata = read_grid(grid_dir)
    rows = []
    for run in chosen_runs(grid_dir, metadata):         # a tuned grid's rows: its chosen candidates
        folder = grid_dir / run["folder"]
        common = {"index": run["index"], "id": run["id"], "folder": run["folder"], "label": run["label"]}
        try:
            status = read_status(folder)
            spec = read_spec(folder) or {}
            profile = read_profile(folder) or {}
            test = {}
            if status["state"] == RunState.DONE:                 # a done run must be whole: its maps and images too
                test = read_test(folder) or {}
                read_image_scores(folder)
                read_erf(folder)
        except StoreError as err:
            rows.append({**common, "state": BROKEN, "reason": str(err), "eval_task": None})
            continue
        config = spec.get("config", {})
        health = status.get("health") or {}
        common.update({"state": status["state"], "reason": status.get("reason", ""),
                       "learned": health.get("learned", True), "val_gain_db": health.get("val_gain_db"),
                       "still_rising": health.get("plateau") is False, "late_rise_db": health.get("late_rise_db"),
                       "model": spec.get("model", ""), "seed": config.get("seed"), "task": config.get("task"),
                       "params_m": profile.get("params_m"), "deploy_params_m": profile.get("deploy_params_m"),
                       "paper_gmacs": profile.get("paper_gmacs"), "full_gmacs": profile.get("full_gmacs"),
                       "latency_ms": profile.get("latency_ms"), "floored": profile.get("floored"),
                       "profile_size": profile.get("size", config.get("profile", {}).get("size")),
                       "network": profile.get("network")})
        per_task = test.get("tasks") or {}
        if not per_task:
            rows.append({**common, "eval_task": None})
        for task, scores in per_task.items():              # a multi-task run's health on this task, if recorded
            own = (health.get("tasks") or {}).get(task) or {}
            rows.append({**common, "eval_task": task, **scores,
                         **{key: own[key] for key in ("learned", "val_gain_db") if key in own}})
    return pd.DataFrame(rows)


def load_image_scores(grid_dir, problems: list[str] | None = None):
    """One pandas DataFrame row per (finished run, tested image) from the runs' ``test_images.csv``:
    label, seed, run id, task, image index and the per-image metrics (ours and the input's). A run
    with an unreadable file is left out and its error appended to ``problems``."""
    import pandas as pd
    grid_dir = Path(grid_dir)
    frames = []
    for run in chosen_runs(grid_dir, read_grid(grid_dir)):
        folder = grid_dir / run["folder"]
        try:
            if read_status(folder)["state"] != RunState.DONE:
                continue
            frame = read_image_scores(folder)
            seed = (read_spec(folder) or {}).get("config", {}).get("seed")
        except StoreError as err:
            if problems is not None:
                problems.append(str(err))
            continue
        if frame is not None:
            frames.append(frame.assign(label=run["label"], seed=seed, id=run["id"], grid_index=run["index"]))
    columns = ["label", "seed", "id", "grid_index", "task", "index"]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
