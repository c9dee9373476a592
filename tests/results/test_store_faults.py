"""The run store under faults (issue 18): unreadable files, a full disk, interrupted writes, modes.

Each case corrupts a copy of one finished two-run smoke store and checks that ``status`` and
``render`` carry on (the broken run shown as such, the file named), and that rerunning the grid's
command repairs the run with the same scores (training is deterministic on a CPU)."""
import errno
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.figure
import pytest

from benchmark.results import health, store
from benchmark import render
from benchmark.harness import run, status
from benchmark.harness.grid import load_grid
from tests.helpers import ROOT, TINY, TWO_CELLS, grid_file


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pristine")
    path = grid_file(tmp, TWO_CELLS, "faults")
    assert run.main(_argv(tmp, path)) == 0
    return tmp, path


def _argv(tmp: Path, grid: Path) -> list[str]:
    return (["--grid", str(grid), "--out", str(tmp / "runs"), "--tables", str(tmp / "tables"), "--quiet", "--jobs", "1"]
            + [a for o in TINY for a in ("--set", o)])


@pytest.fixture
def copy(pristine, tmp_path):
    """(argv, grid store, run folders) of a fresh copy of the pristine store."""
    source, grid = pristine
    shutil.copytree(source / "runs", tmp_path / "runs")
    shutil.copytree(source / "tables", tmp_path / "tables")
    grid_dir = tmp_path / "runs" / "faults"
    folders = [grid_dir / s.folder_name for s in load_grid(grid, "smoke", TINY).specs]
    return _argv(tmp_path, grid), grid_dir, folders


def _fail(folder: Path) -> None:
    """Mark a finished run failed, as a crashed attempt leaves it."""
    store.write_json(folder / "status.json", {**store.read_status(folder), "state": "failed", "reason": "crash"})


CORRUPTIONS = {
    "status.json": lambda f: (f / "status.json").write_text('{"state": "do'),
    "spec.json": lambda f: (f / "spec.json").write_text("[1, 2]"),
    "erf.npy": lambda f: (f / "erf.npy").write_bytes((f / "erf.npy").read_bytes()[:100]),
    "test.json": lambda f: (f / "test.json").write_text('{"tasks": [1, 2]}'),
    "test_images.csv": lambda f: (f / "test_images.csv").write_text("garbage\n\x00\x01"),
    "profile.json": lambda f: (f / "profile.json").write_text('{"params_m": "many"}'),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_one_unreadable_file_is_named_and_the_others_carry_on(copy, capsys, name):
    argv, grid_dir, folders = copy
    before = store.read_test(folders[0])
    CORRUPTIONS[name](folders[0])
    rows = status.rows(grid_dir)
    assert rows[0]["state"] == "broken" and f"{folders[0] / name}: " in rows[0]["detail"]
    assert rows[1]["state"] in ("done", health.DID_NOT_LEARN)      # finished (6 iterations rarely learn 2 dB)
    table = render.render_grid(grid_dir, argv[argv.index("--tables") + 1])[0].read_text()
    assert "| k=3 | " in table and "broken" in table and str(folders[0] / name) in table
    assert "| Q-Shift | " in table and "| Q-Shift | - | - | broken" not in table
    # the grid's command repairs it: the bad file is named, its stage (only) runs again
    assert run.main(argv) == 0
    assert str(folders[0] / name) in capsys.readouterr().err
    assert store.read_status(folders[0])["state"] == "done" and store.unreadable(folders[0]) is None
    assert store.read_test(folders[0]) == before


def test_lost_best_weights_restart_training_and_give_the_same_scores(copy, capsys):
    argv, grid_dir, folders = copy
    before = store.read_test(folders[0])
    _fail(folders[0])
    for name in ("best.pt", "test.json", "test_images.csv"):
        (folders[0] / name).unlink()
    assert run.main(argv) == 0
    assert f"{folders[0] / 'best.pt'}: missing; training starts over" in capsys.readouterr().err
    assert store.read_json(folders[0] / "train.json")["resumed_from"] == 0
    assert store.read_test(folders[0]) == before


def test_leftover_temporary_files_and_a_stale_error_log_are_removed(copy, capsys):
    argv, grid_dir, folders = copy
    _fail(folders[1])
    leftover = folders[1] / ".checkpoint.pt.tmp-x1y2z3"
    leftover.write_bytes(b"half a checkpoint")
    (folders[1] / "error.log").write_text("Traceback ...")
    assert run.main(argv) == 0
    assert f"{leftover}: removed" in capsys.readouterr().err
    assert not leftover.exists() and not (folders[1] / "error.log").exists()


def test_store_and_table_files_are_group_readable(pristine):
    tmp, _ = pristine
    umask = os.umask(0)
    os.umask(umask)
    files = [p for p in (tmp / "runs").rglob("*") if p.is_file() and p.name != ".lock"]
    files += list((tmp / "tables").iterdir())
    assert len(files) > 20
    assert {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o666 & ~umask)}     # 0644 under umask 022


def test_an_interrupted_figure_keeps_the_previous_one(copy, monkeypatch):
    argv, grid_dir, _ = copy
    figure = Path(argv[argv.index("--tables") + 1]) / "faults_erf.png"
    good = figure.read_bytes()

    def killed_midway(self, target, **kwargs):
        target.write(b"\x89PNG half")
        raise KeyboardInterrupt
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", killed_midway)
    with pytest.raises(KeyboardInterrupt):
        render.render_grid(grid_dir, figure.parent)
    assert figure.read_bytes() == good and not [p for p in figure.parent.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")])
def test_a_failed_write_names_the_file_and_keeps_the_earlier_version(tmp_path, error):
    path = tmp_path / "checkpoint.pt"
    store.write_text(path, "earlier")

    def write(handle):
        handle.write(b"part")
        raise error
    with pytest.raises(store.StoreWriteError, match=f"{path}: could not be written") as caught:
        store.write_with(path, write)
    if isinstance(error, OSError):
        assert "the disk is full" in str(caught.value)
    assert path.read_text() == "earlier" and sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]


def _run_with_file_size_limit(argv: list[str], limit: int) -> subprocess.CompletedProcess:
    """``benchmark.harness.run`` in a process that cannot write files larger than ``limit`` bytes (the
    kernel answers EFBIG, as a full disk answers ENOSPC)."""
    script = ("import resource, signal, sys\nsignal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
              f"from benchmark import run\nsys.exit(run.main({argv!r}))\n")
    return subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_writes_that_fail_mark_the_run_failed_and_the_grid_goes_on(copy):
    argv, grid_dir, folders = copy
    for folder in folders:
        _fail(folder)
        for name in ("checkpoint.pt", "best.pt", "train.json"):
            (folder / name).unlink()
    result = _run_with_file_size_limit(argv, 20_000)                    # checkpoints no longer fit
    assert result.returncode == 1 and "Traceback" not in result.stderr
    for folder in folders:
        state = store.read_status(folder)
        assert state["state"] == "failed" and "StoreWriteError" in state["reason"]
        assert f"{folder}/checkpoint.pt: could not be written" in state["reason"] or \
            f"{folder}/best.pt: could not be written" in state["reason"]
        assert (folder / "error.log").is_file() and not list(folder.glob(".*.tmp-*"))
    assert result.stderr.count(": failed ") == 2


def test_a_disk_too_full_for_status_files_loses_nothing_earlier(copy):
    argv, grid_dir, folders = copy
    table = Path(argv[argv.index("--tables") + 1]) / "faults.md"
    before = {name: (folders[0] / name).read_bytes() for name in ("status.json", "test.json", "erf.npy")}
    good_table = table.read_bytes()
    _fail(folders[1])
    result = _run_with_file_size_limit(argv, 100)                       # not even spec.json fits
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: the table was not rendered: " in result.stderr and "faults_curves.png: could not be written" in result.stderr
    assert f"[2] Q-Shift: failed StoreWriteError: {folders[1]}/spec.json: could not be written" in result.stderr
    assert {name: (folders[0] / name).read_bytes() for name in before} == before
    assert table.read_bytes() == good_table
    assert store.read_status(folders[1])["state"] == "failed"           # the earlier status, intact
    assert not [p for p in Path(table.parent).iterdir() if p.name.startswith(".")]


def test_status_imports_neither_torch_nor_the_models(copy):
    _, grid_dir, folders = copy
    store.write_json(folders[0] / "slurm.json", {"job_id": "999999", "stderr": "x"})    # a SLURM run as well
    script = ("import sys\nfrom benchmark import status\nstatus.main([sys.argv[1]])\n"
              "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'models'))\n"
              "print('loaded:', loaded)\n")
    out = subprocess.run([sys.executable, "-c", script, str(grid_dir)], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert re.search(r"\| 1 \| k=3 \| (done|did not learn) \|", out.stdout) and "loaded: []" in out.stdout


def test_the_console_script_dispatches_to_each_command(copy, capsys):
    from benchmark import cli
    _, grid_dir, _ = copy
    assert cli.main(["status", str(grid_dir)]) == 0
    assert re.search(r"\| 1 \| k=3 \| (done|did not learn) \|", capsys.readouterr().out)
    assert cli.main(["nope"]) == 2 and "unknown command 'nope'; expected one of run, status" in capsys.readouterr().err
    assert cli.main(["--help"]) == 0 and "medir-bench run --grid" in capsys.readouterr().out
