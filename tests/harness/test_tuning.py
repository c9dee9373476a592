"""A grid's ``tune:`` key: every row and seed trains once per candidate, the best validation PSNR
chooses per row, and only the chosen candidate is tested (harness.tuning)."""
import pytest

from benchmark.harness import run, status, tuning
from benchmark.harness.config import ConfigError
from benchmark.harness.grid import load_grid
from benchmark.results import store
from tests.helpers import TINY, grid_file

CELLS = ("  zip:\n    label: [A, B]\n    model.options: [{shift_kernel: 3}, {shift: quad}]\n  seed: [0, 1]\n"
         "tune: {train.lr: [4.0e-3, 1.0e-3]}\n")


def tuned_grid(tmp_path, cells=CELLS):
    return load_grid(grid_file(tmp_path, cells, "tuned"), "smoke", TINY)


def test_every_row_and_seed_gets_every_candidate_with_stable_ids(tmp_path):
    grid = tuned_grid(tmp_path)
    assert [(s.label, s.config["seed"], s.candidate) for s in grid.specs] == [
        (label, seed, f"train.lr={lr}") for label in "AB" for seed in (0, 1) for lr in (0.004, 0.001)]
    assert [s.id for s in tuned_grid(tmp_path).specs] == [s.id for s in grid.specs]
    # a candidate is the same run as the untuned cell with that value: its id does not depend on tune:
    plain = load_grid(grid_file(tmp_path, CELLS.split("tune:")[0], "plain"), "smoke", TINY + ["train.lr=0.001"])
    assert {s.id for s in plain.specs} == {s.id for s in grid.specs if s.candidate == "train.lr=0.001"}
    assert grid.metadata()["tune"] == {"train.lr": [0.004, 0.001]}


@pytest.mark.parametrize("tune,message", [
    ("tune: {train.lrate: [1, 2]}\n", "tune.train.lrate: unknown key"),
    ("tune: {train.lr: [0.001]}\n", "tune.train.lr must be a list of at least two distinct candidate values"),
    ("tune: {train.lr: [0.001, 0.001]}\n", "at least two distinct"),
    ("tune: {train.lr: [0.001, fast]}\n", "train.lr must be a finite number; got 'fast'"),
    ("tune: {seed: [0, 1]}\n", "tune.seed: a key that names rows or seeds cannot be tuned"),
    ("tune: [train.lr]\n", "'tune' must be a mapping"),
])
def test_a_bad_tune_key_or_value_names_the_file_and_the_key(tmp_path, tune, message):
    path = grid_file(tmp_path, CELLS.split("tune:")[0] + tune, "bad")
    with pytest.raises(ConfigError) as err:
        load_grid(path, "smoke", TINY)
    assert str(path) in str(err.value) and message in str(err.value)


def _trained(grid_dir, spec, val_psnr, state="trained"):
    folder = grid_dir / spec.folder_name
    store.write_json(folder / "status.json", {"state": state, "id": spec.id})
    if state != "failed":
        store.write_json(folder / "train.json", {"best_val_psnr": val_psnr})


def test_the_candidate_with_the_better_mean_validation_psnr_is_chosen_per_row(tmp_path):
    grid = tuned_grid(tmp_path)
    grid_dir = tmp_path / "runs" / "tuned"
    psnr = {("A", "train.lr=0.004"): (25.0, 24.0), ("A", "train.lr=0.001"): (24.6, 24.6),   # 24.5 < 24.6
            ("B", "train.lr=0.004"): (26.0, 26.2), ("B", "train.lr=0.001"): (30.0, None)}   # a failed seed
    for spec in grid.specs:
        value = psnr[(spec.label, spec.candidate)][spec.config["seed"]]
        _trained(grid_dir, spec, value, "failed" if value is None else "trained")
    first = grid.specs[0]
    store.write_json(grid_dir / first.folder_name / "status.json", {"state": "running", "id": first.id})
    assert tuning.choose(grid, grid_dir) is None                     # a candidate has no outcome yet
    _trained(grid_dir, first, 25.0)
    choice = tuning.choose(grid, grid_dir)
    assert choice["A"]["chosen"] == "train.lr=0.001" and choice["A"]["candidates"]["train.lr=0.004"]["val_psnr"] == 24.5
    assert choice["B"]["chosen"] == "train.lr=0.004"                 # the failed candidate cannot win
    assert choice["B"]["candidates"]["train.lr=0.001"] == {"val_psnr": None, "runs": 2, "failed": 1}
    assert store.read_tuning(grid_dir) == choice
    chosen = tuning.chosen_specs(grid, choice)
    assert [(s.label, s.candidate, s.config["seed"]) for s in chosen] == [
        ("A", "train.lr=0.001", 0), ("A", "train.lr=0.001", 1), ("B", "train.lr=0.004", 0), ("B", "train.lr=0.004", 1)]


def test_a_tuned_grid_tests_only_the_chosen_candidates_and_shows_them(tmp_path, capsys):
    path = grid_file(tmp_path, "  zip:\n    label: [A]\n    model.options: [{shift_kernel: 3}]\n"
                               "tune: {train.lr: [4.0e-3, 1.0e-3]}\n", "tuned")
    argv = ["--grid", str(path), "--out", str(tmp_path / "runs"), "--tables", str(tmp_path / "tables"), "--quiet",
            "--jobs", "1"] + [a for o in TINY for a in ("--set", o)]
    assert run.main(argv) == 0
    grid_dir = tmp_path / "runs" / "tuned"
    grid = load_grid(path, "smoke", TINY)
    choice = store.read_tuning(grid_dir)["A"]
    for spec in grid.specs:
        folder = grid_dir / spec.folder_name
        chosen = spec.candidate == choice["chosen"]
        assert (folder / "train.json").is_file()                     # every candidate trained
        assert (folder / "test.json").is_file() == chosen            # the loser's test split never scored
        assert (folder / "test_images.csv").is_file() == chosen
        assert store.run_state(folder)["state"] == ("done" if chosen else "trained")
    table = (tmp_path / "tables" / "tuned.md").read_text()
    assert "Tuning: every row and seed trained once per candidate (`train.lr` in {0.004, 0.001})" in table
    assert f"| {choice['chosen']} |" in table and "tuned per row (see Tuning)" in table
    assert "Provenance of the 1 finished runs" in table                 # the loser is not a row of the table
    capsys.readouterr()
    assert status.main([str(grid_dir)]) == 0
    listing = capsys.readouterr().out
    assert "| A [train.lr=0.004] |" in listing and "| A [train.lr=0.001] |" in listing
    assert listing.count("| chosen;") == 1 and listing.count("| not chosen;") == 1
    assert run.main(argv) == 0                                         # a second invocation redoes nothing
    assert "0 to train" in capsys.readouterr().err


def test_tune_may_name_the_one_scale_it_applies_to(tmp_path):
    path = grid_file(tmp_path, CELLS.replace("tune: {train.lr:", "tune: {smoke: {train.lr:").rstrip() + "}\n", "scaled")
    smoke, paper = load_grid(path, "smoke", TINY), load_grid(path, "paper", TINY)
    assert len(smoke.specs) == 8 and smoke.tune == (("train.lr", (0.004, 0.001)),)
    assert len(paper.specs) == 4 and paper.tune == () and "tune" not in paper.metadata()
    bad = grid_file(tmp_path, CELLS.replace("tune: {train.lr:", "tune: {smoke: {train.lrate:").rstrip() + "}\n", "bad")
    with pytest.raises(ConfigError, match=r"bad.yaml \(tune.smoke\): tune.train.lrate: unknown key"):
        load_grid(bad, "smoke", TINY)
