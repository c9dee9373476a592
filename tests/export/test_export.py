"""The MLflow export, against a real local MLflow store read back with MLflow's own client."""
from pathlib import Path

import pytest

mlflow = pytest.importorskip("mlflow", reason="MLflow is an optional extra: pip install -e \".[track]\"")
pytest.importorskip("sqlalchemy", reason="MLflow's local store needs SQLAlchemy: pip install -e \".[track]\"")

from benchmark.export import tracking  # noqa: E402
from benchmark.harness.config import resolve  # noqa: E402
from benchmark.export.__main__ import main  # noqa: E402
from benchmark.render import render_grid  # noqa: E402
from benchmark.results import store  # noqa: E402
from tests.helpers import marked_figures_store  # noqa: E402


def test_export_logs_each_finished_run_once_with_params_curves_tags_and_artifacts(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                   # the default store and artifacts land in the working folder
    grid_dir = marked_figures_store(tmp_path / "runs")
    render_grid(grid_dir, tmp_path / "tables")
    status = store.read_json(grid_dir / "a-run" / "status.json")    # A: made by other code -> exported as stale
    store.write_json(grid_dir / "a-run" / "status.json", {**status, "code_hash": "0" * 12})
    assert main(["mlflow", str(grid_dir), "--tables", str(tmp_path / "tables")]) == 0
    client = mlflow.tracking.MlflowClient(tracking.DEFAULT_URI)
    experiment = client.get_experiment_by_name("medir-bench/figs")
    runs = {r.data.tags["medir.label"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"A", "B"}
    a, b = runs["A"], runs["B"]
    assert a.data.tags["medir.state"] == "stale" and b.data.tags["medir.state"] == "done"
    assert b.data.tags["medir.health"] == "did not learn" and a.data.tags["medir.health"] == "learned"
    assert a.data.params["train.iters"] == str(resolve("smoke")["train"]["iters"])       # the stored configuration's
    assert a.data.params["model.name"] == "restore_rwkv"
    assert a.data.metrics["test.mri_sr.psnr"] == pytest.approx(27.5)
    losses = client.get_metric_history(a.info.run_id, "loss")
    log = store.read_train_log(grid_dir / "a-run")
    assert [m.step for m in losses] == list(log["iteration"]) and losses[-1].value == pytest.approx(log["loss"].iloc[-1])
    assert len(client.get_metric_history(a.info.run_id, "val_psnr")) == log["val_psnr"].notna().sum() == 9
    names = {f.path for f in client.list_artifacts(a.info.run_id)}
    assert {"figs.md", "figs_curves.png", "figs_compare.png"} <= names
    # again: nothing new; a failed run is exported with its state and reason
    store.write_json(grid_dir / "b-run" / "status.json", {"state": "failed", "id": "b-run", "finished": 2.0,
                                                          "reason": "TrainingDiverged: the loss became nan"})
    logged, kept = tracking.export_grid(grid_dir, tracking.DEFAULT_URI, tmp_path / "tables")
    assert (logged, kept) == (1, 1), (logged, kept)
    failed = [r for r in client.search_runs([experiment.experiment_id]) if r.data.tags["medir.state"] == "failed"]
    assert len(failed) == 1 and failed[0].data.tags["medir.reason"] == "TrainingDiverged: the loss became nan"
    assert failed[0].info.status == "FAILED"
    assert tracking.export_grid(grid_dir, tracking.DEFAULT_URI, tmp_path / "tables") == (0, 2)
    assert Path("mlflow.db").is_file()


def test_flatten_names_every_leaf_by_its_dotted_key():
    assert tracking.flatten({"train": {"lr": 1e-4, "betas": [0.9, 0.99]}, "model": {"options": {}}, "seed": 0}) == {
        "train.lr": "0.0001", "train.betas": "[0.9, 0.99]", "model.options": "{}", "seed": "0"}


def test_export_of_a_missing_store_is_an_error(tmp_path, capsys):
    assert main(["mlflow", str(tmp_path / "nothing"), "--tracking-uri", f"sqlite:///{tmp_path}/m.db"]) == 2
    assert "not a grid store" in capsys.readouterr().err
