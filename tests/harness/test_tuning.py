"""A grid's ``tune:`` key: every row and seed trains each candidate by successive halving, the
candidate that reaches the last rung is chosen per row, and only it is tested (harness.tuning)."""
import pytest
import torch

from benchmark.harness import run, status, train, tuning
from benchmark.harness.config import ConfigError
from benchmark.harness.grid import load_grid
from benchmark.harness.pipeline import run_spec
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


def test_rungs_halve_the_budget_on_validation_points():
    assert tuning.rung_budgets(800, 200, 3) == [200, 400, 800]       # R = ceil(log2 3) = 2
    assert tuning.rung_budgets(800, 100, 2) == [400, 800]
    assert tuning.rung_budgets(1000, 100, 5) == [100, 200, 500, 1000]   # 125, 250 rounded to validations
    assert tuning.rung_budgets(6, 3, 3) == [3, 3, 6]                 # never under one validation
    # 3 candidates and an extension to 200, 2 on to 400, 1 to 800: 1,600 iterations against 2,400 in full
    assert tuning.halving_iterations(800, 200, 3) == 4 * 200 + 2 * 200 + 1 * 400
    assert tuning.halving_iterations(800, 200, 3, extension=False) == 3 * 200 + 2 * 200 + 1 * 400


def test_one_more_candidate_beyond_an_edge():
    lrs = [4e-3, 1e-3, 2.5e-4]
    assert tuning.beyond_edge(lrs, 4e-3) == 1.6e-2                   # 4e-3 * (4e-3 / 1e-3)
    assert tuning.beyond_edge(lrs, 2.5e-4) == 6.25e-5
    assert tuning.beyond_edge(lrs, 1e-3) is None                     # inside: bracketed
    assert tuning.beyond_edge([32, 64], 64) == 128
    assert tuning.beyond_edge([0, 1], 0) == -1                       # not all positive: one step further
    assert tuning.beyond_edge(["l1", "l2"], "l1") is None


LRS = "tune: {train.lr: [4.0e-3, 1.0e-3, 2.5e-4]}\n"
LONG = TINY + ["train.iters=800", "train.val_every=200"]             # rungs 200, 400, 800


def _at(grid_dir, spec, psnrs, state="partial"):
    """A run that has trained to the last of ``psnrs``' validations (every 200 iterations)."""
    folder = grid_dir / spec.folder_name
    iteration = 200 * len(psnrs)
    store.write_json(folder / "status.json", {"state": state, "id": spec.id, "iteration": iteration})
    rows = [{"iteration": 200 * (i + 1), "loss": 0.1, "grad_norm": 1.0, "lr": 0.001, "val_psnr": p, "seconds": 1.0}
            for i, p in enumerate(psnrs)]
    store.write_csv(folder / "train_log.csv", rows, train.LOG_COLUMNS)


def _specs(halving, label, candidate):
    return [s for s in halving.specs() if s.label == label and s.candidate == candidate]


def test_successive_halving_continues_the_better_half_and_extends_an_edge(tmp_path):
    grid = load_grid(grid_file(tmp_path, CELLS.split("tune:")[0] + LRS, "halved"), "smoke", LONG)
    grid_dir = tmp_path / "runs" / "halved"
    halving = tuning.Halving(grid, grid_dir)
    assert halving.waiting == {s.id: 200 for s in grid.specs} and tuning.choose(grid, grid_dir) is None
    # rung 0 (200 iterations): A's best is inside its values; B's best is its top edge, 4e-3
    rung0 = {("A", 0.004): (24.0, 24.2), ("A", 0.001): (25.0, 25.2), ("A", 0.00025): (23.0, 23.0),
             ("B", 0.004): (26.0, 26.4), ("B", 0.001): (25.9, 26.0), ("B", 0.00025): (20.0, 20.0)}
    for spec in grid.specs:
        _at(grid_dir, spec, [rung0[(spec.label, spec.config["train"]["lr"])][spec.config["seed"]]])
    halving = tuning.Halving(grid, grid_dir)
    extension = _specs(halving, "B", "train.lr=0.016")
    assert [s.config["train"]["lr"] for s in extension] == [0.016, 0.016] and len(halving.extensions) == 2
    assert {s.config["seed"] for s in extension} == {0, 1} and extension[0].index == len(grid.specs)
    # B's extension catches up to rung 0 while A, its rung decided, goes on: the rows halve independently
    assert {k: v for k, v in halving.waiting.items() if v == 200} == {s.id: 200 for s in extension}
    assert {k for k, v in halving.waiting.items() if v == 400} == {
        s.id for lr in ("0.001", "0.004") for s in _specs(halving, "A", f"train.lr={lr}")}
    # B's extension diverges on one seed: a failed candidate cannot continue, whatever its other seed
    _at(grid_dir, extension[0], [30.0])
    store.write_json(grid_dir / extension[1].folder_name / "status.json", {"state": "failed", "id": extension[1].id})
    halving = tuning.Halving(grid, grid_dir)
    # the better half (2 of 3; of B's 4, 2) goes on to 400: A's 1e-3 and 4e-3, B's 4e-3 and 1e-3
    assert halving.waiting == {s.id: 400 for label, lr in [("A", "0.001"), ("A", "0.004"), ("B", "0.004"),
                                                            ("B", "0.001")] for s in _specs(halving, label, f"train.lr={lr}")}
    rung1 = {("A", 0.004): (27.0, 27.0), ("A", 0.001): (26.0, 26.0), ("B", 0.004): (26.5, 26.5),
             ("B", 0.001): (26.8, 26.6)}
    for (label, lr), psnrs in rung1.items():
        for spec in _specs(halving, label, f"train.lr={lr}"):
            _at(grid_dir, spec, [rung0[(label, lr)][spec.config["seed"]], psnrs[spec.config["seed"]]])
    halving = tuning.Halving(grid, grid_dir)
    # only the best goes on to the end: A's 4e-3 (27.0 against 26.0), B's 1e-3 (26.7 against 26.5)
    assert halving.waiting == {s.id: 800 for label, lr in [("A", "0.004"), ("B", "0.001")]
                               for s in _specs(halving, label, f"train.lr={lr}")}
    for label, lr in [("A", 0.004), ("B", 0.001)]:
        for spec in _specs(halving, label, f"train.lr={lr}"):
            seed = spec.config["seed"]
            _at(grid_dir, spec, [rung0[(label, lr)][seed], rung1[(label, lr)][seed], 27.5, 27.6], "trained")
    choice = tuning.choose(grid, grid_dir)
    assert choice["A"]["chosen"] == "train.lr=0.004" and choice["A"]["bracketed"] is False
    assert choice["A"]["extension"] is None and choice["A"]["rungs"] == [200, 400, 800]
    assert choice["B"]["chosen"] == "train.lr=0.001" and choice["B"]["bracketed"] is True
    assert choice["B"]["extension"] == "train.lr=0.016"
    assert choice["B"]["candidates"]["train.lr=0.016"] == {"val_psnr": None, "iterations": 200, "runs": 2, "failed": 1}
    assert choice["B"]["candidates"]["train.lr=0.00025"] == {"val_psnr": 20.0, "iterations": 200, "runs": 2, "failed": 0}
    assert choice["B"]["candidates"]["train.lr=0.004"]["val_psnr"] == pytest.approx(26.5)
    assert choice["B"]["candidates"]["train.lr=0.001"] == {"val_psnr": pytest.approx(27.6), "iterations": 800,
                                                           "runs": 2, "failed": 0}
    assert store.read_tuning(grid_dir) == choice
    chosen = tuning.chosen_specs(tuning.Halving(grid, grid_dir).extended_grid(), choice)
    assert [(s.label, s.candidate, s.config["seed"]) for s in chosen] == [
        ("A", "train.lr=0.004", 0), ("A", "train.lr=0.004", 1), ("B", "train.lr=0.001", 0), ("B", "train.lr=0.001", 1)]


def test_tune_seeds_compares_candidates_on_the_first_seed_and_runs_the_choice_on_the_others(tmp_path):
    cells = CELLS.replace("seed: [0, 1]", "seed: [0, 1, 2]").split("tune:")[0] + LRS + "tune_seeds: 1\n"
    grid = load_grid(grid_file(tmp_path, cells, "first"), "smoke", LONG)
    grid_dir = tmp_path / "runs" / "first"
    assert grid.tune_seeds == 1 and grid.metadata()["tune_seeds"] == 1
    # only seed 0 of each candidate is trained to the first rung
    assert tuning.Halving(grid, grid_dir).waiting == {s.id: 200 for s in grid.specs if s.config["seed"] == 0}
    # seed 0's scores decide, whatever seeds 1 and 2 would have said (they never run)
    scores = {("A", 0.004): [24.0, 24.5, 25.0, 25.1], ("A", 0.001): [25.0, 25.5, 25.6, 25.7],
              ("A", 0.00025): [23.0], ("B", 0.004): [26.0, 26.0], ("B", 0.001): [25.9, 26.0, 26.1, 26.2],
              ("B", 0.00025): [26.1, 26.2, 26.3, 26.4]}
    halving = tuning.Halving(grid, grid_dir)
    for spec in [s for s in grid.specs if s.config["seed"] == 0]:
        _at(grid_dir, spec, scores[(spec.label, spec.config["train"]["lr"])][:1])
    halving = tuning.Halving(grid, grid_dir)
    # B's best at rung 0 is its bottom edge: its extension runs on seed 0 only
    assert {s.id: 200 for s in _specs(halving, "B", "train.lr=6.25e-05") if s.config["seed"] == 0}.items() \
        <= halving.waiting.items()
    assert all(halving.waiting.get(s.id) is None for s in halving.specs() if s.config["seed"] != 0)
    for spec in [s for s in _specs(halving, "B", "train.lr=6.25e-05") if s.config["seed"] == 0]:
        _at(grid_dir, spec, [20.0])
    for rung, state in ((2, "partial"), (4, "trained")):
        halving = tuning.Halving(grid, grid_dir)
        for spec in [s for s in halving.specs() if s.id in halving.waiting]:
            assert spec.config["seed"] == 0
            _at(grid_dir, spec, scores[(spec.label, spec.config["train"]["lr"])][:rung], state)
    choice = tuning.choose(grid, grid_dir)
    assert choice["A"]["chosen"] == "train.lr=0.001" and choice["B"]["chosen"] == "train.lr=0.00025"
    assert choice["B"]["candidates"]["train.lr=0.00025"]["runs"] == 1
    # the table shows the chosen candidate on every seed: seeds 1 and 2 then train and test in full
    chosen = tuning.chosen_specs(tuning.Halving(grid, grid_dir).extended_grid(), choice)
    assert [(s.label, s.candidate, s.config["seed"]) for s in chosen] == [
        ("A", "train.lr=0.001", seed) for seed in (0, 1, 2)] + [("B", "train.lr=0.00025", seed) for seed in (0, 1, 2)]


def test_tune_seeds_must_be_a_positive_number(tmp_path):
    path = grid_file(tmp_path, CELLS + "tune_seeds: 0\n", "bad")
    with pytest.raises(ConfigError, match="'tune_seeds' must be a positive number of seeds; got 0"):
        load_grid(path, "smoke", TINY)


def test_a_tie_goes_to_the_grid_order_and_a_row_whose_candidates_all_fail_shows_a_failure(tmp_path):
    lrs = "tune: {train.lr: [1.0e-3, 4.0e-3, 2.5e-4]}\n"
    grid = load_grid(grid_file(tmp_path, CELLS.split("tune:")[0] + lrs, "tied"), "smoke", LONG)
    grid_dir = tmp_path / "runs" / "tied"
    for spec in grid.specs:
        if spec.label == "A":
            store.write_json(grid_dir / spec.folder_name / "status.json", {"state": "failed", "id": spec.id})
        else:
            _at(grid_dir, spec, [24.0] * 4 if spec.config["train"]["lr"] == 2.5e-4 else [25.0] * 4, "trained")
    choice = tuning.choose(grid, grid_dir)
    assert choice["A"]["chosen"] is None and choice["A"]["bracketed"] is None
    assert choice["A"]["ids"] == [s.id for s in grid.specs if s.label == "A" and s.candidate == "train.lr=0.001"]
    # 1e-3 and 4e-3 tie at every rung: the first of the grid's order wins, inside the values (no extension)
    assert choice["B"]["chosen"] == "train.lr=0.001" and choice["B"]["bracketed"] is True
    assert choice["B"]["extension"] is None
    assert choice["B"]["candidates"]["train.lr=0.004"]["iterations"] == 400     # it lost at the second rung


def test_a_tuned_grid_halves_tests_only_the_chosen_candidate_and_shows_them(tmp_path, capsys):
    path = grid_file(tmp_path, "  zip:\n    label: [A]\n    model.options: [{shift_kernel: 3}]\n"
                               "tune: {train.lr: [4.0e-3, 1.0e-3]}\n", "tuned")
    argv = ["--grid", str(path), "--out", str(tmp_path / "runs"), "--tables", str(tmp_path / "tables"), "--quiet",
            "--jobs", "1"] + [a for o in TINY for a in ("--set", o)]
    assert run.main(argv) == 0
    grid_dir = tmp_path / "runs" / "tuned"
    grid = load_grid(path, "smoke", TINY)
    choice = store.read_tuning(grid_dir)["A"]
    assert choice["rungs"] == [3, 6] and choice["extension"] in ("train.lr=0.016", "train.lr=0.00025")
    metadata = store.read_grid(grid_dir)                             # the extension is a run of the grid
    assert {r["candidate"] for r in metadata["runs"]} == {"train.lr=0.004", "train.lr=0.001", choice["extension"]}
    for run_entry in metadata["runs"]:
        folder = grid_dir / run_entry["folder"]
        chosen = run_entry["candidate"] == choice["chosen"]
        state = store.run_state(folder)
        assert (folder / "train.json").is_file() == chosen           # only the survivor trained to the end
        assert (folder / "test.json").is_file() == chosen            # the loser's test split never scored
        assert (folder / "test_images.csv").is_file() == chosen
        assert state["state"] == ("done" if chosen else "partial")
        if not chosen:
            assert state["iteration"] == 3 and store.read_train_log(folder)["iteration"].max() == 3
    assert store.read_train_log(grid_dir / next(r["folder"] for r in metadata["runs"]
                                                if r["candidate"] == choice["chosen"]))["iteration"].max() == 6
    table = (tmp_path / "tables" / "tuned.md").read_text()
    assert "Tuning by successive halving (`train.lr` in {0.004, 0.001})" in table and "rungs 3, 6" in table
    assert f"| {choice['chosen']} |" in table and "tuned per row (see Tuning)" in table
    assert "(extension)" in table and "The optimum is bracketed" in table
    assert "Provenance of the 1 finished runs" in table                 # the losers are not rows of the table
    capsys.readouterr()
    assert status.main([str(grid_dir)]) == 0
    listing = capsys.readouterr().out
    assert "| A [train.lr=0.004] |" in listing and "| A [train.lr=0.001] |" in listing
    assert listing.count("| chosen;") == 1 and listing.count("| not chosen;") == 2
    assert listing.count("| partial |") == 2 and "trained to iteration 3" in listing
    assert run.main(argv) == 0                                         # a second invocation redoes nothing
    err = capsys.readouterr().err
    assert "to train to iteration" not in err and "0 to run" in err


def test_tune_may_name_the_one_scale_it_applies_to(tmp_path):
    path = grid_file(tmp_path, CELLS.replace("tune: {train.lr:", "tune: {smoke: {train.lr:").rstrip() + "}\n", "scaled")
    smoke, paper = load_grid(path, "smoke", TINY), load_grid(path, "paper", TINY)
    assert len(smoke.specs) == 8 and smoke.tune == (("train.lr", (0.004, 0.001)),)
    assert len(paper.specs) == 4 and paper.tune == () and "tune" not in paper.metadata()
    bad = grid_file(tmp_path, CELLS.replace("tune: {train.lr:", "tune: {smoke: {train.lrate:").rstrip() + "}\n", "bad")
    with pytest.raises(ConfigError, match=r"bad.yaml \(tune.smoke\): tune.train.lrate: unknown key"):
        load_grid(bad, "smoke", TINY)


def test_a_run_stopped_at_a_rung_and_continued_is_the_run_trained_straight(tmp_path):
    grid = tuned_grid(tmp_path)
    spec = grid.specs[0]                                              # iterations 6, validation every 3
    halved, straight = tmp_path / "halved", tmp_path / "straight"
    status = run_spec(spec, halved, progress=False, stages="train", until=3)
    assert status["state"] == "partial" and status["iteration"] == 3
    assert not (halved / spec.folder_name / "train.json").exists()
    assert run_spec(spec, halved, progress=False, stages="train", until=3) == status   # already at that rung
    odd = run_spec(spec, tmp_path / "odd", progress=False, stages="train", until=2)
    assert odd["state"] == "failed" and "only at a validation point" in odd["reason"]
    assert run_spec(spec, halved, progress=False, stages="train", until=6)["state"] == "trained"
    assert run_spec(spec, straight, progress=False, stages="train")["state"] == "trained"
    logs = [store.read_train_log(folder / spec.folder_name) for folder in (halved, straight)]
    assert logs[0][["iteration", "loss", "lr", "val_psnr"]].equals(logs[1][["iteration", "loss", "lr", "val_psnr"]])
    weights = [torch.load(folder / spec.folder_name / "best.pt", weights_only=True) for folder in (halved, straight)]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[1])
    assert store.read_json(halved / spec.folder_name / "train.json")["resumed_from"] == 3
