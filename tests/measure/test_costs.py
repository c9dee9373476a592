"""Profiling: MAC handles against hand counts, both conventions on Restore-RWKV, the CLI end to end."""
import json
import sys

import numpy as np
import pytest
import torch
import torch.nn as nn

import models
from benchmark.measure import costs
from benchmark.results import stats
from benchmark.render import __main__ as render_cli


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
    paper, uncounted = costs.count_macs(Small(), (1, 1, 16, 16), "paper")
    assert paper * 1e9 == pytest.approx(expected) and uncounted == []
    full, uncounted = costs.count_macs(Small(), (1, 1, 16, 16), "full")
    # fvcore counts a LayerNorm as 5 per element (mean, variance, normalise, affine) instead of 4
    assert full * 1e9 == pytest.approx(expected - 4 * 1024 + 5 * 1024) and uncounted == []


def test_full_convention_counts_wkv_and_names_what_it_cannot_count(monkeypatch):
    tiny = models.create_model("restore_rwkv_tiny")
    with_wkv, missing = costs.count_macs(tiny, (1, 1, 64, 64), "full")
    assert missing == []
    monkeypatch.setattr(costs, "WKV_MACS_PER_ELEMENT", {"BiWKVOp": 0, "UniWKVOp": 0})
    without, _ = costs.count_macs(tiny, (1, 1, 64, 64), "full")
    # tokens x channels of the blocks (dim 8; level 1 decoder and refinement at 16), 2 passes each
    tokens_channels = 64 ** 2 * 8 + 32 ** 2 * 16 + 16 ** 2 * 32 + 8 ** 2 * 64 + 16 ** 2 * 32 + 32 ** 2 * 16 \
        + 2 * 64 ** 2 * 16
    assert (with_wkv - without) * 1e9 == pytest.approx(7 * 2 * tokens_channels)
    monkeypatch.setattr(costs, "ELEMENTWISE", set())
    _, missing = costs.count_macs(tiny, (1, 1, 64, 64), "full")
    assert "aten::mul" in missing and "aten::sigmoid" in missing               # never silently dropped


def test_restore_rwkv_counts():
    model = models.create_model("restore_rwkv")
    assert round(costs.count_params(model, deploy=True) * 1e6) == 27_846_625
    assert round(costs.count_params(model) * 1e6) == 27_996_737
    paper, _ = costs.count_macs(model, (1, 1, 128, 128), "paper")
    assert round(paper, 4) == 37.4585                                           # the paper's FLOPs column
    # the training form counts the same (the deploy form is what the paper counted)
    assert costs.count_macs(model.train(), (1, 1, 128, 128), "paper")[0] == paper


def test_growth_exponent():
    assert stats.growth_exponent([1, 4, 16], [3, 12, 48]) == pytest.approx(1.0)
    assert stats.growth_exponent([1, 4, 16], [1, 16, 256]) == pytest.approx(2.0)


def test_latency_modes():
    tiny = models.create_model("restore_rwkv_tiny")
    for mode in ("infer", "train"):
        result = costs.measure_latency(tiny, (1, 1, 16, 16), mode=mode, repeat=2)
        assert result["min_ms"] <= result["median_ms"] <= result["max_ms"]
    with pytest.raises(ValueError, match="unknown mode"):
        costs.measure_latency(tiny, (1, 1, 16, 16), mode="eval")


def test_cli_measures_into_the_store_and_renders_the_efficiency_table(tmp_path, capsys):
    argv = ["--name", "eff", "--models", "restore_rwkv_tiny", "--sizes", "16", "32", "--repeat", "1",
            "--train-size", "16", "--train-batch", "2", "--out", str(tmp_path / "runs"), "--tables", str(tmp_path / "t")]
    assert costs.main(argv) == 0
    record = json.loads((tmp_path / "runs" / "eff" / "efficiency.json").read_text())
    rows = record["inference"]
    assert [r["size"] for r in rows] == [16, 32] and all(r["outcome"] == "ok" and r["median_ms"] > 0 for r in rows)
    if sys.platform == "linux":
        assert all(r["peak_mb"] > 0 for r in rows)                              # the worker's own peak
    assert rows[1]["full_gmacs"] == pytest.approx(4 * rows[0]["full_gmacs"], rel=0.01)
    assert record["training"][0]["batch"] == 2 and record["environment"]["threads"] >= 1
    assert record["command"].startswith("python -m benchmark.profile --name eff")
    table = (tmp_path / "t" / "eff.md").read_text()
    assert "| restore_rwkv_tiny | 0.1868 | 0.1827 |" in table and "![latency and memory](eff.png)" in table
    assert (tmp_path / "t" / "eff.png").stat().st_size > 0
    # the renderer alone gives the same table from the store
    (tmp_path / "t" / "eff.md").unlink()
    assert render_cli.main([str(tmp_path / "runs" / "eff"), "--out", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t" / "eff.md").read_text() == table
    with pytest.raises(SystemExit):
        costs.main(["--models", "nope*"])


def _record(inference: list[dict]) -> dict:
    return {"name": "e", "title": "E", "command": "python -m benchmark.profile", "inference": inference,
            "environment": {"machine": "test CPU", "threads": 2, "torch": "x", "device": "cpu"},
            "settings": {"sizes": [64, 128, 256, 512], "repeat": 3, "max_seconds": 30, "train_size": 128,
                         "train_batch": 4, "macs_size": 128},
            "models": [{"model": m, "params_m": 1.0, "deploy_params_m": 1.0, "paper_gmacs": 2.0, "full_gmacs": 3.0,
                        "uncounted": []} for m in ("a", "b", "c")],
            "training": [{"model": "a", "size": 128, "batch": 2, "median_ms": 250.0, "outcome": "ok"},
                         {"model": "b", "size": 128, "outcome": "oom", "error": "out of memory"}]}


def test_the_efficiency_table_fits_exponents_and_shows_what_was_not_measured(tmp_path):
    from benchmark.render import efficiency
    rng = np.random.default_rng(0)
    inference = []
    for size in (64, 128, 256, 512):              # a: latency ~ pixels^1.5 with noise, memory ~ pixels
        pixels = size ** 2
        inference.append({"model": "a", "size": size, "batch": 1, "outcome": "ok",
                          "median_ms": 1e-3 * pixels ** 1.5 * rng.uniform(0.9, 1.1),
                          "peak_mb": 1e-3 * pixels, "full_gmacs": 1e-6 * pixels})
    inference += [{"model": "b", "size": 64, "batch": 1, "outcome": "ok", "median_ms": 5.0, "peak_mb": 9.0,
                   "full_gmacs": 1.0},
                  {"model": "b", "size": 128, "outcome": "oom", "error": "out of memory"},
                  {"model": "b", "size": 256, "outcome": "oom"},
                  {"model": "b", "size": 512, "outcome": "skipped"}]
    inference += [{"model": "c", "size": size, "batch": 1, "outcome": "ok", "median_ms": ms, "peak_mb": 10.0,
                   "full_gmacs": 1.0} for size, ms in ((64, 10.0), (128, 80.0))]   # 8x for 4x pixels: 1.5
    inference += [{"model": "c", "size": 256, "outcome": "skipped"}]
    table = efficiency.render_markdown(_record(inference))
    fitted = [r for r in inference if r["model"] == "a" and r["size"] >= 128]
    expected = np.polyfit(np.log([r["size"] ** 2 for r in fitted]), np.log([r["median_ms"] for r in fitted]), 1)[0]
    assert f"| a | 1 | 1 | 2 | 3 | 250 (batch 2) | {expected:.2f} | 1.00 | 1.00 | 128², 256², 512² |" in table
    assert "| b | 1 | 1 | 2 | 3 | OOM | - | - | - | - |" in table
    assert "| b | 5.0 | OOM | OOM | > 30 s |" in table
    assert "| 1.50 | 0.00 | 0.00 | 64², 128² |" in table                      # c: two sizes only
    efficiency.figure(_record(inference), tmp_path / "e.png")
    assert (tmp_path / "e.png").stat().st_size > 0


def fake_worker(name, size, batch, mode, repeat, queue):
    """Out of memory above batch 1 (``fine``) or always (``huge``), a crash (``crash``), or 1 ms per
    1,000 pixels (``slow``). Module level: spawned processes import it."""
    if name == "crash":
        raise SystemExit(3)
    if name == "huge" or (name == "fine" and batch > 1):
        queue.put({"model": name, "size": size, "error": "RuntimeError: CUDA out of memory"})
    else:
        queue.put({"model": name, "size": size, "batch": batch, "median_ms": size * size / 1000, "full_gmacs": 1.0})


def test_sweep_backs_off_the_batch_and_survives_a_crash():
    rows = costs.sweep(["fine", "crash", "huge"], [16], batch=4, worker=fake_worker)
    assert rows[0]["batch"] == 1 and rows[0]["outcome"] == "ok"                  # 4 -> 2 -> 1
    assert rows[1]["outcome"] == "error" and rows[1]["error"] == "worker exited with code 3"   # the sweep went on
    assert rows[2]["outcome"] == "oom"


def test_sweep_skips_sizes_predicted_to_exceed_the_time_cap():
    # 100x100: 10 ms; 200x200 is predicted at 40 ms (run), 400x400 at 160 ms > 0.1 s: skipped, and so is 800
    rows = costs.sweep(["slow"], [800, 100, 200, 400], worker=fake_worker, max_seconds=0.1)
    assert [(r["size"], r["outcome"]) for r in rows] == [(100, "ok"), (200, "ok"), (400, "skipped"), (800, "skipped")]


class Normalise(nn.Module):
    def forward(self, x):
        return torch.nn.functional.normalize(x, dim=-1)


def test_reductions_count_one_per_element():
    macs, uncounted = costs.count_macs(Normalise(), (1, 1, 8, 8), "full")
    assert macs * 1e9 == pytest.approx(64) and uncounted == []


@pytest.mark.parametrize("name", models.list_models("*_tiny"))
def test_every_model_has_a_complete_full_count(name):
    macs, uncounted = costs.count_macs(models.create_model(name), (1, 1, 32, 32), "full")
    assert macs > 0 and uncounted == [], f"{name}: ops without a MAC handle: {uncounted}"
