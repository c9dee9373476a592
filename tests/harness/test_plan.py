"""The plan of a grid (``--plan``): its arithmetic against a hand-computed grid with fixed costs,
a model that cannot be measured reported (not crashed), the cache, and the command."""
import json

import pytest

from benchmark.harness import plan
from benchmark.harness.grid import load_grid
from tests.helpers import grid_file

CELLS = "  zip:\n    label: [k=3, Q-Shift]\n    model.options: [{shift_kernel: 3}, {shift: quad}]\n  seed: [0, 1]\n"


def fixed_costs(key: str, made: dict, repeat: int, queue) -> None:
    """Stands in for the measuring process: k=3 (shift_kernel 3) steps in 2 s with 30 GB of peak memory,
    a forward of a 256x256 slice takes 0.5 s and an ERF map 1 s; Q-Shift runs out of memory."""
    spec = json.loads(key)
    if made["options"].get("shift") == "quad":
        queue.put({"error": "RuntimeError: out of memory (tried to allocate 12 GB)"})
        return
    queue.put({"step_s": 2.0, "peak_mb": 30 * 1024, "forward_s": {str(s): 0.5 for s in spec["sizes"]},
               "erf_s": 1.0, "params_m": 27.9})


def test_plan_arithmetic_of_a_hand_computed_grid(tmp_path):
    """Paper scale, no prepared data here: the paper's IXI split (11,400 test slices of 256x256).
    One run of k=3: train 30,000 x 2 s = 60,000 s; validation 30 x 32 x 0.5 = 480 s; test
    11,400 x 0.5 = 5,700 s; ERF 16 x 1 = 16 s; 66,196 s = 18.39 h. Two seeds: 36.8 device-hours; Q-Shift
    unknown (out of memory), reported in the table. Fits 40 GB (30 + 1 GB) but not 24 GB. SLURM: 4
    tasks; 1.25 x 66,196 s = 82,745 s -> 92 quarter hours = 1,380 minutes; the dev profile's 30 minutes
    need ceil(66,196 / 1,800) - 1 = 36 requeues, more than its max_requeues."""
    from benchmark.harness.executors import slurm
    grid = load_grid(grid_file(tmp_path, CELLS), "paper")
    path = plan.make_plan(grid, tmp_path / "runs", tmp_path / "tables", [24, 40], slurm.load_profile("dev"),
                          "the command", worker=fixed_costs)
    numbers = plan.plan_grid(grid, plan.load_costs(tmp_path / "runs" / "plan-costs.json"), [24, 40],
                             slurm.load_profile("dev"))
    k3 = [r for r in numbers["runs"] if r["label"] == "k=3"]
    assert k3[0]["seconds"] == {"train": 60000.0, "validation": 480.0, "test": 5700.0, "erf": 16.0, "total": 66196.0}
    assert numbers["total_s"] == pytest.approx(2 * 66196.0) and numbers["unknown"] == 2
    fits = {m["labels"][0]: m["fits"] for m in numbers["models"]}
    assert fits["k=3"] == {24: False, 40: True} and fits["Q-Shift"] == {24: None, 40: None}
    assert numbers["slurm"]["tasks"] == 4 and numbers["slurm"]["time_min"] == 1380
    assert numbers["slurm"]["requeues"] == 36 and not numbers["slurm"]["requeues_allowed"]
    text = path.read_text()
    assert path.name == "two_plan.md"
    assert "**4 runs** (2 rows x 2 seeds); **36.8 device-hours** on this device for the 2 runs whose model could be " \
           "measured (2 unknown)" in text
    assert ("| restore_rwkv | shift=quad | Q-Shift | out of memory on this machine (RuntimeError: out of memory "
            "(tried to allocate 12 GB)) |") in text
    assert "| 2.00 | 30.0 | 0.50 s at 256² | 1.00 | **no** | yes |" in text
    assert "ask for `time_min: 1380`" in text and "36 time(s) (more than its max_requeues" in text


def test_a_tuned_grid_halves_its_candidates_and_tests_one_per_row_and_seed(tmp_path):
    path = tmp_path / "tuned.yaml"
    path.write_text("name: tuned\nbase:\n  task: mri_sr\n  model: {name: restore_rwkv}\naxes:\n  label: [k=3]\n"
                    "  model.options: [{shift_kernel: 3}]\ntune:\n  paper: {train.lr: [1.0e-4, 2.0e-4, 4.0e-4]}\n")
    grid = load_grid(path, "paper")
    costs = {plan.cost_key(s.config, plan.workload(s.config)): {"outcome": "ok", "step_s": 2.0, "peak_mb": 1.0,
                                                                "forward_s": {"256": 0.5}, "erf_s": 1.0}
             for s in grid.specs}
    numbers = plan.plan_grid(grid, costs, [80])
    tested = [r for r in numbers["runs"] if r["seconds"]["test"] > 0]
    assert len(numbers["runs"]) == 3 and len(tested) == 1
    # successive halving over 30K iterations (validation every 1K): rungs 8K, 15K, 30K; the 3 candidates
    # and an extension to 8K, 2 of them on to 15K, 1 to 30K: 61K of the 90K iterations of 3 full runs
    assert numbers["training_share"] == pytest.approx(61000 / 90000)
    assert numbers["total_s"] == pytest.approx(3 * 60480.0 * 61000 / 90000 + 5716.0)
    assert numbers["longest_s"] == pytest.approx(60480.0 + 5716.0)   # the chosen candidate trains to the end


def test_the_cost_cache_is_reused_and_a_damaged_one_is_measured_again(tmp_path):
    from benchmark.harness.executors import slurm
    grid = load_grid(grid_file(tmp_path, CELLS), "paper")
    plan.make_plan(grid, tmp_path / "runs", tmp_path / "tables", [40], slurm.load_profile("dev"), "c",
                   worker=fixed_costs)
    cached = json.loads((tmp_path / "runs" / "plan-costs.json").read_text())
    assert len(cached) == 2

    def refuse(*args):
        raise AssertionError("measured again")
    plan.make_plan(grid, tmp_path / "runs", tmp_path / "tables", [40], slurm.load_profile("dev"), "c", worker=refuse)
    (tmp_path / "runs" / "plan-costs.json").write_text("{not json")
    assert plan.load_costs(tmp_path / "runs" / "plan-costs.json") == {}


def test_plan_command_trains_nothing_and_writes_the_plan(tmp_path, monkeypatch, capsys):
    from benchmark.harness import run
    monkeypatch.setattr(plan, "_measure_one", fixed_costs)
    code = run.main(["--grid", str(grid_file(tmp_path, CELLS)), "--scale", "paper", "--plan", "--out",
                     str(tmp_path / "runs"), "--tables", str(tmp_path / "tables")])
    assert code == 0
    assert (tmp_path / "tables" / "two_plan.md").is_file()
    assert not (tmp_path / "runs" / "two").exists()                 # no run folder: nothing trained


def test_rows_that_build_one_network_are_measured_once(tmp_path):
    """{shift_kernel: 5} is the default Omni-Shift: the same network as no options, one measurement."""
    from benchmark.harness.executors import slurm
    cells = "  zip:\n    label: [k=5, default]\n    model.options: [{shift_kernel: 5}, {}]\n"
    grid = load_grid(grid_file(tmp_path, cells), "paper")
    plan.make_plan(grid, tmp_path / "runs", tmp_path / "tables", [40], slurm.load_profile("dev"), "c",
                   worker=fixed_costs)
    assert len(json.loads((tmp_path / "runs" / "plan-costs.json").read_text())) == 1
    assert "| restore_rwkv | shift_kernel=5 | k=5, default |" in (tmp_path / "tables" / "two_plan.md").read_text()


def oom_above_two(key: str, made: dict, repeat: int, queue) -> None:
    """k=3 runs out of memory above batch 2: batch 2 steps in 1.8 s with 1,500 MB, batch 1 in 1.0 s
    with 1,000 MB; Q-Shift runs out of memory at every batch."""
    batch = made.get("batch", json.loads(key)["batch"])
    if batch > 2 or made["options"].get("shift") == "quad":
        queue.put({"error": "RuntimeError: out of memory (tried to allocate 9 GB)"})
        return
    queue.put({"step_s": {1: 1.0, 2: 1.8}[batch], "peak_mb": {1: 1000.0, 2: 1500.0}[batch],
               "forward_s": {"256": 0.5}, "erf_s": 1.0, "params_m": 27.9})


def test_a_model_out_of_memory_is_measured_at_smaller_batches_and_extrapolated(tmp_path):
    """Batch 4 from batches 1 and 2 on a line: 1.8 + 2 x 0.8 = 3.4 s, 1,500 + 2 x 500 = 2,500 MB;
    a run: 30,000 x 3.4 = 102,000 s of training; Q-Shift tried at 2 and 1 and stays unknown."""
    from benchmark.harness.executors import slurm
    grid = load_grid(grid_file(tmp_path, CELLS), "paper")
    path = plan.make_plan(grid, tmp_path / "runs", tmp_path / "tables", [2, 40], slurm.load_profile("dev"), "c",
                          worker=oom_above_two)
    costs = plan.load_costs(tmp_path / "runs" / "plan-costs.json")
    k3 = next(c for c in costs.values() if c.get("estimate"))
    assert [p["batch"] for p in k3["smaller"]] == [2, 1]
    assert k3["estimate"]["step_s"] == pytest.approx(3.4) and k3["estimate"]["peak_mb"] == pytest.approx(2500.0)
    quad = next(c for c in costs.values() if not c.get("estimate"))
    assert [p["batch"] for p in quad["smaller"]] == [2, 1] and quad["estimate"] is None
    numbers = plan.plan_grid(grid, costs, [2, 40], slurm.load_profile("dev"))
    run = next(r for r in numbers["runs"] if r["label"] == "k=3")
    assert run["seconds"]["train"] == pytest.approx(102000.0) and run["estimated"]
    assert numbers["estimated"] == 2 and numbers["unknown"] == 2
    text = path.read_text()
    assert "| 3.40 (est.) | 2.4 (est.) | 0.50 s at 256² | 1.00 | **no** (est.) | yes (est.) |" in text
    assert ("measured at batch 2: 1.80 s, 1.5 GB; batch 1: 1.00 s, 1.0 GB; batch 4 extrapolated as a line through "
            "batches 1 and 2") in text
    assert "out of memory here at batch 4 and at every smaller batch tried (2, 1)" in text


def test_one_smaller_batch_extrapolates_proportionally():
    points = [{"batch": 2, "outcome": "oom", "error": "x"},
              {"batch": 1, "outcome": "ok", "step_s": 2.0, "peak_mb": 900.0, "forward_s": {}, "erf_s": 1.0,
               "params_m": 1.0}]
    estimate = plan.extrapolate(points, 4)
    assert estimate["step_s"] == 8.0 and estimate["peak_mb"] == 3600.0 and "upper bound" in estimate["how"]
    assert plan.extrapolate([{"batch": 1, "outcome": "oom", "error": "x"}], 4) is None


def recording_costs(key: str, made: dict, repeat: int, queue) -> None:
    """``fixed_costs``, recording each call (slice sizes, forwards only, options) in $PLAN_CALLS."""
    import os
    with open(os.environ["PLAN_CALLS"], "a") as f:
        f.write(json.dumps([json.loads(key)["sizes"], bool(made.get("forwards_only")), made["options"]]) + "\n")
    fixed_costs(key, made, repeat, queue)


def test_a_network_measured_for_another_task_only_measures_forwards_at_the_new_sizes(tmp_path, monkeypatch):
    """The step, its memory and the ERF map do not depend on the data's slice size: the PET grid's
    plan after the MRI grid's measures k=3 again only for a forward of a 192x192 slice."""
    from benchmark.harness.executors import slurm
    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("PLAN_CALLS", str(calls))
    mri = load_grid(grid_file(tmp_path, CELLS), "paper")
    plan.make_plan(mri, tmp_path / "runs", tmp_path / "tables", [40], slurm.load_profile("dev"), "c",
                   worker=recording_costs)
    calls.unlink()
    pet_file = tmp_path / "pet.yaml"
    pet_file.write_text(grid_file(tmp_path, CELLS).read_text().replace("name: two", "name: pet")
                        .replace("task: mri_sr", "task: pet_synthesis"))
    pet = load_grid(pet_file, "paper")
    plan.make_plan(pet, tmp_path / "runs", tmp_path / "tables", [40], slurm.load_profile("dev"), "c",
                   worker=recording_costs)
    made = [json.loads(line) for line in calls.read_text().splitlines()]
    assert [c for c in made if c[2] == {"shift_kernel": 3}] == [[[192], True, {"shift_kernel": 3}]]   # forwards only
    costs = plan.load_costs(tmp_path / "runs" / "plan-costs.json")
    reused = next(c for k, c in costs.items() if json.loads(k)["sizes"] == [192] and c.get("outcome") == "ok")
    assert reused["step_s"] == 2.0 and reused["forward_s"] == {"192": 0.5} and reused["step_from_other_sizes"]


def test_every_plan_counts_a_networks_fastest_step():
    """The same network and shapes measured twice (for two tasks' grids, one while the machine was
    busy): both plans count the faster step, each with its own forwards."""
    key = {"network": "n", "batch": 4, "crop": 128, "erf_size": 128, "precision": "fp32", "machine": "m", "threads": 2}
    mri, ct = (json.dumps({**key, "sizes": [side]}, sort_keys=True) for side in (256, 512))
    costs = {mri: {"outcome": "ok", "step_s": 21.0, "peak_mb": 100.0, "erf_s": 4.0, "forward_s": {"256": 7.0}},
             ct: {"outcome": "ok", "step_s": 60.0, "peak_mb": 100.0, "erf_s": 9.0, "forward_s": {"512": 40.0}}}
    assert plan.canonical(costs, ct) == {"outcome": "ok", "step_s": 21.0, "peak_mb": 100.0, "erf_s": 4.0,
                                         "forward_s": {"512": 40.0}}
    assert plan.canonical(costs, mri) == costs[mri]


def test_the_rehearsal_trains_a_model_too_big_for_the_machine_at_the_largest_batch_measured_to_fit(tmp_path):
    """``tests/rehearsal.py``'s ``fitting_batch`` reads a plan's measurements of the same network and
    shapes, made on any machine: out of memory at batch 4 (estimated 32 GB), 16 GB at 2, 8 GB at 1."""
    from tests import rehearsal
    config = load_grid(grid_file(tmp_path, CELLS), "paper").specs[0].config
    key = json.loads(plan.cost_key(config, plan.workload(config)))
    elsewhere = json.dumps({**key, "machine": "another CPU", "threads": 64}, sort_keys=True)
    costs = {elsewhere: {"outcome": "oom", "estimate": {"step_s": 9.0, "peak_mb": 32_000, "forward_s": {}, "erf_s": 1.0},
                         "smaller": [{"batch": 2, "outcome": "ok", "peak_mb": 16_000},
                                     {"batch": 1, "outcome": "ok", "peak_mb": 8_000}]}}
    batch, why = rehearsal.fitting_batch(config, costs, 20_000)
    assert (batch, why) == (2, "31.2 GB estimated at batch 4, 15.6 GB at batch 2; a step may take 19.5 GB here")
    assert rehearsal.fitting_batch(config, costs, 10_000)[0] == 1
    assert rehearsal.fitting_batch(config, costs, 40_000) is None          # the estimate fits: the paper's batch
    assert rehearsal.fitting_batch(config, costs, 4_000) == (               # nothing measured fits: the run will say
        4, "31.2 GB estimated at batch 4 and no smaller batch measured to fit the 3.9 GB a step may take here")
    assert rehearsal.fitting_batch(config, {}, 20_000) is None             # never measured
    other_crop = {elsewhere.replace('"crop": 128', '"crop": 64'): costs[elsewhere]}
    assert rehearsal.fitting_batch(config, other_crop, 20_000) is None     # another crop is another step
