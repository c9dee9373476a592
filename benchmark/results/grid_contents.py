"""A grid's store read whole, for rendering: ``gather(grid_dir)`` reads every chosen run's spec,
status, environment, training curve, ERF maps and example images, the per-image scores and the
tuning choice, and collects the unreadable files as problems instead of failing (a run with a
broken file is left out and named). The renderer composes tables and figures from the result and
reads nothing else."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from benchmark.results import health, store
from benchmark.results.store import RunState


@dataclass
class GridContents:
    metadata: dict                                           # grid.json
    index: pd.DataFrame                                      # store.load_index: per (run, task)
    specs: list[dict] = field(default_factory=list)          # each readable chosen run's spec.json
    erf_maps: dict[str, list] = field(default_factory=dict)  # label -> the per-image maps of all its seeds
    curves: dict[str, list] = field(default_factory=dict)    # label -> its runs' training curves
    examples: dict[str, dict] = field(default_factory=dict)  # label -> its first finished run's example images
    records: list[dict] = field(default_factory=list)        # what each run ran with, for the provenance line
    scores: pd.DataFrame | None = None                       # per test image (store.load_image_scores)
    tuning: dict | None = None                               # a tuned grid's choice (tuning.json)
    problems: list[str] = field(default_factory=list)        # unreadable store files, named


def _curve(folder: Path, spec: dict, status: dict) -> dict | None:
    """One run's training curve for the curves figure, or None before its first checkpoint."""
    log = store.read_train_log(folder)
    if log is None:
        return None
    summary = store.read_train_summary(folder) or {}
    return {"seed": spec["config"].get("seed"), "log": log, "val_input_psnr": summary.get("val_input_psnr"),
            "learned": health.learned(status),
            "spikes": [s["iteration"] for s in summary.get("loss_spikes", [])]}


def gather(grid_dir) -> GridContents:
    """Everything the renderer shows of the grid in ``grid_dir`` (a tuned grid: its chosen candidates)."""
    grid_dir = Path(grid_dir)
    metadata = store.read_grid(grid_dir)
    contents = GridContents(metadata, store.load_index(grid_dir))
    for run in store.chosen_runs(grid_dir, metadata):
        folder = grid_dir / run["folder"]
        try:
            spec = store.read_spec(folder)
            maps = store.read_erf(folder)
            status = store.read_status(folder)
            curve = _curve(folder, spec, status) if spec else None
            if status["state"] == RunState.DONE and run["label"] not in contents.examples:
                examples = store.read_examples(folder)
                if examples is not None:
                    contents.examples[run["label"]] = {"label": run["label"], "examples": examples, "id": run["id"]}
            contents.records.append({"label": run["label"], "seed": (spec or {}).get("config", {}).get("seed"),
                                     "status": status, "environment": store.read_environment(folder),
                                     "model": (spec or {}).get("model")})
        except store.StoreError as err:
            contents.problems.append(str(err))
            continue
        if spec:
            contents.specs.append(spec)
        if maps is not None:
            contents.erf_maps.setdefault(run["label"], []).extend(maps)
        if curve is not None:
            contents.curves.setdefault(run["label"], []).append(curve)
    contents.scores = store.load_image_scores(grid_dir, contents.problems)
    if metadata.get("tune"):
        contents.tuning = store.read_tuning(grid_dir)
    return contents
