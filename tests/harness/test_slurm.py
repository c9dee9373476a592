"""Grids on a real SLURM cluster through submitit (``slurm/dev-cluster/start.sh`` brings one up;
CI starts it before the tests). Skipped where ``sinfo`` is not available."""
import subprocess
import time
from pathlib import Path

import pytest

from benchmark.harness import run, status
from benchmark.results import store
from benchmark.harness.executors import slurm
from benchmark.harness.grid import load_grid
from tests.helpers import TINY, slurm_unavailable



WHY_NOT = slurm_unavailable()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT)]

# long enough to be cancelled or preempted mid-training (batch 4: the steps of the old smoke scale)
LONG = [o for o in TINY if not o.startswith(("train.iters", "train.val_every"))] + [
    "train.iters=400", "train.batch=4", "train.val_every=200", "train.checkpoint_every=10"]


@pytest.fixture(scope="module", autouse=True)
def cluster_is_up():
    try:
        ok = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        pytest.fail(f"sinfo is installed but does not answer: {err}")
    assert ok.returncode == 0 and ok.stdout.strip(), f"SLURM is not up: {ok.stderr}"


def grid_file(tmp_path, labels_options: str, name: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\ntable: 8\nbase:\n  task: mri_sr\n  model: {{name: restore_rwkv}}\naxes:\n"
                    f"  zip:\n{labels_options}")
    return path


def argv(path: Path, tmp_path: Path, settings: list[str], *extra: str) -> list[str]:
    return ["--grid", str(path), "--out", str(tmp_path / "runs"), "--tables", str(tmp_path / "tables"), "--quiet",
            "--executor", "slurm", "--cluster", "dev", *extra] + [a for o in settings for a in ("--set", o)]


def wait_for(condition, timeout: float = 180.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.5)


def training_started(folder: Path, iterations: int = 20):
    def check():
        log = folder / "train_log.csv"
        return log.is_file() and len(log.read_text().splitlines()) > iterations
    return check


def test_a_grid_runs_as_job_arrays_and_renders(tmp_path, capsys):
    path = grid_file(tmp_path, "    label: [k=1, k=3, k=5, Q-Shift]\n    model.options: [{shift_kernel: 1}, "
                               "{shift_kernel: 3}, {shift_kernel: 5}, {shift: quad}]\n", "arrays")
    assert run.main(argv(path, tmp_path, TINY)) == 0
    grid = load_grid(path, "smoke", TINY)
    grid_dir = tmp_path / "runs" / "arrays"
    records = [store.read_json(grid_dir / s.folder_name / "slurm.json") for s in grid.specs]
    assert all(store.run_state(grid_dir / s.folder_name)["state"] == "done" for s in grid.specs)
    # 4 runs, MaxArraySize 3 on the dev cluster: split into two submissions
    arrays = {r["job_id"].split("_")[0] for r in records}
    assert len(arrays) == (2 if slurm.max_array_size() < 4 else 1)
    assert len({r["submitit_folder"] for r in records}) == 1
    assert set(slurm.job_states([r["job_id"] for r in records]).values()) == {"COMPLETED"}
    table = (tmp_path / "tables" / "arrays.md").read_text()
    assert all(f"| {label} |" in table for label in ("k=1", "k=3", "k=5", "Q-Shift"))
    capsys.readouterr()
    assert status.main([str(grid_dir)]) == 0
    # tiny runs may finish as "did not learn" (training health): every run is finished either way
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    counts = {state: int(n) for n, state in (part.split(" ", 1) for part in summary.split(", "))}
    assert set(counts) <= {"done", "did not learn"} and sum(counts.values()) == 4
    # a second invocation submits nothing: every run is done
    assert run.main(argv(path, tmp_path, TINY)) == 0
    assert [store.read_json(grid_dir / s.folder_name / "slurm.json") for s in grid.specs] == records


def submit_long_run(tmp_path, name: str, kernel: int):
    """Submit a one-run grid without waiting; returns (path, grid, run folder, job id) once the run
    is past its 20th iteration."""
    path = grid_file(tmp_path, f"    label: [k={kernel}]\n    model.options: [{{shift_kernel: {kernel}}}]\n", name)
    grid = load_grid(path, "smoke", LONG)
    folder = tmp_path / "runs" / name / grid.specs[0].folder_name
    assert run.main(argv(path, tmp_path, LONG, "--no-wait")) == 0
    wait_for(training_started(folder))
    return path, grid, folder, store.read_json(folder / "slurm.json")["job_id"]


def test_a_cancelled_job_is_reported_failed_and_a_resubmission_completes_it(tmp_path):
    path, grid, folder, job = submit_long_run(tmp_path, "cancelled", 3)
    subprocess.run(["scancel", job], check=True)
    result = slurm.wait(grid.specs, tmp_path / "runs" / "cancelled", grace_s=3)[grid.specs[0].id]
    assert result["state"] == "failed" and f"SLURM job {job} ended CANCELLED" in result["reason"]
    assert store.run_state(folder)["state"] == "failed"
    # the same command again: resubmitted (a fresh submitit folder), resumed from the checkpoint
    assert run.main(argv(path, tmp_path, LONG)) == 0
    record = store.read_json(folder / "slurm.json")
    assert record["job_id"] != job and store.run_state(folder)["state"] == "done"
    assert store.read_json(folder / "train.json")["resumed_from"] >= 20


def test_a_preempted_job_is_requeued_and_resumes_from_its_checkpoint(tmp_path):
    _, grid, folder, job = submit_long_run(tmp_path, "preempted", 5)
    # what a preemption looks like to the job: SIGTERM, then submitit's USR2 (checkpoint + requeue)
    subprocess.run(["scancel", job, "--signal", "SIGTERM"], check=True)
    subprocess.run(["scancel", job, "--signal", "USR2"], check=True)

    def requeued():
        out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True)
        return out.stdout.strip() == "PENDING"
    wait_for(requeued, 60)
    # SLURM holds a requeued job back for about two minutes; the dev cluster need not wait
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
    result = slurm.wait(grid.specs, tmp_path / "runs" / "preempted", grace_s=3)[grid.specs[0].id]
    assert result["state"] == "done"
    assert store.read_json(folder / "slurm.json")["job_id"] == job          # the same job, requeued
    assert store.read_json(folder / "train.json")["resumed_from"] >= 20
    assert store.run_state(folder)["attempts"] == 2
    log = Path(store.read_json(folder / "slurm.json")["stderr"]).read_text()
    assert "preempted" in log or "requeu" in log.lower()


def test_a_model_from_the_researchers_file_runs_in_the_job(tmp_path, monkeypatch):
    """The job imports the researcher's file (the grid's imports:) and records it."""
    from tests.helpers import OWN_MODEL as MODEL
    (tmp_path / "net.py").write_text(MODEL.format(name="slurm_net"))
    path = tmp_path / "own.yaml"
    path.write_text("name: own\nimports: [net.py]\nbase: {task: mri_sr}\naxes:\n  zip:\n    label: [Mine]\n"
                    "    model.name: [slurm_net]\n")
    monkeypatch.setenv("MEDIR_BENCH_IMPORTS", "")                # restored after the test
    grid = load_grid(path, "smoke", TINY)
    assert run.main(argv(path, tmp_path, TINY)) == 0
    folder = tmp_path / "runs" / "own" / grid.specs[0].folder_name
    assert store.run_state(folder)["state"] == "done"
    imported = store.read_json(folder / "environment.json")["imports"]
    assert [i["file"] for i in imported] == [str(tmp_path / "net.py")]
    assert "| Mine |" in (tmp_path / "tables" / "own.md").read_text()


def test_a_tuned_grid_trains_its_candidates_then_tests_the_choice_as_job_arrays(tmp_path):
    """tune: on SLURM: with --no-wait the first command submits the candidates' first rung (trained
    only), the same command run again waits, halves (the edge extension, the last rung), chooses on
    validation and submits the chosen candidate's test."""
    path = grid_file(tmp_path, "    label: [k=3]\n    model.options: [{shift_kernel: 3}]\n"
                               "tune: {train.lr: [4.0e-3, 1.0e-3]}\n", "tuned")
    grid = load_grid(path, "smoke", TINY)
    assert run.main(argv(path, tmp_path, TINY, "--no-wait")) == 0           # the candidates, submitted
    grid_dir = tmp_path / "runs" / "tuned"
    assert store.read_tuning(grid_dir) is None
    assert run.main(argv(path, tmp_path, TINY)) == 0                         # waits, chooses, tests the choice
    choice = store.read_tuning(grid_dir)["k=3"]
    runs = store.read_grid(grid_dir)["runs"]                                  # the grid's and the edge extension
    assert {r["id"] for r in runs} > {s.id for s in grid.specs} and choice["extension"]
    for entry in runs:
        folder = grid_dir / entry["folder"]
        chosen = entry["candidate"] == choice["chosen"]
        assert store.read_json(folder / "slurm.json")["job_id"]
        assert store.run_state(folder)["state"] == ("done" if chosen else "partial")   # losers stopped at rung 0
        assert (folder / "test.json").is_file() == chosen
    assert (tmp_path / "tables" / "tuned.md").is_file()
