"""The harness end to end: a smoke grid in a temporary folder, its artifacts, resume after a kill,
failures that do not stop the grid, parallel workers, determinism."""
import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

import models
from benchmark.harness import config as cfg
from benchmark.measure import costs
from benchmark.harness import run
from benchmark.results import store
from benchmark.data import dataset, sources
from benchmark.harness.grid import load_grid
from benchmark.harness.pipeline import run_spec
from benchmark.base.vocabulary import RANGES as cfg_ranges
from benchmark.harness.train import learning_rate
from tests.helpers import ROOT, TINY, TWO_CELLS, float64_spread, grid_file

# a few iterations on 32x32 phantoms: seconds per run on a 2-core CPU
@pytest.fixture(scope="module")
def smoke_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("smoke")
    path = grid_file(tmp, TWO_CELLS)
    argv = ["--grid", str(path), "--out", str(tmp / "runs"), "--tables", str(tmp / "tables"), "--quiet", "--jobs", "1"]
    code = run.main(argv + [a for o in TINY for a in ("--set", o)])
    return tmp, load_grid(path, "smoke", TINY), code


def test_a_smoke_grid_writes_every_artifact(smoke_store):
    tmp, grid, code = smoke_store
    assert code == 0
    grid_dir = tmp / "runs" / "two"
    assert json.loads((grid_dir / "grid.json").read_text())["runs"][1]["label"] == "Q-Shift"
    for spec in grid.specs:
        folder = grid_dir / spec.folder_name
        for name in ("spec.json", "environment.json", "status.json", "checkpoint.pt", "best.pt", "train.json",
                     "train_log.csv", "test.json", "test_images.csv", "profile.json", "erf.npy"):
            assert (folder / name).is_file(), name
        assert store.run_state(folder)["state"] == "done"
        assert store.read_json(folder / "spec.json")["config"] == spec.config
        env = store.read_json(folder / "environment.json")
        assert env["backends"]["wkv"] in ("cpp", "torch") and env["seed"] == 0 and "git_commit" in env
        assert list(env["backends"]) == ["wkv"]                   # the ops this model calls, none other
        assert store.read_json(folder / "train.json")["wkv_backends"] == [env["backends"]["wkv"]]   # from the model
        with open(folder / "train_log.csv") as f:
            log = list(csv.DictReader(f))
        assert [int(r["iteration"]) for r in log] == list(range(1, 7))
        assert [r["val_psnr"] != "" for r in log] == [False, False, True, False, False, True]
        test = store.read_json(folder / "test.json")["tasks"]["mri_sr"]
        assert test["images"] == 2 and np.isfinite([test["psnr"], test["ssim"], test["rmse"]]).all()
        erf = np.load(folder / "erf.npy")
        assert erf.shape == (2, 24, 24) and (erf >= 0).all() and erf.sum() > 0     # one map per image
        # the profile equals the profiler's own functions on a fresh model of the spec
        model = models.create_model("restore_rwkv_tiny", **spec.config["model"]["options"])
        prof = store.read_json(folder / "profile.json")
        assert prof["params_m"] == pytest.approx(costs.count_params(model))
        assert prof["paper_gmacs"] == pytest.approx(costs.count_macs(model, (1, 1, 32, 32))[0])
        assert prof["uncounted"] == [] and prof["latency_ms"] > 0
    table = (tmp / "tables" / "two.md").read_text()
    assert "| k=3 |" in table and "| Q-Shift |" in table and "| k=5 | 0.1827 | 0.2610 | not run |" not in table
    assert "| k=9 |" in table and "not run" in table                      # the paper's rows the grid left out
    assert (tmp / "tables" / "two_erf.png").stat().st_size > 1000
    index = store.load_index(grid_dir)
    assert list(index["label"]) == ["k=3", "Q-Shift"] and set(index["state"]) == {"done"}


def test_test_scores_match_an_independent_recomputation(smoke_store):
    """Per-image PSNR of the stored best weights, recomputed with scikit-image."""
    tmp, grid, _ = smoke_store
    spec = grid.specs[0]
    folder = tmp / "runs" / "two" / spec.folder_name
    model = models.create_model("restore_rwkv_tiny", **spec.config["model"]["options"])
    model.load_state_dict(torch.load(folder / "best.pt", weights_only=True))
    model.reparameterize().eval()
    with open(folder / "test_images.csv") as f:
        rows = list(csv.DictReader(f))
    data = dataset.open_dataset("phantom-mri", "test", phantom_size=32)
    assert len(rows) == spec.config["test"]["images"] == 2     # every test image asked for is scored (an empty CSV fails)
    low, high = cfg_ranges["mri"]
    for row in rows:
        sample = data[int(row["index"])]
        with torch.no_grad():
            out = model(sample["lq"][None])[0, 0].double().numpy()
        pred, gt = dataset.denormalize(out, "mri"), dataset.denormalize(sample["hq"][0].double().numpy(), "mri")
        expected = peak_signal_noise_ratio(gt, pred, data_range=gt.max() - gt.min())
        # the run's float32 output may differ from this one by the model's float32 error (another
        # process, another thread count): PSNR moves by at most 20 / ln 10 x that error / RMSE
        spread = float64_spread(model, sample["lq"][None]) * (high - low)
        rmse = float(np.sqrt(np.mean((gt - pred) ** 2)))
        assert float(row["psnr"]) == pytest.approx(expected, abs=20 / np.log(10) * spread / rmse + 1e-9)
        lq = dataset.denormalize(sample["lq"][0].double().numpy(), "mri")
        assert float(row["input_psnr"]) == pytest.approx(peak_signal_noise_ratio(gt, lq, data_range=gt.max() - gt.min()))


def test_a_second_invocation_redoes_nothing(smoke_store):
    tmp, grid, _ = smoke_store
    folder = tmp / "runs" / "two" / grid.specs[0].folder_name
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert run_spec(grid.specs[0], tmp / "runs" / "two")["state"] == "done"
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before


def test_same_spec_and_seed_give_identical_metrics(smoke_store, tmp_path):
    tmp, grid, _ = smoke_store
    status = run_spec(grid.specs[1], tmp_path, progress=False)
    assert status["state"] == "done"
    again = store.read_json(tmp_path / grid.specs[1].folder_name / "test.json")
    first = store.read_json(tmp / "runs" / "two" / grid.specs[1].folder_name / "test.json")
    assert again == first


def test_failed_runs_are_recorded_and_the_grid_goes_on(tmp_path):
    cells = ("  zip:\n    label: [good, diverges, missing data]\n"
             "    train.lr: [0.002, 1.0e+30, 0.002]\n    model.name: [restore_rwkv, srcnn, restore_rwkv]\n"
             f"    data.sources.mri_sr: [phantom-mri, phantom-mri, {tmp_path / 'nowhere'}]\n")
    path = grid_file(tmp_path, cells, "failing")
    argv = ["--grid", str(path), "--out", str(tmp_path / "runs"), "--tables", str(tmp_path / "tables"), "--quiet"]
    assert run.main(argv + [a for o in TINY for a in ("--set", o)]) == 1
    grid = load_grid(path, "smoke", TINY)
    states = [store.run_state(tmp_path / "runs" / "failing" / s.folder_name) for s in grid.specs]
    assert [s["state"] for s in states] == ["done", "failed", "failed"]
    assert "TrainingDiverged: diverged at iteration " in states[1]["reason"]
    assert "not a prepared dataset" in states[2]["reason"] and "nowhere" in states[2]["reason"]
    assert Path(states[2]["log"]).read_text().startswith("Traceback")
    table = (tmp_path / "tables" / "failing.md").read_text()
    assert "| diverges | " in table and "failed" in table and "- missing data: DataError" in table


def _wait_for(condition, timeout: float = 240.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        if time.time() > deadline:
            raise TimeoutError("the condition was not met in time")
        time.sleep(0.2)


def test_killed_grid_resumes_from_checkpoints_without_redoing_finished_runs(tmp_path):
    settings = [o for o in TINY if not o.startswith(("train.iters", "train.val_every"))]
    settings += ["train.iters=300", "train.val_every=100", "train.checkpoint_every=5"]
    path = grid_file(tmp_path, TWO_CELLS, "killed")
    grid = load_grid(path, "smoke", settings)
    grid_dir = tmp_path / "runs" / "killed"
    first, second = (grid_dir / s.folder_name for s in grid.specs)
    argv = [sys.executable, "-m", "benchmark.run", "--grid", str(path), "--out", str(tmp_path / "runs"),
            "--tables", str(tmp_path / "tables"), "--quiet", "--no-render", "--jobs", "1"]
    argv += [a for o in settings for a in ("--set", o)]
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        def mid_training():
            log = second / "train_log.csv"
            return log.is_file() and len(log.read_text().splitlines()) > 11    # past iteration 10 of 300
        _wait_for(mid_training)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert store.run_state(first)["state"] == "done"
    assert store.run_state(second)["state"] == "running"
    finished = {p.name: p.stat().st_mtime_ns for p in first.iterdir()}
    assert run.main(argv[3:]) == 0                                            # the same command again
    assert {p.name: p.stat().st_mtime_ns for p in first.iterdir()} == finished
    summary = store.read_json(second / "train.json")
    assert summary["resumed_from"] >= 10 and store.run_state(second)["attempts"] == 2
    # the resumed run ends with exactly the weights of an uninterrupted one
    reference = tmp_path / "reference"
    assert run_spec(grid.specs[1], reference, progress=False)["state"] == "done"
    resumed = torch.load(second / "best.pt", weights_only=True)
    straight = torch.load(reference / grid.specs[1].folder_name / "best.pt", weights_only=True)
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[k], straight[k]) for k in resumed)


def test_parallel_workers_run_the_grid(tmp_path):
    path = grid_file(tmp_path, TWO_CELLS, "parallel")
    argv = ["--grid", str(path), "--out", str(tmp_path / "runs"), "--tables", str(tmp_path / "tables"),
            "--quiet", "--jobs", "2"]
    assert run.main(argv + [a for o in TINY for a in ("--set", o)]) == 0
    grid = load_grid(path, "smoke", TINY)
    assert all(store.run_state(tmp_path / "runs" / "parallel" / s.folder_name)["state"] == "done" for s in grid.specs)
    assert (tmp_path / "tables" / "parallel.md").is_file()


def test_workers_end_when_their_grid_command_is_killed(tmp_path):
    settings = [o for o in TINY if not o.startswith(("train.iters", "train.val_every"))]
    settings += ["train.iters=5000", "train.val_every=1000"]
    path = grid_file(tmp_path, TWO_CELLS, "orphans")
    folders = [tmp_path / "runs" / "orphans" / s.folder_name for s in load_grid(path, "smoke", settings).specs]
    argv = [sys.executable, "-m", "benchmark.run", "--grid", str(path), "--out", str(tmp_path / "runs"),
            "--tables", str(tmp_path / "tables"), "--quiet", "--no-render", "--jobs", "2"]
    parent = subprocess.Popen(argv + [a for o in settings for a in ("--set", o)], cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: all(store.is_live(f) for f in folders))
    finally:
        parent.kill()                                         # SIGKILL: the parent cannot tell its workers
        parent.wait()
    _wait_for(lambda: not any(store.is_live(f) for f in folders), timeout=20)
    assert all(store.run_state(f)["state"] == "running" for f in folders)   # stopped mid-run: resumable


def test_an_all_in_one_prepared_dataset_trains_and_tests_end_to_end(tmp_path):
    from benchmark.data import __main__ as data_cli
    for modality, size in (("mri", 32), ("ct", 40), ("pet", 24)):      # slices of other sizes, as at paper scale
        assert data_cli.main(["prepare", f"phantom-{modality}", "--out", str(tmp_path / modality), "--count", "3", "1",
                              "1", "--size", str(size), "--quiet"]) == 0
    mix = tmp_path / "mix"
    assert data_cli.main(["prepare", "all_in_one", "--from", *(str(tmp_path / m) for m in ("mri", "ct", "pet")),
                          "--out", str(mix)]) == 0
    path = tmp_path / "aio.yaml"
    path.write_text("name: aio\nbase:\n  task: all_in_one\n  model: {name: restore_rwkv}\n"
                    f"  data: {{sources: {{mri_sr: {mix}, ct_denoise: {mix}, pet_synthesis: {mix}}}}}\n")
    argv = ["--grid", str(path), "--out", str(tmp_path / "runs"), "--tables", str(tmp_path / "tables"), "--quiet",
            "--jobs", "1"] + [a for o in TINY for a in ("--set", o)]
    assert run.main(argv) == 0
    folder = tmp_path / "runs" / "aio" / load_grid(path, "smoke", TINY).specs[0].folder_name
    assert sorted(store.read_test(folder)["tasks"]) == ["ct_denoise", "mri_sr", "pet_synthesis"]
    examples = store.read_examples(folder)                     # one per task, cropped to the smallest slice
    assert sorted(set(examples["task"])) == ["ct_denoise", "mri_sr", "pet_synthesis"]
    assert examples["hq"].shape[1:] == (24, 24)


def test_examples_of_other_sizes_are_centre_cropped_to_the_smallest():
    from benchmark.harness.evaluate import common_crop
    images = [np.arange(24).reshape(4, 6), np.arange(6).reshape(2, 3), np.arange(15).reshape(5, 3)]
    cropped = common_crop(images)
    assert [c.shape for c in cropped] == [(2, 3)] * 3
    np.testing.assert_array_equal(cropped[0], [[7, 8, 9], [13, 14, 15]])           # rows 1-2, columns 1-3
    np.testing.assert_array_equal(cropped[1], images[1])
    np.testing.assert_array_equal(cropped[2], [[3, 4, 5], [6, 7, 8]])             # rows 1-2 of 5


def test_every_seed_of_a_grid_is_tested_on_the_same_phantoms():
    """The phantoms depend on data.seed only: two runs that differ by their seed are paired image by
    image; another data seed makes other images."""
    from benchmark.harness.train import TaskData
    base = cfg.resolve("smoke", {"data": {"phantom_size": 32}})
    images = {}
    for seed, data_seed in ((0, 0), (1, 0), (0, 1)):
        config = cfg.merge(base, {"seed": seed, "data": {"seed": data_seed}})
        images[seed, data_seed] = TaskData(config, "test", None).item(3)[1]["hq"]
    assert torch.equal(images[0, 0], images[1, 0])
    assert not torch.equal(images[0, 0], images[0, 1])


def test_learning_rate_warms_up_linearly_then_follows_the_cosine():
    config = {"train": {"iters": 10, "warmup": 4, "lr": 1.0, "lr_min": 0.0}}
    rates = [learning_rate(i, config) for i in range(10)]
    assert rates[:4] == [0.25, 0.5, 0.75, 1.0]
    # after the warm-up: lr_min + (lr - lr_min) (1 + cos(pi (i - 4) / 6)) / 2
    assert rates[4:] == pytest.approx([0.5 * (1 + np.cos(np.pi * k / 6)) for k in range(6)])
    assert learning_rate(0, {"train": {**config["train"], "warmup": 0}}) == 1.0


def test_auto_jobs_use_every_core_without_a_gpu(monkeypatch):
    from benchmark.harness.executors import local
    monkeypatch.setattr(local.torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(local.os, "cpu_count", lambda: 2)
    assert (local.auto_jobs(8), local.auto_jobs(1)) == (2, 1)
    monkeypatch.setattr(local.torch.cuda, "is_available", lambda: True)
    assert local.auto_jobs(8) == 1


def test_bad_grid_exits_with_a_clear_error(tmp_path, capsys):
    path = grid_file(tmp_path, "  seed: [0]\n  model.options.shift: [omin]\n", "bad")
    assert run.main(["--grid", str(path), "--out", str(tmp_path / "runs")]) == 2
    assert "unknown shift 'omin'; expected one of uni, quad, omni" in capsys.readouterr().err


class _Planted:
    """Unpickling this runs a shell command: what a tampered checkpoint could do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("content", ["planted", "truncated", "foreign"])
def test_a_bad_checkpoint_runs_no_code_and_the_run_starts_over(tmp_path, capsys, content):
    path = grid_file(tmp_path, "  seed: [0]\n", "resume")
    spec = load_grid(path, "smoke", TINY).specs[0]
    folder = tmp_path / "runs" / "resume" / spec.folder_name
    folder.mkdir(parents=True)
    marker = tmp_path / "code-ran"
    checkpoint = folder / "checkpoint.pt"
    if content == "planted":
        torch.save({"model": _Planted(marker)}, checkpoint)
    elif content == "truncated":
        torch.save({"model": {"w": torch.zeros(1000)}}, checkpoint)
        checkpoint.write_bytes(checkpoint.read_bytes()[:300])
    else:
        torch.save({"weights": torch.zeros(3)}, checkpoint)
    argv = ["--grid", str(path), "--out", str(tmp_path / "runs"), "--tables", str(tmp_path / "tables"), "--quiet",
            "--jobs", "1"]
    assert run.main(argv + [a for o in TINY for a in ("--set", o)]) == 0
    assert not marker.exists()
    assert f"{checkpoint}: unreadable checkpoint" in capsys.readouterr().err
    assert store.run_state(folder)["state"] == "done" and store.read_json(folder / "train.json")["resumed_from"] == 0


def test_a_run_held_by_another_live_process_is_skipped_untouched(tmp_path, capsys):
    from benchmark.harness import status as status_cli
    path = grid_file(tmp_path, "  seed: [0]\n", "locked")
    spec = load_grid(path, "smoke", TINY).specs[0]
    folder = tmp_path / "runs" / "locked" / spec.folder_name
    argv = ["--grid", str(path), "--out", str(tmp_path / "runs"), "--tables", str(tmp_path / "tables"), "--quiet"]
    argv += [a for o in TINY for a in ("--set", o)]
    # another process holds the run (a child that takes the lock and waits)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from benchmark.results import store\n"
                               f"with store.run_lock({str(folder)!r}):\n    print('held', flush=True); time.sleep(600)"],
                              cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        store.write_json(folder / "status.json", {"state": "running", "pid": holder.pid, "host": os.uname().nodename})
        before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
        for jobs in ("1", "2"):
            assert run.main(argv + ["--jobs", jobs, "--no-render"]) == 1
            assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == before
            assert f"pid {holder.pid} on " in capsys.readouterr().err
        assert store.is_live(folder)
        assert status_cli.rows(tmp_path / "runs" / "locked")[0]["state"] == "running"
    finally:
        holder.kill()
        holder.wait()
    # its process is gone: status says so, and the next command runs it
    assert not store.is_live(folder)
    row = status_cli.rows(tmp_path / "runs" / "locked")[0]
    assert row["state"] == "stopped" and f"pid {holder.pid} is gone" in row["detail"]
    assert run.main(argv + ["--jobs", "1"]) == 0 and store.run_state(folder)["state"] == "done"


def test_each_test_image_records_its_subject(smoke_store):
    """Phantoms are their own subjects: each test image names the phantom it is (the generator's
    seed), so the statistics resample 2 subjects of one image each."""
    tmp, grid, _ = smoke_store
    scores = store.read_image_scores(tmp / "runs" / "two" / grid.specs[0].folder_name)
    cases = [c.name for c in sources.phantom_cases("mri", size=32)["test"]]
    assert list(scores["subject"]) == cases[:2] and scores["subject_recorded"].all()


def test_training_writes_tensorboard_events_named_by_row_and_seed(smoke_store):
    """Read back with TensorBoard's own reader: the loss, gradient norm and learning rate at every
    iteration, the validation PSNR (the train_log's) and SSIM at each validation, and the examples."""
    pytest.importorskip("tensorboard", reason="TensorBoard is an optional extra: pip install -e \".[track]\"")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tmp, grid, _ = smoke_store
    for spec in grid.specs:
        folder = tmp / "runs" / "two" / "tensorboard" / f"{spec.label} (seed 0)"
        events = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
        events.Reload()
        assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 7))
        log = store.read_train_log(tmp / "runs" / "two" / spec.folder_name)
        assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(list(log["loss"]), abs=1e-6)
        validation = log.dropna(subset=["val_psnr"])
        assert [(e.step, round(e.value, 4)) for e in events.Scalars("validation/psnr")] == \
            [(int(i), pytest.approx(v, abs=1e-4)) for i, v in zip(validation["iteration"], validation["val_psnr"])]
        assert [e.step for e in events.Scalars("validation/ssim")] == [3, 6]
        assert {"train/grad_norm", "train/lr"} <= set(events.Tags()["scalars"])
        images = events.Tags()["images"]
        assert images == ["validation/mri_sr (input | output | truth)"]
        assert [e.step for e in events.Images(images[0])] == [3, 6]
