"""Profiling: MAC handles against hand counts, both conventions on Restore-RWKV, the CLI end to end."""
import csv
import sys

import pytest
import torch
import torch.nn as nn

import models
from benchmark import profile


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)             # 16x16 out: 4*256 * 1*9
        self.depthwise = nn.Conv2d(4, 4, 5, padding=2, groups=4, bias=False)   # 4*256 * 25
        self.norm = nn.LayerNorm(4)                           # thop: 2 per element, x2 affine: 4 * 1024
        self.linear = nn.Linear(4, 6)                         # 256*6 * 4
        self.back = nn.Linear(6, 1)                           # 256 * 6

    def forward(self, x):
        x = self.depthwise(self.conv(x)).permute(0, 2, 3, 1)
        return self.back(torch.relu(self.linear(self.norm(x)))).permute(0, 3, 1, 2)


def test_paper_and_full_conventions_on_hand_counted_modules():
    expected = 4 * 256 * 9 + 4 * 256 * 25 + 4 * 1024 + 256 * 6 * 4 + 256 * 6
    paper, uncounted = profile.count_macs(Small(), (1, 1, 16, 16), "paper")
    assert paper * 1e9 == pytest.approx(expected) and uncounted == []
    full, uncounted = profile.count_macs(Small(), (1, 1, 16, 16), "full")
    # fvcore counts a LayerNorm as 5 per element (mean, variance, normalise, affine) instead of 4
    assert full * 1e9 == pytest.approx(expected - 4 * 1024 + 5 * 1024) and uncounted == []


def test_full_convention_counts_wkv_and_names_what_it_cannot_count(monkeypatch):
    tiny = models.create_model("restore_rwkv_tiny")
    with_wkv, missing = profile.count_macs(tiny, (1, 1, 64, 64), "full")
    assert missing == []
    monkeypatch.setattr(profile, "WKV_MACS_PER_ELEMENT", {"BiWKVOp": 0, "UniWKVOp": 0})
    without, _ = profile.count_macs(tiny, (1, 1, 64, 64), "full")
    # tokens x channels of the blocks (dim 8; level 1 decoder and refinement at 16), 2 passes each
    tokens_channels = 64 ** 2 * 8 + 32 ** 2 * 16 + 16 ** 2 * 32 + 8 ** 2 * 64 + 16 ** 2 * 32 + 32 ** 2 * 16 \
        + 2 * 64 ** 2 * 16
    assert (with_wkv - without) * 1e9 == pytest.approx(7 * 2 * tokens_channels)
    monkeypatch.setattr(profile, "ELEMENTWISE", set())
    _, missing = profile.count_macs(tiny, (1, 1, 64, 64), "full")
    assert "aten::mul" in missing and "aten::sigmoid" in missing               # never silently dropped


def test_restore_rwkv_counts():
    model = models.create_model("restore_rwkv")
    assert round(profile.count_params(model, deploy=True) * 1e6) == 27_846_625
    assert round(profile.count_params(model) * 1e6) == 27_996_737
    paper, _ = profile.count_macs(model, (1, 1, 128, 128), "paper")
    assert round(paper, 4) == 37.4585                                           # the paper's FLOPs column
    # the training form counts the same (the deploy form is what the paper counted)
    assert profile.count_macs(model.train(), (1, 1, 128, 128), "paper")[0] == paper


def test_growth_exponent():
    assert profile.growth_exponent([1, 4, 16], [3, 12, 48]) == pytest.approx(1.0)
    assert profile.growth_exponent([1, 4, 16], [1, 16, 256]) == pytest.approx(2.0)


def test_latency_modes():
    tiny = models.create_model("restore_rwkv_tiny")
    for mode in ("infer", "train"):
        result = profile.measure_latency(tiny, (1, 1, 16, 16), mode=mode, repeat=2)
        assert result["min_ms"] <= result["median_ms"] <= result["max_ms"]
    with pytest.raises(ValueError, match="unknown mode"):
        profile.measure_latency(tiny, (1, 1, 16, 16), mode="eval")


def test_cli_writes_csv_table_and_plot(tmp_path, capsys):
    assert profile.main(["--models", "restore_rwkv_tiny", "--sizes", "16", "32", "--repeat", "1",
                         "--out", str(tmp_path)]) == 0
    rows = list(csv.DictReader(open(tmp_path / "scaling.csv")))
    assert [int(r["size"]) for r in rows] == [16, 32] and all(float(r["median_ms"]) > 0 for r in rows)
    if sys.platform == "linux":
        assert all(float(r["peak_mb"]) > 0 for r in rows)                       # the worker's own peak
    assert float(rows[1]["full_gmacs"]) == pytest.approx(4 * float(rows[0]["full_gmacs"]), rel=0.01)
    assert (tmp_path / "scaling.png").stat().st_size > 0
    table = (tmp_path / "scaling.md").read_text()
    assert "| restore_rwkv_tiny | 16, 32 |" in table
    assert "| restore_rwkv_tiny |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        profile.main(["--models", "nope*"])


def fake_worker(name, size, batch, mode, repeat, queue):
    """A worker that runs out of memory above batch 1 (module level: spawned processes import it)."""
    if name == "crash":
        raise SystemExit(3)
    if batch > 1:
        queue.put({"model": name, "size": size, "error": "RuntimeError: CUDA out of memory"})
    else:
        queue.put({"model": name, "size": size, "batch": batch, "median_ms": 1.0, "full_gmacs": 1.0})


def test_sweep_backs_off_the_batch_and_survives_a_crash():
    rows = profile.sweep(["fine", "crash"], [16], batch=4, worker=fake_worker)
    assert rows[0]["batch"] == 1 and "error" not in rows[0]                     # 4 -> 2 -> 1
    assert rows[1]["error"] == "worker exited with code 3"                      # the sweep went on


class Normalise(nn.Module):
    def forward(self, x):
        return torch.nn.functional.normalize(x, dim=-1)


def test_reductions_count_one_per_element():
    macs, uncounted = profile.count_macs(Normalise(), (1, 1, 8, 8), "full")
    assert macs * 1e9 == pytest.approx(64) and uncounted == []


@pytest.mark.parametrize("name", models.list_models("*_tiny"))
def test_every_model_has_a_complete_full_count(name):
    macs, uncounted = profile.count_macs(models.create_model(name), (1, 1, 32, 32), "full")
    assert macs > 0 and uncounted == [], f"{name}: ops without a MAC handle: {uncounted}"
