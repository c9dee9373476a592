"""The SLURM executor's parts that need no cluster: profiles, job states, the shipped files."""
from pathlib import Path

import pytest

from benchmark.executors import slurm

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["dev", "example-gpu"])
def test_shipped_profiles_load(name):
    profile = slurm.load_profile(name)
    assert set(slurm.PROFILE_KEYS) <= set(profile) and profile["time_min"] >= 1


def test_profile_errors_name_the_file_and_the_choices(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("partition: gpu\ngpus: 2\n")
    with pytest.raises(slurm.SlurmError, match=r"bad.yaml: unknown key\(s\) gpus; expected partition, account"):
        slurm.load_profile(str(bad))
    with pytest.raises(slurm.SlurmError, match="no cluster profile 'nowhere'.*shipped profiles: dev, example-gpu"):
        slurm.load_profile("nowhere")


def test_terminal_states():
    assert slurm.is_terminal("COMPLETED") and slurm.is_terminal("CANCELLED by 0") and slurm.is_terminal("NODE_FAIL")
    assert not any(slurm.is_terminal(s) for s in ("PENDING", "RUNNING", "REQUEUED", "COMPLETING", None))


def test_dev_cluster_scripts_are_there():
    for name in ("start.sh", "stop.sh"):
        text = (ROOT / "slurm" / "dev-cluster" / name).read_text()
        assert text.startswith("#!/usr/bin/env bash")
