"""A grid's store -> MLflow: one MLflow experiment per grid (``medir-bench/<grid>``), one MLflow run
per store run that finished or failed, logged once.

What a run carries:
- parameters: its resolved configuration, flattened (``train.lr``, ``model.options.shift_kernel``);
- metrics: its training curves (``train_log.csv``: loss, grad_norm, lr, val_psnr, by iteration) and
  its test scores (``test.<task>.psnr`` ..., and the inputs' as ``test.<task>.input_psnr``);
- tags: the grid, row label, seed, run id, state (``done``, ``stale``: done with other code than the
  current, ``failed`` with its reason), health verdict, code hash, commit, machine;
- artifacts: the grid's table and figures (``<tables>/<grid>.md`` and ``<grid>_*.png``) when present.

Logged once: each MLflow run is tagged with the store run's id and the time it finished; an export
that finds that pair in the experiment skips the run, so exporting again adds nothing, and a run
that was redone (a new finish time) is logged anew. Nothing is read back into the store.
"""
from __future__ import annotations

from pathlib import Path

from benchmark.base import provenance
from benchmark.results import store
from benchmark.results.store import RunState

DEFAULT_URI = "sqlite:///mlflow.db"
ARTIFACTS = "mlartifacts"             # beside the default local store
CURVES = ("loss", "grad_norm", "lr", "val_psnr")
BATCH = 900                           # MLflow takes at most 1,000 metrics per log_batch call
PARAMS_BATCH = 100                    # and at most 100 parameters


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """``{"train": {"lr": 1e-4}}`` -> ``{"train.lr": "0.0001"}`` (values as MLflow keeps them: text)."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)
    return out


def _state(status: dict, environment: dict | None, model: str | None) -> str:
    if status.get("state") == RunState.DONE and provenance.is_stale(status, environment, model):
        return "stale"
    return status.get("state", RunState.PENDING)


def _experiment(client, name: str, uri: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    local = uri.startswith("sqlite:") or uri.startswith("file:")
    return client.create_experiment(name, artifact_location=Path(ARTIFACTS).resolve().as_uri() if local else None)


def _logged(client, experiment: str) -> set[tuple[str, str]]:
    """(store run id, finish time) of every run already in the experiment."""
    runs = client.search_runs([experiment], max_results=50_000)
    return {(r.data.tags.get("medir.run_id"), r.data.tags.get("medir.finished", "")) for r in runs}


def _metrics(folder: Path, timestamp: int) -> list:
    from mlflow.entities import Metric
    out = []
    log = store.read_train_log(folder)
    if log is not None:
        for column in CURVES:
            if column in log:
                points = log.dropna(subset=[column])
                out += [Metric(column, float(v), timestamp, int(i)) for i, v in zip(points["iteration"], points[column])]
    for task, scores in ((store.read_test(folder) or {}).get("tasks") or {}).items():
        out += [Metric(f"test.{task}.{key}", float(value), timestamp, 0) for key, value in scores.items()
                if isinstance(value, (int, float))]
    return out


def export_grid(grid_dir, tracking_uri: str = DEFAULT_URI, tables="tables") -> tuple[int, int]:
    """Log the grid's finished and failed runs not yet in the tracking store; returns (logged,
    already there)."""
    from mlflow.entities import Param, RunTag
    from mlflow.tracking import MlflowClient
    grid_dir, tables = Path(grid_dir), Path(tables)
    metadata = store.read_grid(grid_dir)
    client = MlflowClient(tracking_uri)
    experiment = _experiment(client, f"medir-bench/{metadata['name']}", tracking_uri)
    already = _logged(client, experiment)
    artifacts = [p for p in [tables / f"{metadata['name']}.md", *sorted(tables.glob(f"{metadata['name']}_*.png"))]
                 if p.is_file()]
    logged = kept = 0
    for run in metadata["runs"]:
        folder = grid_dir / run["folder"]
        status = store.run_state(folder)
        if status["state"] not in (RunState.DONE, RunState.FAILED):
            continue
        finished = str(status.get("finished", ""))
        if (run["id"], finished) in already:
            kept += 1
            continue
        spec = store.read_spec(folder) or {}
        environment = store.read_environment(folder) or {}
        config = spec.get("config", {})
        health = status.get("health") or {}
        tags = {"medir.grid": metadata["name"], "medir.label": run["label"], "medir.seed": str(config.get("seed")),
                "medir.run_id": run["id"], "medir.finished": finished, "medir.state": _state(status, environment, spec.get("model")),
                "medir.reason": status.get("reason", ""), "medir.health": health.get("verdict", ""),
                "medir.code_hash": status.get("code_hash", ""), "medir.commit": environment.get("git_commit") or "",
                "medir.machine": environment.get("cpu") or environment.get("platform") or "",
                "medir.candidate": run.get("candidate", ""), "medir.scale": metadata.get("scale", "")}
        started = int(float(status.get("finished") or 0) * 1000) or None
        mlflow_run = client.create_run(experiment, start_time=started,
                                       run_name=f"{run['label']} (seed {config.get('seed')})",
                                       tags={k: v for k, v in tags.items() if v})
        run_id = mlflow_run.info.run_id
        params = [Param(k, v[:6000]) for k, v in flatten(config).items()]
        metrics = _metrics(folder, started or 0) if status["state"] == RunState.DONE else []
        for start in range(0, len(params), PARAMS_BATCH):
            client.log_batch(run_id, params=params[start:start + PARAMS_BATCH])
        for start in range(0, len(metrics), BATCH):
            client.log_batch(run_id, metrics=metrics[start:start + BATCH])
        if status.get("reason"):                              # a failed run's reason, shown as its note
            client.log_batch(run_id, tags=[RunTag("mlflow.note.content", status["reason"])])
        for path in artifacts:
            client.log_artifact(run_id, str(path))
        client.set_terminated(run_id, "FINISHED" if status["state"] == RunState.DONE else "FAILED")
        logged += 1
    return logged, kept
