"""``python -m benchmark.margins``: every run of a grid trained under three reduction orders, each
in its own store, and a table of their validation gains against the margin."""
import pytest

from benchmark.harness import margins
from benchmark.harness.grid import load_grid
from benchmark.results import store
from tests.helpers import TINY, grid_file

ONE = "  zip:\n    label: [A, B]\n    model.options: [{shift_kernel: 3}, {shift: quad}]\n  seed: [0]\n"


def test_each_run_trains_in_each_setting_and_the_table_reads_their_gains(tmp_path, capsys):
    path = grid_file(tmp_path, ONE, "orders")
    argv = ["--grid", str(path), "--out", str(tmp_path / "margins"), "--rows", "A", "--margin", "-100"]
    argv += [a for o in TINY for a in ("--set", o)]
    assert margins.main(argv) == 0                                  # every gain clears -100 dB
    spec = next(s for s in load_grid(path, "smoke", TINY).specs if s.label == "A")
    gains = []
    for setting in margins.SETTINGS:
        folder = tmp_path / "margins" / setting / "orders" / spec.folder_name
        status = store.run_state(folder)
        assert status["state"] == "trained" and not (folder / "test.json").exists()   # trained only
        gains.append(status["health"]["val_gain_db"])
    assert not list((tmp_path / "margins" / "threads-1" / "orders").glob("b-*"))
    table = (tmp_path / "margins" / "orders_margins.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| A |"))
    assert [f"{g:+.2f}" for g in gains] == [c.strip() for c in row.split("|")[3:6]]
    assert f"{min(gains):+.2f}" in row and "yes (>= -100.0)" in row
    assert "| B |" not in table                                      # --rows
    capsys.readouterr()
    assert margins.main([a if a != "-100" else "100" for a in argv]) == 1          # the runs are not trained again
    assert "**no** (< +100.0)" in capsys.readouterr().out


def test_a_tuned_grid_needs_its_store_and_an_unknown_row_is_named(tmp_path, capsys):
    tuned = grid_file(tmp_path, ONE + "tune: {train.lr: [4.0e-3, 1.0e-3]}\n", "tuned")
    assert margins.main(["--grid", str(tuned), "--out", str(tmp_path / "m")]) == 2
    assert "give --store" in capsys.readouterr().err
    plain = grid_file(tmp_path, ONE, "plain")
    assert margins.main(["--grid", str(plain), "--rows", "C", "--out", str(tmp_path / "m")]) == 2
    assert "unknown row(s) C; expected some of A, B" in capsys.readouterr().err


@pytest.mark.parametrize("status,expected", [
    ({"state": "trained", "health": {"val_gain_db": 2.5}}, (2.5, "")),
    ({"state": "done", "health": {"val_gain_db": 3.0, "tasks": {"mri_sr": {"val_gain_db": 4.0},
                                                                "ct_denoise": {"val_gain_db": 1.0}}}}, (1.0, "ct_denoise")),
    ({"state": "failed", "reason": "boom"}, (None, "boom")),
])
def test_a_runs_gain_is_its_smallest_tasks(status, expected):
    assert margins.gain(status) == expected
