"""The claims ledger: the paper's claims as data (checked against the paper's tables and our
grids), and the verdicts rendered from fixed, hand-written stores."""
from pathlib import Path

import numpy as np
import pytest

from benchmark.base import provenance
from benchmark.harness import config as cfg
from benchmark.harness import grid as grids
from benchmark.render import render_grid
from benchmark.results.paper import paper_numbers
from benchmark.results import claims, store

ROOT = Path(__file__).resolve().parents[2]
IMAGES = 8
# per image, the same for every run: a difficulty that pairs the rows (what each row's offsets ride on)
DIFFICULTY = np.array([0.4, -0.3, 0.1, -0.2, 0.3, -0.1, 0.2, -0.4])
NOISE = np.array([[0.02, -0.01, 0.03, -0.02, 0.01, -0.03, 0.02, -0.02],
                  [-0.02, 0.03, -0.01, 0.02, -0.03, 0.01, -0.02, 0.02]])


def paper_psnr(table: int, task: str, method: str, metric: str = "psnr") -> float:
    rows = [r for r in paper_numbers() if r["table"] == table and r["method"] == method
            and (task == claims.AVERAGE or r["task"] == task)]
    assert rows, (table, task, method)
    return float(np.mean([r[metric] for r in rows]))


def test_claims_parse_and_their_paper_differences_are_the_papers():
    """Every claim's paper difference is the paper's tables' (row A minus row B, to the two or four
    decimals the claim gives), and every row it names is a row of the built-in grid of its table."""
    parsed = claims.load_claims()
    assert len(parsed) == 53 and {c.kind for c in parsed} == set(claims.KINDS)
    labels = {}
    for path in (ROOT / "benchmark" / "grids").glob("*.yaml"):
        grid = grids.load_grid(path, check_models=False)
        if grid.table:
            labels[grid.table] = {spec.label for spec in grid.specs}
    for c in parsed:
        if c.kind in ("better", "within"):
            paper = paper_psnr(c.table, c.task, c.row_a, c.metric) - paper_psnr(c.table, c.task, c.row_b, c.metric)
            step = 0.0001 if c.metric == "ssim" else 0.01
            assert c.paper_delta == pytest.approx(paper, abs=step / 2 + 1e-4 * (c.metric == "ssim") + 1e-9), c
        if c.kind == "best":
            mine = {r["method"]: r["psnr"] for r in paper_numbers() if r["table"] == c.table and r["task"] == c.task}
            runner_up = max(v for m, v in mine.items() if m != c.row_a)
            assert mine[c.row_a] == max(mine.values())
            assert c.paper_delta == pytest.approx(mine[c.row_a] - runner_up, abs=0.005 + 1e-9)
        for row in (c.row_a, c.row_b):
            if row:
                assert row in labels[c.table], (c.id, row)
        if c.distinct_from:
            assert c.distinct_from[1] in labels[c.distinct_from[0]]


def test_a_claims_file_with_a_bad_row_is_refused():
    header = "id,table,kind,task,row_a,row_b,metric,paper_delta,margin,distinct_from,words,reason\n"
    with pytest.raises(ValueError, match="line 2 \\(claim 'x'\\): unknown kind 'beter'"):
        claims.load_claims(header + "x,8,beter,mri_sr,k=5,k=1,psnr,0.2,,,words,\n")
    with pytest.raises(ValueError, match="line 2 \\(claim 'x'\\): a better claim needs row_b"):
        claims.load_claims(header + "x,8,better,mri_sr,k=5,,psnr,0.2,,,words,\n")


def _grid(root: Path, name: str, table: int, reference: str, rows: dict, did_not_learn=()) -> Path:
    """A finished grid store: ``rows`` maps label -> (mean PSNR per seed, network signature,
    deploy params); each run's images are its mean + the shared difficulty + its seed's noise."""
    grid_dir = root / name
    runs = []
    for label, (means, network, params) in rows.items():
        for seed, mean in enumerate(means):
            folder = f"{name}-{len(runs)}"
            config = cfg.resolve("smoke", {"task": "mri_sr", "seed": seed, "model": {"name": "restore_rwkv"}})
            store.write_json(grid_dir / folder / "spec.json", {"id": folder, "label": label, "slug": folder,
                                                               "model": "restore_rwkv_tiny", "config": config})
            health = {"verdict": "did not learn", "learned": False, "val_gain_db": 0.5, "min_gain_db": 2.0} \
                if label in did_not_learn else {"verdict": "learned", "learned": True, "val_gain_db": 3.0}
            store.write_json(grid_dir / folder / "status.json", {"state": "done", "id": folder, "health": health,
                                                                 "code_hash": provenance.code_hash()})
            store.write_json(grid_dir / folder / "profile.json", {"params_m": params, "deploy_params_m": params,
                                                                  "paper_gmacs": 0.25, "size": 128,
                                                                  "network": network})
            scores = mean + DIFFICULTY + NOISE[seed]
            store.write_json(grid_dir / folder / "test.json", {"tasks": {"mri_sr": {
                "images": IMAGES, "psnr": scores.mean(), "ssim": 0.8, "rmse": 30.0, "input_psnr": 20.0,
                "input_ssim": 0.5, "input_rmse": 60.0}}})
            store.write_csv(grid_dir / folder / "test_images.csv", [
                {"task": "mri_sr", "index": i, "subject": f"phantom-{i}", "psnr": v, "ssim": 0.8 + v / 1000,
                 "rmse": 60 - v, "input_psnr": 20.0, "input_ssim": 0.5, "input_rmse": 60.0} for i, v in enumerate(scores)]
            )
            runs.append({"id": folder, "folder": folder, "label": label, "index": len(runs)})
    store.write_grid(grid_dir, {"name": name, "table": table, "title": name, "scale": "smoke", "reference": reference,
                                "file": f"ablations/{name}.yaml", "runs": runs})
    return grid_dir


def build_stores(root: Path) -> Path:
    """Tables 6, 7 and 8. Table 8: k=5 clearly above k=1 (confirmed), level with k=3 (not
    resolved), clearly below k=7 (contradicted); k=9 did not learn; k=5 without re-parameterization
    has k=5's deploy size (same cost). Table 7: Alternating between Blocks builds M=1 (H-Scan)'s
    network of Table 6."""
    _grid(root, "recurrence", 6, "M=2", {"M=1 (H-Scan)": ([25.0, 25.1], "net-h", 0.2),
                                         "M=2": ([26.0, 26.1], "net-m2", 0.2)})
    _grid(root, "scan_design", 7, "Recurrence in a Block", {
        "Alternating between Blocks": ([25.0, 25.1], "net-h", 0.2),
        "Sum in a Block": ([25.5, 25.6], "net-sum", 0.2),
        "Recurrence in a Block": ([26.0, 26.1], "net-m2", 0.2)})
    return _grid(root, "token_shift", 8, "k=5", {
        "k=1": ([25.0, 25.1], "net-1", 0.19), "k=3": ([26.0, 26.05], "net-3", 0.195),
        "k=5": ([26.0, 26.1], "net-m2", 0.2), "k=5 (w/o Reparam.)": ([25.9, 26.0], "net-5n", 0.2),
        "k=7": ([27.0, 27.1], "net-7", 0.21), "k=9": ([20.0, 20.1], "net-9", 0.22)}, did_not_learn=("k=9",))


def _ledger_row(text: str, claim: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {claim} |"))


def test_ledger_from_fixed_stores_has_every_verdict(tmp_path):
    written = render_grid(build_stores(tmp_path / "runs"), tmp_path / "tables")
    text = (tmp_path / "tables" / "claims.md").read_text()
    assert [p.name for p in written[-4:]] == ["claims.md", "leaderboard.csv", "leaderboard.json", "index.html"]
    assert _ledger_row(text, "33").endswith("| 2 / 2 | <0.001 | <0.001 | **confirmed** |")       # k=5 - k=1 = +1.0
    assert "| +1.00 [" in _ledger_row(text, "33")
    assert "**not resolved**" in _ledger_row(text, "34")                                          # k=3: -0.025 .. +0.05
    assert _ledger_row(text, "35").endswith("**contradicted** |") and "| -1.00 [" in _ledger_row(text, "35")
    assert _ledger_row(text, "36").endswith("**not testable**: k=9 did not learn at this scale (mri_sr): its "
                                            "numbers say training failed |")
    assert "**confirmed**: deploy params 0.2000 vs 0.2000 M" in _ledger_row(text, "38")
    assert ("**not testable**: Alternating between Blocks builds the same network as M=1 (H-Scan) (Table 6) at "
            "this scale") in _ledger_row(text, "31")
    assert "**not testable**: Table 1's grid has no store under runs/" in _ledger_row(text, "1")
    assert "**confirmed**" in _ledger_row(text, "32")                                             # +0.50 on 2 seeds
    counts = next(line for line in text.splitlines() if line.startswith("**confirmed:"))
    found = dict(part.split(": ") for part in counts.strip("*").split("** (")[0].split(" · "))
    assert sum(map(int, found.values())) == 53 and all(int(found[v]) > 0 for v in claims.VERDICTS)


def test_tables_mark_rows_that_build_another_rows_network(tmp_path):
    """Table 7's Alternating between Blocks builds Table 6's M=1 (H-Scan): marked ≡ in Table 7 with
    the rows it equals (its reference, the paper's model, equals Table 6's M=2 and Table 8's k=5)."""
    build_stores(tmp_path / "runs")
    text = render_grid(tmp_path / "runs" / "scan_design", tmp_path / "tables")[0].read_text()
    assert "| Alternating between Blocks ≡ (seeds 0-1) |" in text
    assert ("≡ Alternating between Blocks builds the same network as M=1 (H-Scan) (Table 6); Recurrence in a Block "
            "builds the same network as M=2 (Table 6), k=5 (Table 8), at this scale") in text
    assert "| Sum in a Block (seeds 0-1) |" in text


def test_holm_in_the_ledger_adjusts_over_a_tables_tested_claims(tmp_path):
    """The Holm-adjusted p of each tested better / best claim is Holm over its table's family (Table
    8: claims 33, 34, 35 and 37; Table 7: 32 alone, so its p is unchanged); claims without a store
    have none."""
    from benchmark.render.claims import gather
    from benchmark.results import stats
    build_stores(tmp_path / "runs")
    evidence = {table: g.evidence for table, g in gather(tmp_path / "runs").items()}
    verdicts = {v.claim.id: v for v in claims.judge(claims.load_claims(), evidence, resamples=2_000)}
    family = [verdicts[i] for i in ("33", "34", "35", "37")]
    assert [v.p_holm for v in family] == pytest.approx(stats.holm([v.p_value for v in family]))
    assert verdicts["32"].p_holm == verdicts["32"].p_value
    assert verdicts["1"].p_value is None and verdicts["1"].p_holm is None


def test_the_leaderboard_has_one_row_per_grid_row_and_task_with_its_interval_and_marks(tmp_path):
    """From the fixed stores: 2 + 3 + 6 rows, in table order; k=1 is 1.0 dB under k=5 (its interval
    runs from -1.1 to -0.9: a resample that draws each row's other seed twice); k=9 did not learn and
    keeps its row, marked;
    the CSV and the JSON hold the same rows and the documented columns."""
    import csv
    import json

    from benchmark.render.leaderboard import COLUMNS
    render_grid(build_stores(tmp_path / "runs"), tmp_path / "tables")
    rows = list(csv.DictReader((tmp_path / "tables" / "leaderboard.csv").open()))
    data = json.loads((tmp_path / "tables" / "leaderboard.json").read_text())
    assert tuple(rows[0]) == COLUMNS and data["columns"] == list(COLUMNS) and len(data["rows"]) == len(rows) == 11
    assert [r["grid"] for r in rows] == ["recurrence"] * 2 + ["scan_design"] * 3 + ["token_shift"] * 6
    k1 = next(r for r in data["rows"] if r["row"] == "k=1")
    assert k1["delta_psnr"] == -1.0                                   # seed means 25.0, 25.1 against 26.0, 26.1
    assert (k1["delta_low"], k1["delta_high"]) == pytest.approx((-1.1, -0.9), abs=0.02)   # a seed drawn twice
    assert k1["psnr"] == 25.05 and k1["psnr_sd"] == pytest.approx(0.070711) and k1["seed_list"] == "seeds 0-1"
    assert k1["gain_db"] == 5.05 and k1["reference"] == "k=5" and k1["commit"] == "unrecorded"
    k5 = next(r for r in data["rows"] if r["row"] == "k=5")
    assert k5["delta_psnr"] is None and k5["p"] is None
    assert next(r for r in data["rows"] if r["row"] == "k=9")["marks"] == "✗"
    assert next(r for r in data["rows"] if r["row"] == "Alternating between Blocks")["marks"] == "≡"


def test_a_verdict_from_one_seed_per_row_says_it_holds_for_those_trained_models_only():
    claim = claims.load_claims()[0]
    one = claims._decide(claims.Verdict(claim, "", "", 0.5, 0.3, 0.7, (1, 1), 0.001, 0.002))
    two = claims._decide(claims.Verdict(claim, "", "", -0.5, -0.7, -0.3, (2, 2), 0.001, 0.002))
    unresolved = claims._decide(claims.Verdict(claim, "", "", 0.5, -0.1, 1.1, (1, 1), 0.2, 0.4))
    assert one.verdict == "confirmed" and "not for another training run" in one.why
    assert two.verdict == "contradicted" and two.why == ""
    assert unresolved.verdict == "not resolved"
