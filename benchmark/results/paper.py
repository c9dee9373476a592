"""The paper's reported numbers (Yang et al., Restore-RWKV, Tables 1-8), transcribed once in
``paper_tables.csv``: per table, task and method its params (M), FLOPs (G) and PSNR / SSIM / RMSE.
Beside the results they are compared with: the tables, the claims ledger, ``check_model`` and the
models' registry read them from here."""
from __future__ import annotations

import csv
from importlib import resources


def paper_numbers() -> list[dict]:
    """Every row of ``paper_tables.csv``, numbers as floats (None where the paper gives none)."""
    text = resources.files(__package__).joinpath("paper_tables.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    for row in rows:
        row["table"] = int(row["table"])
        for key in ("params_m", "flops_g", "psnr", "ssim", "rmse"):
            row[key] = float(row[key]) if row[key] else None
    return rows
