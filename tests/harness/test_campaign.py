"""``campaign.run_grid`` without the command line: the SLURM x tune x --no-wait combinations with
an executor that records what it is asked and writes the outcomes a real one would."""
import pytest

from benchmark.base import provenance
from benchmark.harness import campaign
from benchmark.harness.grid import load_grid
from benchmark.results import store
from tests.helpers import TWO_CELLS, grid_file

TUNE = "tune: {train.lr: [4.0e-3, 1.0e-3]}\n"


class Recorder:
    """Stands in for an executor: ``wait=False`` submits (returns None); otherwise each run ends in
    its stage's state (``partial`` short of its iterations) with a validation PSNR of 30 dB at lr
    1e-3 and 29 dB at any other, or fails where ``fail`` names its label."""

    def __init__(self, grid_dir, wait=True, fail=()):
        self.grid_dir, self.wait, self.fail, self.calls = grid_dir, wait, set(fail), []

    def run(self, specs, stages, until=None):
        self.calls.append(([s.id for s in specs], stages))
        if not self.wait:
            return None
        out = {}
        for spec in specs:
            folder = self.grid_dir / spec.folder_name
            iters = spec.config["train"]["iters"]
            reached = min((until or {}).get(spec.id, iters), iters)
            if spec.label in self.fail:
                status = {"state": "failed", "id": spec.id, "reason": "boom"}
            else:
                state = "partial" if reached < iters else "trained" if stages == "train" else "done"
                status = {"state": state, "id": spec.id, "iteration": reached, "code_hash": provenance.code_hash()}
                psnr = 30.0 if spec.config["train"]["lr"] == 1.0e-3 else 29.0
                store.write_json(folder / "train.json", {"best_val_psnr": psnr})
                store.write_csv(folder / "train_log.csv", [{"iteration": reached, "loss": 0.1, "val_psnr": psnr}],
                                ["iteration", "loss", "val_psnr"])
            store.write_json(folder / "status.json", status)
            out[spec.id] = status
        return out


def grid_and_dir(tmp_path, tune=""):
    path = grid_file(tmp_path, TWO_CELLS + tune)
    grid = load_grid(path, "smoke", ["train.iters=4"])
    grid_dir = tmp_path / "runs" / grid.name
    store.write_grid(grid_dir, grid.metadata())
    return grid, grid_dir


def test_an_untuned_grid_runs_everything_once(tmp_path):
    grid, grid_dir = grid_and_dir(tmp_path)
    executor = Recorder(grid_dir)
    said = []
    outcome = campaign.run_grid(grid, grid_dir, executor, say=said.append)
    assert executor.calls == [([s.id for s in grid.specs], "all")]
    assert outcome.submitted is None and outcome.exit_code == 0 and len(outcome.results) == 2
    assert said == [f"grid two: 2 runs at scale smoke, 0 already done, 2 to run -> {grid_dir}"]
    again = Recorder(grid_dir)
    campaign.run_grid(grid, grid_dir, again, say=said.append)
    assert again.calls == [([], "all")] and said[-1].endswith("2 already done, 0 to run -> " + str(grid_dir))


def test_no_wait_only_submits(tmp_path):
    grid, grid_dir = grid_and_dir(tmp_path)
    outcome = campaign.run_grid(grid, grid_dir, Recorder(grid_dir, wait=False), say=lambda line: None)
    assert outcome.submitted == "runs" and outcome.results == {} and outcome.exit_code == 0


def test_a_tuned_grid_with_no_wait_submits_the_candidates_then_chooses_and_tests_on_the_next_call(tmp_path):
    grid, grid_dir = grid_and_dir(tmp_path, TUNE)
    first = Recorder(grid_dir, wait=False)
    outcome = campaign.run_grid(grid, grid_dir, first, say=lambda line: None)
    assert outcome.submitted == "candidates" and first.calls == [([s.id for s in grid.specs], "train")]
    assert store.read_tuning(grid_dir) is None
    Recorder(grid_dir).run(grid.specs, "train")                   # the submitted candidates finish
    second, said = Recorder(grid_dir), []
    outcome = campaign.run_grid(grid, grid_dir, second, say=said.append)
    # 1e-3 wins at the bottom edge of {4e-3, 1e-3}: each row gets 2.5e-4 beyond it, which loses
    extended = [r for r in store.read_grid(grid_dir)["runs"] if r["candidate"] == "train.lr=0.00025"]
    assert len(extended) == 2 and second.calls[0] == ([r["id"] for r in extended], "train")
    chosen = [s.id for s in grid.specs if s.config["train"]["lr"] == 1.0e-3]
    assert second.calls[1:] == [(chosen, "all")]                    # nothing else trained again; the choice tested
    assert "chosen on validation: k=3 train.lr=0.001; Q-Shift train.lr=0.001" in said
    assert [s.id for s in outcome.tested] == chosen and outcome.exit_code == 0


def test_a_failed_run_is_counted_and_the_others_kept(tmp_path):
    grid, grid_dir = grid_and_dir(tmp_path)
    outcome = campaign.run_grid(grid, grid_dir, Recorder(grid_dir, fail={"Q-Shift"}), say=lambda line: None)
    assert len(outcome.failed) == 1 and outcome.exit_code == 1
    assert outcome.summary("two").startswith("grid two: 1 runs finished, 1 failed in ")


def test_candidates_without_an_outcome_stop_the_choice(tmp_path):
    grid, grid_dir = grid_and_dir(tmp_path, TUNE)

    class Busy(Recorder):
        def run(self, specs, stages, until=None):
            return {s.id: {"state": "busy"} for s in specs}          # another process holds them
    with pytest.raises(campaign.CampaignError, match="some candidates have no outcome") as caught:
        campaign.run_grid(grid, grid_dir, Busy(grid_dir), say=lambda line: None)
    assert caught.value.code == 1


def test_stale_runs_are_said_and_run_again_unless_kept(tmp_path):
    grid, grid_dir = grid_and_dir(tmp_path)
    Recorder(grid_dir).run(grid.specs, "all")
    for spec in grid.specs:                                          # made by other code
        folder = grid_dir / spec.folder_name
        store.write_json(folder / "status.json", {**store.run_state(folder), "code_hash": "0123456789ab"})
    kept, said = Recorder(grid_dir), []
    campaign.run_grid(grid, grid_dir, kept, keep_stale=True, say=said.append)
    assert kept.calls == [([], "all")] and said[0].startswith("2 finished run(s) are stale: made with code 0123456789ab")
    assert said[0].endswith("kept (--keep-stale); the table says so")
    again = Recorder(grid_dir)
    campaign.run_grid(grid, grid_dir, again, say=said.append)
    assert again.calls == [([s.id for s in grid.specs], "all")] and "running them again" in said[2]
