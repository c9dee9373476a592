"""The SLURM executor's parts that need no cluster: profiles, job states, the shipped files."""
from pathlib import Path

import pytest

from benchmark.harness.executors import slurm

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("name", ["dev", "example-gpu"])
def test_shipped_profiles_load(name):
    profile = slurm.load_profile(name)
    assert set(slurm.PROFILE_KEYS) <= set(profile) and profile["time_min"] >= 1


def test_a_profile_of_your_own_in_slurm_here_comes_before_the_shipped_one(tmp_path, monkeypatch):
    (tmp_path / "slurm").mkdir()
    (tmp_path / "slurm" / "dev.yaml").write_text("partition: mine\ntime_min: 7\n")
    monkeypatch.chdir(tmp_path)
    assert (slurm.load_profile("dev")["partition"], slurm.load_profile("dev")["time_min"]) == ("mine", 7)
    assert slurm.load_profile("example-gpu")["partition"] == "gpu"            # the shipped one, from another folder


def test_profile_errors_name_the_file_and_the_choices(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("partition: gpu\ngpus: 2\n")
    with pytest.raises(slurm.SlurmError, match=r"bad.yaml: unknown key\(s\) gpus; expected partition, account"):
        slurm.load_profile(str(bad))
    with pytest.raises(slurm.SlurmError, match="no cluster profile 'nowhere'.*shipped profiles: dev, example-gpu"):
        slurm.load_profile("nowhere")


@pytest.mark.parametrize("text, message", [
    ('setup: "source .venv/bin/activate"\n', "setup = 'source .venv/bin/activate': expected a list of shell lines"),
    ("setup: [1, 2]\n", "expected a list of shell lines"),
    ('extra: {constraint: "a100\\n#SBATCH --exclusive"}\n', "a line break inside a value would end the #SBATCH line"),
    ('partition: "gpu\\nhostname"\n', "a line break inside a value"),
    ("extra: [constraint]\n", "expected a mapping of sbatch option names"),
    ("time_min: 1.5\n", "time_min = 1.5: expected a positive number of minutes"),
    ("cpus_per_task: 0\n", "expected a positive integer"),
    ("mem_gb: -4\n", "mem_gb = -4: expected a number of GB > 0"),
    ("max_requeues: true\n", "expected a non-negative integer"),
    ("partition: [a, b]\n", "expected a partition name"),
    ("partition: [a\n", "not valid YAML"),
])
def test_profile_values_are_checked_by_type_and_for_line_breaks(tmp_path, text, message):
    path = tmp_path / "profile.yaml"
    path.write_text(text)
    with pytest.raises(slurm.SlurmError) as err:
        slurm.load_profile(str(path))
    assert str(path) in str(err.value) and message in str(err.value)


def test_terminal_states():
    assert slurm.is_terminal("COMPLETED") and slurm.is_terminal("CANCELLED by 0") and slurm.is_terminal("NODE_FAIL")
    assert not any(slurm.is_terminal(s) for s in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING", None))


def test_a_job_killed_without_a_result_says_what_its_log_ends_with(tmp_path):
    log = tmp_path / "2_2_0_log.err"
    log.write_text("submitit INFO - Starting\nsrun: error: vm: task 0: Killed\nsrun: Force Terminated StepId=2.0\n")
    assert slurm._last_line(str(log)) == "srun: error: vm: task 0: Killed (out of memory?)"
    log.write_text("Traceback ...\nValueError: bad\n\n")
    assert slurm._last_line(str(log)) == "ValueError: bad"
    assert slurm._last_line(str(tmp_path / "missing.err")) == ""


def test_dev_cluster_scripts_are_there():
    for name in ("start.sh", "stop.sh"):
        text = (ROOT / "slurm" / "dev-cluster" / name).read_text()
        assert text.startswith("#!/usr/bin/env bash")


def test_profiles_read_numbers_as_the_grids_do(tmp_path):
    """One YAML loader for grids and profiles: 1.2e2 is a number (YAML 1.2), not the string that
    PyYAML's 1.1 resolver makes of it."""
    path = tmp_path / "profile.yaml"
    path.write_text("partition: gpu\nmem_gb: 1.2e2\n")
    assert slurm.load_profile(str(path))["mem_gb"] == 120.0


def test_array_tasks_that_have_not_started_are_read_from_their_arrays_record(monkeypatch):
    """sacct lists an array's tasks that have not started as one record (``159_[0-2%2]`` PENDING):
    without reading it, a task queued longer than LOST_S behind other jobs was failed as lost."""
    assert slurm.array_tasks("159_[0-2%2]") == ["159_0", "159_1", "159_2"]
    assert slurm.array_tasks("7_[1,4-8:2]") == ["7_1", "7_4", "7_6", "7_8"]
    assert slurm.array_tasks("160_3") == ["160_3"] and slurm.array_tasks("161") == ["161"]
    lines = "159_0|COMPLETED\n159_1|RUNNING\n159_[2-4%2]|PENDING\n160|CANCELLED by 0\n"
    monkeypatch.setattr(slurm, "_command", lambda args, timeout=30: lines)
    assert slurm.job_states(["159_0", "159_1", "159_3", "159_9", "160"]) == {
        "159_0": "COMPLETED", "159_1": "RUNNING", "159_3": "PENDING", "160": "CANCELLED"}


def test_a_just_submitted_job_that_sacct_does_not_show_yet_is_not_submitted_again(tmp_path, monkeypatch):
    """sacct lags a submission by seconds: a rerun in that window must wait for the job, not submit
    the run a second time (two tasks of one run: the later one found it busy and ended untested)."""
    import time

    from benchmark.results import store
    monkeypatch.setattr(slurm, "job_states", lambda ids: {})                  # sacct knows none of them yet
    store.write_json(tmp_path / "fresh" / "slurm.json", {"job_id": "41_0", "submitted": time.time() - 5})
    store.write_json(tmp_path / "old" / "slurm.json", {"job_id": "40_0", "submitted": time.time() - slurm.LOST_S - 1})
    assert slurm.active_job(tmp_path / "fresh") == "41_0"
    assert slurm.active_job(tmp_path / "old") is None                         # lost: submitted afresh
    monkeypatch.setattr(slurm, "job_states", lambda ids: {i: "COMPLETED" for i in ids})
    assert slurm.active_job(tmp_path / "fresh") is None
    monkeypatch.setattr(slurm, "job_states", lambda ids: {i: "RUNNING" for i in ids})
    assert slurm.active_job(tmp_path / "old") == "40_0"
    # a job whose run has its outcome is over, though sacct still says RUNNING (or nothing): the
    # chosen candidate's test must be submitted, not left to the training job that ended
    store.write_json(tmp_path / "fresh" / "status.json", {"state": "trained"})
    assert slurm.active_job(tmp_path / "fresh") is None
    monkeypatch.setattr(slurm, "job_states", lambda ids: {})
    assert slurm.active_job(tmp_path / "fresh") is None


def test_an_array_task_waits_for_a_run_another_task_holds_then_finishes_it(capsys):
    answers = iter([{"state": "busy", "reason": "pid 7 on node1 is running this run"}, {"state": "busy"},
                    {"state": "done"}])
    calls = []
    result = slurm.run_until_free(lambda: calls.append(1) or next(answers), poll_s=0)
    assert result == {"state": "done"} and len(calls) == 3
    assert capsys.readouterr().err.count("pid 7 on node1 is running this run; waiting for it") == 1
