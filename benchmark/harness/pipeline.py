"""One run: ``run_spec(spec, grid_dir)`` trains, tests, profiles and maps the ERF of one grid cell.

Idempotent: a finished run returns at once; each stage writes its result atomically and is
skipped when its result exists, and training resumes from the run's checkpoint. Any exception
(a NaN loss, a bad data file, an out-of-memory) is recorded as a failed status with its reason
and traceback, and returned, not raised, so the rest of the grid goes on. Only an interrupt
(Ctrl-C, a kill) escapes; the run then stays ``running`` and is resumed by the next invocation.
"""
from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from pathlib import Path

import torch

import models
from models.ops import backends

from benchmark.harness import config as cfg
from benchmark.harness import erf, evaluate, train
from benchmark.measure import costs
from benchmark.base import provenance
from benchmark.results import store
from benchmark.results.store import RunFolder, RunState
from benchmark.harness.grid import RunSpec


def _device(config: dict) -> torch.device:
    wanted = config["device"]
    if wanted == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no GPU; use device=auto or device=cpu")
    return torch.device("cuda" if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()) else "cpu")


def requested_backends(model: torch.nn.Module, config: dict, device: torch.device) -> dict[str, str]:
    """``{op: the backend its calls will run}`` for each kernel op the model calls (``kernels.<op>``)."""
    return {kind: backends.resolve(kind, config["kernels"][kind], device)
            for kind in backends.kernel_ops(model)}


def environment(model: torch.nn.Module, config: dict, device: torch.device) -> dict:
    return {"seed": config["seed"], "backends": requested_backends(model, config, device),
            "imports": models.imported_modules(),      # model modules from outside the package
            **provenance.record(device)}   # code hash and files, git commit, the machine (versions, CPU, threads, GPU)


def build_model(config: dict) -> torch.nn.Module:
    """The run's model, seeded; a model from outside the package is imported first (its recorded
    ``model.source``: the same file, unchanged)."""
    models.ensure_model(cfg.model_name(config), config["model"].get("source"))
    torch.manual_seed(config["seed"])
    model = models.create_model(cfg.model_name(config), **config["model"]["options"])
    # this model's kernel ops, recorded from it (train.<op>_backend for every op)
    return model.set_backends(**{kind: config["kernels"][kind] for kind in backends.OPS})


def _profile(model: torch.nn.Module, config: dict, device: torch.device) -> dict:
    """Sizes and latency of a freshly built (CPU) model, which the latency measurement moves to ``device``."""
    size = config["profile"]["size"]
    shape = (1, 1, size, size)
    sizes = {"size": size, "params_m": costs.count_params(model), "deploy_params_m": costs.count_params(model, True),
             "paper_gmacs": costs.count_macs(model, shape, "paper")[0],
             "network": models.network_signature(model)}             # rows that build one network share it
    sizes["full_gmacs"], sizes["uncounted"] = costs.count_macs(model, shape, "full")
    latency = costs.measure_latency(model, shape, "infer", str(device), repeat=config["profile"]["latency_repeat"])
    info = models.model_info(cfg.model_name(config))
    if info.floored:                                               # a tiny preset raised to the floor: the rule
        sizes["floored"] = {"floor": models.TINY_FLOOR, "divisor": models.TINY_DIVISOR}
    elif info.widened:                                             # a tiny preset wider than the rule, and why
        sizes["floored"] = {"widened": info.widened, "divisor": models.TINY_DIVISOR}
    return {**sizes, "latency_ms": latency["median_ms"], "latency_min_ms": latency["min_ms"],
            "latency_max_ms": latency["max_ms"], "latency_device": str(device)}


def _result(folder: Path, name: str, reader) -> bool:
    """Whether the stage result ``name`` exists and reads; an unreadable one is reported and removed
    (its stage runs again)."""
    if not (folder / name).is_file():
        return False
    try:
        reader(folder)
        return True
    except store.StoreError as err:
        print(f"{err}; its stage runs again", file=sys.stderr, flush=True)
        (folder / name).unlink(missing_ok=True)
        return False


def _trained_weights(folder: Path, device: torch.device) -> dict | None:
    """The best weights of a finished training, or None when training must run (again): when
    ``best.pt`` is missing or unreadable, training starts over, and every result computed from
    the lost weights is removed with it."""
    if not _result(folder, RunFolder.TRAIN, lambda f: store.read_json(RunFolder(f).train)):
        return None
    try:
        return store.read_weights(RunFolder(folder).best, device)
    except store.StoreError as err:
        print(f"{err}; training starts over", file=sys.stderr, flush=True)
        for name in (*RunFolder.TRAINING, *RunFolder.TESTING, RunFolder.ERF):
            (folder / name).unlink(missing_ok=True)
        return None


STAGES = ("all", "train")      # "train": a tuned grid's candidate is trained and validated, never tested


def _stages(spec: RunSpec, folder: Path, progress: bool, stages: str = "all", until: int | None = None) -> dict:
    """Every stage that has no result yet (``stages="train"``: training only, to ``until``
    iterations if given); returns the training summary (``train.json``; ``partial`` when training
    stopped at ``until``, with no ``train.json`` written)."""
    config = spec.config
    device = _device(config)
    model = build_model(config).to(device)               # imports a model from outside the package first
    run = RunFolder(folder)
    store.write_json(run.environment, environment(model, config, device))
    weights = _trained_weights(folder, device)
    if weights is None:
        summary = train.train(model, config, folder, device, progress, until if stages == "train" else None)
        if summary.get("partial"):
            return summary
        for kind, names in model.used_backends(reset=True).items():   # what trained this model
            summary[f"{kind}_backends"] = names
        summary["kernel_dtypes"] = model.kernel_dtypes(reset=True)  # what its kernel ops computed in
        store.write_json(run.train, summary)
    else:
        model.load_state_dict(weights)
        summary = store.read_train_summary(folder)
    if stages == "train":
        return summary
    model.deploy()                                               # test the deploy form, as the paper does
    if not (_result(folder, RunFolder.TEST, store.read_test)
            and _result(folder, RunFolder.IMAGES, store.read_image_scores)
            and _result(folder, RunFolder.EXAMPLES, store.read_examples)):
        rows, means, examples = evaluate.test(model, config, device, progress)
        store.write_csv(run.images, rows)
        store.write_arrays(run.examples, **examples)
        store.write_json(run.test, {"tasks": means})
    if not _result(folder, RunFolder.PROFILE, store.read_profile):
        store.write_json(run.profile, _profile(build_model(config), config, device))
    if not _result(folder, RunFolder.ERF, store.read_erf):
        store.write_array(run.erf, erf.erf_maps(model, config, device))
    return summary


def _reached_rung(status: dict, until: int | None) -> bool:
    """A ``partial`` run has already trained to ``until`` (a rung of successive halving)."""
    return until is not None and status["state"] == RunState.PARTIAL and status.get("iteration", 0) >= until


def run_spec(spec: RunSpec, grid_dir, progress: bool = True, stages: str = "all", until: int | None = None) -> dict:
    """Run (or finish, or skip) one spec in ``grid_dir/<slug>-<id>``; returns its final status, or
    ``busy`` (nothing touched) when another live process is running it. ``stages="train"`` trains
    and validates only (state ``trained``: a tuned grid's candidate, whose test split is never read
    unless it is chosen), to ``until`` iterations when given (state ``partial``: a rung of successive
    halving; given a larger ``until`` later, it continues from its checkpoint); a trained run given
    ``stages="all"`` is tested from its best weights."""
    if stages not in STAGES:
        raise ValueError(f"unknown stages {stages!r}; expected one of {', '.join(STAGES)}")
    folder = Path(grid_dir) / spec.folder_name
    status = store.run_state(folder)
    if status["state"] == RunState.DONE and store.unreadable(folder) is None:
        return status
    if stages == "train" and status["state"] == RunState.TRAINED and store.trained_unreadable(folder) is None:
        return status
    if stages == "train" and _reached_rung(status, until):
        return status
    try:
        with store.run_lock(folder):
            return _run_locked(spec, folder, progress, stages, until)
    except store.RunBusy as err:
        return {"state": RunState.BUSY, "id": spec.id, "label": spec.label, "reason": str(err)}
    except OSError as err:                         # not even the lock or the folder could be made
        return {"state": RunState.FAILED, "id": spec.id, "label": spec.label, "reason": f"{type(err).__name__}: {err}"}


def _run_locked(spec: RunSpec, folder: Path, progress: bool, stages: str = "all", until: int | None = None) -> dict:
    run = RunFolder(folder)
    status = store.run_state(folder)                     # read again under the lock
    if stages == "train" and _reached_rung(status, until):
        return status
    if status["state"] in (RunState.DONE, RunState.TRAINED):
        if status["state"] == RunState.TRAINED and stages == "train":
            problem = run.trained_unreadable()
        else:
            problem = run.unreadable() if status["state"] == RunState.DONE else None
        if problem is None and (status["state"] == RunState.DONE or stages == "train"):
            return status
        if problem is not None:
            print(f"{problem}; the run is finished again", file=sys.stderr, flush=True)
    if status["state"] == store.BROKEN:
        print(f"{status['reason']}; the run's status starts afresh", file=sys.stderr, flush=True)
    for leftover in store.clean_leftovers(folder):
        print(f"{leftover}: removed (a temporary file of an interrupted write)", file=sys.stderr, flush=True)
    if status.get("code_hash") not in (None, provenance.code_hash()):
        # its checkpoint and partial results came from other code: never finish them with this code
        print(f"{folder}: began with code {status['code_hash']}, now {provenance.code_hash()}; it starts over",
              file=sys.stderr, flush=True)
        store.clear_results(folder)
    started = time.time()
    running = {"state": RunState.RUNNING, "id": spec.id, "label": spec.label, "pid": os.getpid(),
               "host": socket.gethostname(), "started": started, "attempts": status.get("attempts", 0) + 1,
               "code_hash": provenance.code_hash()}
    try:
        store.write_json(run.spec, {"id": spec.id, "label": spec.label, "slug": spec.slug,
                                    "model": cfg.model_name(spec.config), "config": spec.config})
        store.write_json(run.status, running)
        summary = _stages(spec, folder, progress, stages, until)
    except Exception as err:  # recorded, not raised: one failed run never stops the grid
        status = {**running, "state": RunState.FAILED, "reason": f"{type(err).__name__}: {err}",
                  "log": str(run.error), "finished": time.time(), "seconds": time.time() - started}
        try:
            store.write_text(run.error, traceback.format_exc())
        except OSError as log_err:
            status.update(log=None, reason=f"{status['reason']} (and error.log could not be written: {log_err})")
    else:
        if summary.get("partial"):                # a rung of successive halving: the checkpoint goes on later
            status = {**running, "state": RunState.PARTIAL, "finished": time.time(), "seconds": time.time() - started,
                      "iteration": summary["iterations"], "val_psnr": summary["best_val_psnr"]}
        else:
            status = {**running, "state": RunState.TRAINED if stages == "train" else RunState.DONE,
                      "finished": time.time(), "seconds": time.time() - started,
                      "health": summary.get("health"), "loss_spikes": len(summary.get("loss_spikes", []))}
        run.error.unlink(missing_ok=True)                              # a stale log of an earlier attempt
    try:
        store.write_json(run.status, status)
    except OSError as err:       # e.g. the disk is full: the caller still learns the outcome
        status = {**status, "state": RunState.FAILED, "reason": f"{status.get('reason', 'finished')}; "
                                                         f"status.json could not be written: {err}"}
    return status
