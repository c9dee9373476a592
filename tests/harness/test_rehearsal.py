"""The paper-scale rehearsal (``tests/rehearsal.py``) on the SLURM dev cluster: one grid per task,
the reference and one other row, real data layouts and image sizes, one array task preempted and
requeued. CI runs the shrunken variant (tiny presets); the slow test runs the full-size models at
the paper's batch and crop. Skipped, as the other SLURM tests, where no dev cluster answers."""
import json
import re

import pytest

from tests import rehearsal
from tests.helpers import slurm_unavailable

WHY_NOT = slurm_unavailable()
pytestmark = [pytest.mark.slurm, pytest.mark.skipif(bool(WHY_NOT), reason=WHY_NOT)]
GRIDS = ["mri_sr", "ct_denoise", "pet_synthesis"]


def check(out):
    for name in GRIDS:
        table = (out / "tables" / f"{name}.md").read_text()
        assert "| Restore-RWKV |" in table
        states = [json.loads(p.read_text())["state"] for p in (out / "runs" / name).glob("*/status.json")]
        assert states == ["done", "done"], (name, states)
    manifests = {t: json.loads((out / "data" / t / "manifest.json").read_text()) for t in ("mri", "ct", "pet")}
    assert manifests["mri"]["splits"]["test"]["shape"] == [256, 256]            # the real slice sizes
    assert manifests["ct"]["splits"]["test"]["shape"] == [512, 512]
    assert manifests["pet"]["splits"]["test"]["shape"] == [192, 192]
    attempts = [json.loads(p.read_text()).get("attempts") for name in GRIDS
                for p in (out / "runs" / name).glob("*/status.json")]
    assert sorted(attempts) == [1, 1, 1, 1, 1, 2]                                # the preempted one, requeued


def test_the_shrunken_rehearsal_runs_every_stage_through_slurm_with_a_preemption(tmp_path, capsys):
    assert rehearsal.main(["--out", str(tmp_path), "--grids", *GRIDS, "--rows", "2", "--shrink"]) == 0
    out = capsys.readouterr().out
    assert "the preempted run: 2 attempts, resumed from iteration" in out and "PROBLEM" not in out
    check(tmp_path)


@pytest.mark.slow
def test_the_rehearsal_trains_the_full_size_models_at_the_papers_batch(tmp_path, capsys):
    assert rehearsal.main(["--out", str(tmp_path), "--grids", *GRIDS, "--rows", "2", "--few-subjects"]) == 0
    check(tmp_path)
    said = capsys.readouterr().out                  # a row too big for this machine at batch 4 is named with its batch
    for name in GRIDS:
        for spec in (tmp_path / "runs" / name).glob("*/spec.json"):
            stored = json.loads(spec.read_text())
            config, label = stored["config"], stored["label"]
            smaller = re.search(rf"{name}: {re.escape(label)} trains at batch (\d+) \(", said)
            batch = int(smaller.group(1)) if smaller else 4
            assert (config["model"]["size"], config["train"]["batch"], config["train"]["crop"]) == ("full", batch, 128)
