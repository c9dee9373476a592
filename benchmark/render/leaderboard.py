"""One leaderboard across grids: ``tables/leaderboard.csv`` and ``tables/leaderboard.json``, one row
per (grid, row, task) of every grid store beside the one rendered (``claims.gather``), written with
the tables. Columns (``COLUMNS``, in order):

    grid, table, scale, task, row        where the number comes from (table: the paper's table, or empty)
    seeds, seed_list                     how many finished runs the row averages, and which
    psnr, psnr_sd, ssim, ssim_sd,        the row's mean over its seeds (of the per-seed means over the
    rmse, rmse_sd                        test images) and the SD of the per-seed means (empty with one seed)
    gain_db                              PSNR minus the degraded input's (the evidence that it learned)
    reference                            the grid's reference row
    delta_psnr, delta_low, delta_high    the row minus the reference, with its 95% interval (the tables'
                                         hierarchical bootstrap: seeds, subjects, slices); empty for the
                                         reference itself and when no statistics could be made
    p, p_holm                            the same resampling's p-value and its Holm adjustment over the
                                         grid's PSNR comparisons
    marks                                ✗ did not learn, † floored or widened tiny preset, ≡ the same network as another row
    params_m, macs_g, macs_size          deploy parameters (M) and MACs (G, the paper's convention) at macs_size
    commit                               the runs' commit (several, counted, when they differ)

Rows that did not learn stay, with their mark: a leaderboard that dropped them would hide failures.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from benchmark.results import store
from benchmark.render.claims import GridStore, by_table, same_networks
from benchmark.render.tables import _counted, _summaries, compare_rows, row_marks, seeds_text

COLUMNS = ("grid", "table", "scale", "task", "row", "seeds", "seed_list", "psnr", "psnr_sd", "ssim", "ssim_sd",
           "rmse", "rmse_sd", "gain_db", "reference", "delta_psnr", "delta_low", "delta_high", "p", "p_holm", "marks",
           "params_m", "macs_g", "macs_size", "commit")


def _sd(values: pd.Series) -> float | None:
    return float(values.std(ddof=1)) if len(values) > 1 else None


def _number(value) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def grid_rows(grid: GridStore, found: dict[int, GridStore]) -> list[dict]:
    """The leaderboard rows of one grid store."""
    e, metadata = grid.evidence, grid.metadata
    labels = list(dict.fromkeys(grid.index.sort_values("index")["label"])) if len(grid.index) else []
    reference = metadata.get("reference") or (labels[0] if labels else "")
    same = same_networks(e.grid, found)
    marks = row_marks(grid.index, e.tasks, grid.min_gain, same)
    comparisons = compare_rows(e.scores, e.tasks, labels, reference) if len(e.scores) else {}
    out = []
    for task in e.tasks:
        result = comparisons.get(task)
        by_label = {c.label: c for c in result["psnr"]} if isinstance(result, dict) else {}
        for entry in _summaries(grid.index, task):
            if not entry["done"]:
                continue
            label = entry["label"]
            mine = e.scores[(e.scores["task"] == task) & (e.scores["label"] == label)]
            per_seed = mine.groupby("seed")[["psnr", "ssim", "rmse"]].mean()
            c = by_label.get(label)
            versus = c is not None and label != reference
            row = {"grid": e.grid, "table": metadata.get("table") or "", "scale": e.scale, "task": task, "row": label,
                   "seeds": entry["done"], "seed_list": seeds_text(entry["seeds"]),
                   **{key: entry[key] for key in ("psnr", "ssim", "rmse")},
                   **{f"{key}_sd": _sd(per_seed[key]) for key in ("psnr", "ssim", "rmse")},
                   "gain_db": entry["psnr"] - entry["input_psnr"], "reference": reference,
                   "delta_psnr": c.difference if versus else None, "delta_low": c.low if versus else None,
                   "delta_high": c.high if versus else None, "p": c.p_value if versus else None,
                   "p_holm": c.p_holm if versus else None, "marks": marks.get(label, "").strip(),
                   "params_m": _number(entry["params_m"]), "macs_g": _number(entry["paper_gmacs"]),
                   "macs_size": entry.get("profile_size"), "commit": _counted(grid.commits.get(label, ["unrecorded"]))}
            out.append(row)
    return out


def _plain(value):
    """A cell as CSV and JSON write it: floats to 6 decimals (no binary noise), NaN as None."""
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    return value


def leaderboard_rows(stores: list[GridStore]) -> list[dict]:
    """Every grid store's rows (``claims.gather_all``), the paper's tables first in their order, then
    the other grids by name."""
    found = by_table(stores)
    rows = []
    for grid in sorted(stores, key=lambda g: (not g.metadata.get("table"), g.metadata.get("table") or 0, g.evidence.grid)):
        rows += [{k: _plain(v) for k, v in r.items()} for r in grid_rows(grid, found)]
    return rows


def write_leaderboard(rows: list[dict], out_dir) -> list[Path]:
    """``<out_dir>/leaderboard.csv`` and ``.json`` of ``leaderboard_rows``; returns their paths."""
    csv_path, json_path = Path(out_dir) / "leaderboard.csv", Path(out_dir) / "leaderboard.json"
    store.write_csv(csv_path, [{k: ("" if r[k] is None else r[k]) for k in COLUMNS} for r in rows], list(COLUMNS))
    store.write_text(json_path, json.dumps({"columns": list(COLUMNS), "rows": rows}, indent=1, ensure_ascii=False)
                     + "\n")
    return [csv_path, json_path]
