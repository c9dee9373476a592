"""Rendering from a fixed, hand-written store: the markdown against a golden file, the marks,
the ERF rescaling and area measure against hand-computed values."""
from pathlib import Path

import numpy as np
import pytest

from benchmark.harness import config as cfg
from benchmark.base import provenance
from benchmark.results import store
from benchmark.render import render_grid
from benchmark.render.figures import high_contribution_area, rescale
from benchmark.render.tables import _marks
from benchmark.results.paper import paper_numbers

GOLDEN = Path(__file__).parent / "golden" / "token_shift_store.md"
ROOT = Path(__file__).resolve().parents[2]


INPUT_PSNR = 20.96       # every row but k=1 gains more than the smoke scale's train.min_gain (2 dB) over it


def _run(grid_dir: Path, folder: str, label: str, options: dict, state: str, psnr=None, seed=0, reason="",
         scored_on="mri_sr", health=None, network=None):
    config = cfg.resolve("smoke", {"task": "mri_sr", "seed": seed,
                                   "model": {"name": "restore_rwkv", "options": options}})
    store.write_json(grid_dir / folder / "spec.json", {"id": folder, "label": label, "slug": folder,
                                                       "model": "restore_rwkv_tiny", "config": config})
    status = {"state": state, "id": folder, "code_hash": provenance.code_hash(), "finished": 1796212800.0 + seed * 86400}
    store.write_json(grid_dir / folder / "environment.json", {"git_commit": "0123456789abcdef", "git_dirty": False,
                                                              "cpu": "Test CPU 9000", "threads": 1})
    if reason:
        status["reason"] = reason
    if health:
        status["health"] = health
    store.write_json(grid_dir / folder / "status.json", status)
    store.write_json(grid_dir / folder / "profile.json", {"params_m": 0.2, "deploy_params_m": 0.18 + len(label) / 1e4,
                                                          "paper_gmacs": 0.25, "full_gmacs": 0.3, "latency_ms": 5.0,
                                                          "size": 128, "network": network or f"net-{label}"})
    if psnr is not None:
        store.write_json(grid_dir / folder / "test.json", {"tasks": {scored_on: {
            "images": 8, "psnr": psnr, "ssim": psnr / 40, "rmse": 300 - psnr, "input_psnr": INPUT_PSNR,
            "input_ssim": 0.5763, "input_rmse": 236.94}}})
        # four images whose scores are the run's mean plus the same offsets for every run
        store.write_csv(grid_dir / folder / "test_images.csv", [
            {"task": scored_on, "index": i, "subject": f"phantom-{i}", "psnr": psnr + offset, "ssim": psnr / 40 + offset / 100,
             "rmse": 300 - psnr - offset, "input_psnr": INPUT_PSNR + offset, "input_ssim": 0.5763, "input_rmse": 236.94}
            for i, offset in enumerate((-0.3, -0.1, 0.1, 0.3))])
        erf = np.zeros((2, 9, 9))                                   # two images: one point, then two points
        erf[:, 4, 4], erf[1, 4, 5] = 1.0, len(label) / 10
        store.write_array(grid_dir / folder / "erf.npy", erf)
    return {"id": folder, "folder": folder, "label": label}


def build_store(root: Path) -> Path:
    grid_dir = root / "token_shift"
    did_not_learn = {"verdict": "did not learn", "learned": False, "val_gain_db": 1.2, "min_gain_db": 2.0}
    runs = [_run(grid_dir, "k1-a", "k=1", {"shift_kernel": 1}, "done", 23.10, health=did_not_learn),
            _run(grid_dir, "k5-b", "k=5", {"shift_kernel": 5}, "done", 23.40),
            _run(grid_dir, "k5-c", "k=5", {"shift_kernel": 5}, "done", 23.20, seed=1),
            _run(grid_dir, "k9-d", "k=9", {"shift_kernel": 9}, "failed", reason="TrainingDiverged: the loss became nan"),
            _run(grid_dir, "q-e", "Q-Shift", {"shift": "quad"}, "done", 23.25)]
    for index, run in enumerate(runs):
        run["index"] = index
    store.write_grid(grid_dir, {"name": "token_shift", "table": 8, "title": "Token shift", "scale": "smoke",
                                "reference": "k=5", "note": "a note from the grid file.",
                                "file": "ablations/token_shift.yaml", "runs": runs})
    return grid_dir


def test_rendered_table_matches_the_golden_file(tmp_path):
    written = render_grid(build_store(tmp_path / "runs"), tmp_path / "tables")
    assert [p.name for p in written] == ["token_shift.md", "token_shift_erf.png", "claims.md", "leaderboard.csv",
                                         "leaderboard.json", "index.html"]        # no train_log.csv: no curves
    text = written[0].read_text()
    assert text == GOLDEN.read_text()
    # rendering is deterministic: the same store gives the same bytes
    again = render_grid(tmp_path / "runs" / "token_shift", tmp_path / "again")
    assert again[0].read_bytes() == written[0].read_bytes()
    assert again[1].read_bytes() == written[1].read_bytes()


def test_golden_file_shows_means_marks_failures_and_the_paper():
    text = GOLDEN.read_text()
    # k=5 is the mean of two seeds (23.40, 23.20): 23.30, best; Q-Shift 23.25 second; RMSE lower is better
    assert "| k=5 (seeds 0-1) | 0.1803 | 0.2500 | **23.30** | **0.5825** | **276.70** | 32.09 | 0.9408 | 28.97 |" in text
    assert "| Q-Shift (seed 0) | 0.1807 | 0.2500 | <u>23.25</u> |" in text
    assert "| k=9 | 0.1803 | 0.2500 | failed | - | - | 32.03 | 0.9398 | 29.14 |" in text
    assert "- k=9: TrainingDiverged: the loss became nan" in text
    assert "| k=5 (w/o Reparam.) | - | - | not run | - | - | 32.01 | 0.9396 | 29.20 |" in text
    # a smoke table on phantoms has no ours − paper column: a phantom PSNR minus a real-data one means nothing
    assert "ours − paper" not in text and "not comparable with ours at this scale and data" in text
    # the banner's spread is the paper's own: k=5 (32.0913) against k=7 (32.0578) and k=1 (31.8545)
    assert "in this table the paper's rows differ from k=5 by 0.03 to 0.24 dB PSNR" in text
    assert "[`claims.md`](claims.md#table-8)" in text


def test_golden_file_compares_every_row_with_the_reference():
    """By hand: every run's images differ from the run's mean by the same offsets, so a row's
    difference to k=5 is the same on every image. k=5's two seeds (23.40, 23.20) resample to a mean
    of 23.40, 23.30 or 23.20 (1/4, 1/2, 1/4): k=1 (23.10) differs by -0.30, -0.20 or -0.10, whose
    2.5% and 97.5% quantiles are -0.30 and -0.10, and none at or above 0: p = 0 (< 0.001); Q-Shift
    (23.25) by -0.15, -0.05 or +0.05, which holds 0, with a quarter of the resamples at or above 0:
    p = 2 x 1/4 = 0.5 (0.505 with this resampling). Holm over the two: k=1 2 x 0, Q-Shift 0.505. Four
    equal signs give the exact two-sided Wilcoxon p = 2 / 2^4 = 0.125 (the secondary column). k=5
    ranks first unless it resamples to 23.20 (below Q-Shift): 75%, Q-Shift 25%."""
    text = GOLDEN.read_text()
    assert "| k=1 ✗ | 1 | 23.10 | +2.14 ✗ | -0.20 [-0.30, -0.10] | <0.001 | <0.001 |" in text
    assert "| k=5 | 2 | 23.30 ± 0.14 | +2.34 | reference | - | - | reference | - | - | 75% |" in text
    assert "| Q-Shift | 1 | 23.25 | +2.29 | -0.05 [-0.15, +0.05] ≈ | 0.505 | 0.505 |" in text
    assert "| 0.125 | 25% |" in text
    assert "Unit: 4 test images of 4 phantoms (one image each); the phantoms are resampled." in text


def test_golden_file_marks_the_row_whose_run_did_not_learn():
    """k=1's run ended 1.2 dB above its validation inputs (under the 2 dB margin) though its test gain
    is 2.14 dB: marked in both tables, with its footnote; the reference learned, so no warning."""
    text = GOLDEN.read_text()
    assert "| k=1 ✗ (seed 0) | 0.1803 | 0.2500 | 23.10 |" in text
    assert ("✗ did not learn at this scale: k=1 (test gain +2.14 dB; validation, seed 0: +1.2 dB). A row is "
            "marked when") in text
    assert "**The reference row" not in text
    # Q-Shift's two maps hold 90% of their contribution in 1 and 2 of the 81 pixels: 1.85% +- 0.87%
    assert text.rstrip().endswith("| Q-Shift | 2 | 2.5% | 1.9% ± 0.9% |")


def test_a_run_scored_on_another_task_says_so(tmp_path):
    """A hand-made grid that mixes tasks: the table's task is the first run's; a finished run that
    was scored on another task is not shown as unfinished."""
    grid_dir = tmp_path / "mixed"
    runs = [_run(grid_dir, "a", "k=1", {"shift_kernel": 1}, "done", 23.10),
            _run(grid_dir, "b", "k=5", {"shift_kernel": 5}, "done", 30.0, scored_on="pet_synthesis")]
    for index, run in enumerate(runs):
        run["index"] = index
    store.write_grid(grid_dir, {"name": "mixed", "title": "Mixed", "scale": "smoke", "file": "mixed.yaml", "runs": runs})
    text = render_grid(grid_dir, tmp_path / "tables")[0].read_text()
    assert "| k=5 | 0.1803 | 0.2500 | scored on pet_synthesis |" in text
    assert "| k=1 (seed 0) | 0.1803 | 0.2500 | **23.10** |" in text


def test_marks_rank_best_and_second_with_ties():
    assert _marks([1.0, 3.0, 2.0, None], True, 2) == ["", "best", "second", ""]
    assert _marks([1.0, 3.0, 2.0], False, 2) == ["best", "", "second"]
    assert _marks([2.0, 2.0, 1.0], True, 2) == ["best", "best", "second"]


def test_erf_rescaling_and_area():
    erf = np.array([[0.0, 16.0], [1.0, 81.0]])
    assert np.allclose(rescale(erf), [[0, (16 / 81) ** 0.25], [(1 / 81) ** 0.25, 1]])
    assert high_contribution_area(erf) == 0.5          # 81 alone is 82.7% of 98; 81 + 16 is 99%
    assert high_contribution_area(np.zeros((3, 3))) == 0.0
    assert high_contribution_area(np.ones((10, 10))) == pytest.approx(0.9)


def test_paper_numbers_are_transcribed():
    rows = paper_numbers()
    assert len(rows) == 67 and {r["table"] for r in rows} == set(range(1, 9))
    rwkv = next(r for r in rows if r["table"] == 1 and r["method"] == "Restore-RWKV")
    assert (rwkv["params_m"], rwkv["flops_g"], rwkv["psnr"], rwkv["ssim"], rwkv["rmse"]) == (
        27.9140, 37.4585, 32.0913, 0.9408, 28.9713)


def test_render_command_reports_a_missing_store(tmp_path, capsys):
    from benchmark.render.__main__ import main
    assert main([str(tmp_path / "nothing")]) == 2
    assert "not a grid store" in capsys.readouterr().err


def test_rows_that_cannot_be_paired_get_a_note_not_a_crash(tmp_path):
    grid_dir = build_store(tmp_path / "runs")
    path = grid_dir / "k1-a" / "test_images.csv"
    path.write_text("\n".join(path.read_text().splitlines()[:-1]) + "\n")        # k=1 lost one image
    text = render_grid(grid_dir, tmp_path / "tables")[0].read_text()
    assert ("No statistics: rows 'k=1' and 'k=5' were scored on different images (3 and 4 images; ids in one but "
            "not the other: [3]); cannot pair them.") in text
    assert "| k=5 (seeds 0-1) | 0.1803 | 0.2500 | **23.30** |" in text


def test_a_floored_row_is_marked_and_its_rule_given_and_a_row_that_did_not_learn_stays(tmp_path):
    """Flag, never drop: a row whose tiny preset was raised to the parameter floor carries † and the
    footnote gives the rule (recorded with the run); the row that did not learn keeps its ✗ and gain."""
    grid_dir = build_store(tmp_path / "runs")
    profile = store.read_json(grid_dir / "q-e" / "profile.json")
    store.write_json(grid_dir / "q-e" / "profile.json", {**profile, "floored": {"floor": 4000, "divisor": 150}})
    text = render_grid(grid_dir, tmp_path / "tables")[0].read_text()
    assert "| Q-Shift † (seed 0) |" in text and "| k=5 (seeds 0-1) |" in text and "k=5 †" not in text
    assert ("† Q-Shift: a tiny preset keeps the paper's size / 150 unless that is under 4,000 trainable parameters; "
            "then the full model's widths are scaled uniformly to the smallest size of at least 4,000") in text
    assert "| k=1 ✗ (seed 0) |" in text and "✗ did not learn at this scale: k=1 (test gain" in text


def test_every_p_value_of_a_rendered_table_agrees_with_its_interval(tmp_path):
    """In the table rendered from the fixed store, each comparison's p is under 0.05 exactly when its
    interval excludes 0 (no ≈), for PSNR (its p column) and SSIM (its Holm p is never smaller than
    its own p, so an SSIM Holm p under 0.05 needs an interval that excludes 0)."""
    text = render_grid(build_store(tmp_path / "runs"), tmp_path / "tables")[0].read_text()
    header = next(line for line in text.splitlines() if line.startswith("| Method | seeds |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and len(line.strip("|").split("|")) == len(columns) and "reference" not in line
            and not line.startswith("| Method")]
    assert len(rows) == 2
    number = lambda cell: 0.0 if cell == "<0.001" else float(cell)  # noqa: E731
    for row in rows:
        psnr_interval, p, ssim_interval, ssim_holm = row[4], row[5], row[7], row[8]
        assert (number(p) < 0.05) == (not psnr_interval.endswith("≈")), row
        if number(ssim_holm) < 0.05:
            assert not ssim_interval.endswith("≈"), row


def test_a_table_names_the_ct_phantoms_dose_and_a_widened_preset_with_its_reason():
    from benchmark.render import tables
    config = {"data": {"sources": {"ct_denoise": "phantom-ct", "mri_sr": "phantom-mri"}, "phantom_ct_dose": 0.0625}}
    assert tables._source_text(config, "ct_denoise") == \
        "`phantom-ct` at 1/16 of the full dose (the paper's data: 1/4)"
    assert tables._source_text(config, "mri_sr") == "`phantom-mri`"
    config["data"]["phantom_ct_dose"] = 0.25
    assert tables._source_text(config, "ct_denoise") == "`phantom-ct`"
    note = tables.floored_note([
        {"label": "SRCNN", "floored": {"floor": 4000, "divisor": 150}},
        {"label": "REDCNN", "floored": {"widened": "16 filters where the rule gives 8", "divisor": 150}},
        {"label": "SwinIR", "floored": None}])
    assert note.startswith("† SRCNN: a tiny preset keeps the paper's size / 150 unless that is under 4,000")
    assert "† REDCNN: its tiny preset is wider than the paper's size / 150: 16 filters where the rule gives 8" in note
    assert "SwinIR" not in note
