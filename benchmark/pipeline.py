"""One run: ``run_spec(spec, grid_dir)`` trains, tests, profiles and maps the ERF of one grid cell.

Idempotent: a finished run returns at once; each stage writes its result atomically and is
skipped when its result exists, and training resumes from the run's checkpoint. Any exception
(a NaN loss, a bad data file, an out-of-memory) is recorded as a failed status with its reason
and traceback, and returned, not raised, so the rest of the grid goes on. Only an interrupt
(Ctrl-C, a kill) escapes; the run then stays ``running`` and is resumed by the next invocation.
"""
from __future__ import annotations

import os
import platform
import socket
import subprocess
import time
import traceback
from pathlib import Path

import numpy as np
import torch

import models
from models.ops import selective_scan, wkv

from . import config as cfg
from . import erf, evaluate, profile, store, train
from .grid import RunSpec


def _device(config: dict) -> torch.device:
    wanted = config["device"]
    if wanted == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but torch sees no GPU; use device=auto or device=cpu")
    return torch.device("cuda" if wanted == "cuda" or (wanted == "auto" and torch.cuda.is_available()) else "cpu")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10,
                             cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def environment(config: dict, device: torch.device) -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "platform": platform.platform(), "host": socket.gethostname(), "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "threads": torch.get_num_threads(), "seed": config["seed"], "git_commit": _git_commit(),
            "wkv_backend": wkv.resolve_backend(config["train"]["wkv_backend"], device)}


def build_model(config: dict) -> torch.nn.Module:
    torch.manual_seed(config["seed"])
    return models.create_model(cfg.model_name(config), **config["model"]["options"])


def _profile(model: torch.nn.Module, config: dict, device: torch.device) -> dict:
    """Sizes and latency of a freshly built (CPU) model, which the latency measurement moves to ``device``."""
    size = config["profile"]["size"]
    shape = (1, 1, size, size)
    sizes = {"size": size, "params_m": profile.count_params(model), "deploy_params_m": profile.count_params(model, True),
             "paper_gmacs": profile.count_macs(model, shape, "paper")[0]}
    sizes["full_gmacs"], sizes["uncounted"] = profile.count_macs(model, shape, "full")
    latency = profile.measure_latency(model, shape, "infer", str(device), repeat=config["profile"]["latency_repeat"])
    return {**sizes, "latency_ms": latency["median_ms"], "latency_min_ms": latency["min_ms"],
            "latency_max_ms": latency["max_ms"], "latency_device": str(device)}


def _stages(spec: RunSpec, folder: Path, progress: bool) -> None:
    config = spec.config
    device = _device(config)
    store.write_json(folder / "environment.json", environment(config, device))
    with wkv.use_backend(config["train"]["wkv_backend"]):
        wkv.used_backends(reset=True)
        selective_scan.used_backends(reset=True)
        model = build_model(config).to(device)
        if not (folder / "train.json").is_file():
            summary = train.train(model, config, folder, device, progress)
            summary["wkv_backends"] = sorted(wkv.used_backends())
            if selective_scan.used_backends():                       # MambaIR: which scan trained it
                summary["scan_backends"] = sorted(selective_scan.used_backends())
            store.write_json(folder / "train.json", summary)
        else:
            model.load_state_dict(torch.load(folder / "best.pt", map_location=device, weights_only=True))
        if hasattr(model, "reparameterize"):                      # test the deploy form, as the paper does
            model.reparameterize()
        if not (folder / "test.json").is_file():
            rows, means = evaluate.test(model, config, device, progress)
            store.write_csv(folder / "test_images.csv", rows)
            store.write_json(folder / "test.json", {"tasks": means})
        if not (folder / "profile.json").is_file():
            store.write_json(folder / "profile.json", _profile(build_model(config), config, device))
        if not (folder / "erf.npy").is_file():
            store.write_array(folder / "erf.npy", erf.erf_maps(model, config, device))


def run_spec(spec: RunSpec, grid_dir, progress: bool = True) -> dict:
    """Run (or finish, or skip) one spec in ``grid_dir/<slug>-<id>``; returns its final status, or
    ``busy`` (nothing touched) when another live process is running it."""
    folder = Path(grid_dir) / spec.folder_name
    status = store.run_state(folder)
    if status["state"] == "done":
        return status
    try:
        with store.run_lock(folder):
            return _run_locked(spec, folder, progress)
    except store.RunBusy as err:
        return {"state": "busy", "id": spec.id, "label": spec.label, "reason": str(err)}


def _run_locked(spec: RunSpec, folder: Path, progress: bool) -> dict:
    status = store.run_state(folder)                     # read again under the lock
    if status["state"] == "done":
        return status
    store.write_json(folder / "spec.json", {"id": spec.id, "label": spec.label, "slug": spec.slug,
                                           "model": cfg.model_name(spec.config), "config": spec.config})
    started = time.time()
    attempts = status.get("attempts", 0) + 1
    running = {"state": "running", "id": spec.id, "label": spec.label, "pid": os.getpid(),
               "host": socket.gethostname(), "started": started, "attempts": attempts}
    store.write_json(folder / "status.json", running)
    try:
        _stages(spec, folder, progress)
    except Exception as err:  # recorded, not raised: one failed run never stops the grid
        (folder / "error.log").write_text(traceback.format_exc())
        status = {**running, "state": "failed", "reason": f"{type(err).__name__}: {err}",
                  "log": str(folder / "error.log"), "finished": time.time(), "seconds": time.time() - started}
    else:
        status = {**running, "state": "done", "finished": time.time(), "seconds": time.time() - started}
    store.write_json(folder / "status.json", status)
    return status
