"""A grid store -> the paper's table layout in markdown, with the paper's numbers beside ours.

Rows follow the grid's order, one per label (means over the seeds that finished); the paper's rows
that the grid did not run follow as "not run". Best of ours in bold, second underlined (PSNR and
SSIM: higher is better; RMSE: lower). Deterministic: it reads only the store.
"""
from __future__ import annotations

import csv
import math
from importlib import resources

import pandas as pd

from ..config import TASK_TITLES, TASKS

HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "rmse": False}    # the metrics, in column order


def paper_numbers() -> list[dict]:
    """The paper's reported numbers (Yang et al., Tables 1-8), transcribed in paper_tables.csv."""
    text = resources.files(__package__).joinpath("paper_tables.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    for row in rows:
        row["table"] = int(row["table"])
        for key in ("params_m", "flops_g", "psnr", "ssim", "rmse"):
            row[key] = float(row[key]) if row[key] else None
    return rows


def _fmt(value) -> str:
    """Params and MACs: 4 decimals, as the paper prints them; "-" when unknown."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}"


def _rmse_digits(values) -> int:
    """RMSE in HU / scanner units (tens) gets 2 decimals, in SUV (below 1) 4."""
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return 4 if finite and max(finite) < 1 else 2


def _marks(values: list[float | None], higher_better: bool, digits: int) -> list[str]:
    """'best' / 'second' / '' per value (ties at the shown precision share a mark)."""
    shown = sorted({round(v, digits) for v in values if v is not None and not math.isnan(v)},
                   reverse=higher_better)
    rank = {v: ("best" if i == 0 else "second" if i == 1 else "") for i, v in enumerate(shown)}
    return [rank.get(round(v, digits), "") if v is not None and not math.isnan(v) else "" for v in values]


def _decorate(text: str, mark: str) -> str:
    return f"**{text}**" if mark == "best" else f"<u>{text}</u>" if mark == "second" else text


def _summaries(index: pd.DataFrame, task: str) -> list[dict]:
    """One entry per label in grid order: means over its finished seeds, or its state."""
    out = []
    for label, group in index.sort_values(["index"]).groupby("label", sort=False):
        finished = group[group["state"] == "done"]
        done = finished[finished["eval_task"] == task]
        entry = {"label": label, "runs": int(group["id"].nunique()), "done": int(done["id"].nunique()),
                 "states": sorted(set(group["state"])), "reasons": sorted({r for r in group["reason"] if r}),
                 "other_tasks": sorted(set(finished["eval_task"].dropna()) - {task})}
        first = group.iloc[0]
        entry.update(params_m=first["deploy_params_m"], paper_gmacs=first["paper_gmacs"])
        for key in HIGHER_IS_BETTER:
            entry[key] = float(done[key].mean()) if len(done) else None
            entry[f"input_{key}"] = float(done[f"input_{key}"].mean()) if len(done) else None
        out.append(entry)
    return out


def _state_text(entry: dict) -> str:
    if "failed" in entry["states"]:
        return "failed"
    if entry["other_tasks"] and entry["states"] == ["done"]:        # a grid that mixes tasks
        return f"scored on {', '.join(entry['other_tasks'])}"
    return "not finished"


def task_table(index: pd.DataFrame, task: str, table: int | None, paper: list[dict]) -> tuple[str, list[str]]:
    """The markdown table of one evaluated task, and the notes (failures) under it."""
    entries = _summaries(index, task)
    reported = {r["method"]: r for r in paper if r["table"] == table and r["task"] == task}
    digits = {"psnr": 2, "ssim": 4, "rmse": _rmse_digits([e["rmse"] for e in entries]
                                                        + [r["rmse"] for r in reported.values()])}
    marks = {key: _marks([e[key] for e in entries], higher, digits[key]) for key, higher in HIGHER_IS_BETTER.items()}
    lines = ["| Method | Params (M) | MACs (G) | PSNR | SSIM | RMSE | paper PSNR | paper SSIM | paper RMSE | ΔPSNR |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    notes = []
    for i, entry in enumerate(entries):
        theirs = reported.get(entry["label"], {})
        if entry["done"]:
            ours = [_decorate(f"{entry[k]:.{digits[k]}f}", marks[k][i]) for k in HIGHER_IS_BETTER]
            seeds = f" (mean of {entry['done']} seeds)" if entry["done"] > 1 else ""
        else:
            ours, seeds = [_state_text(entry), "-", "-"], ""
            notes += [f"- {entry['label']}: {reason}" for reason in entry["reasons"]]
        paper_cells = [f"{theirs[k]:.{digits[k]}f}" if theirs.get(k) is not None else "-" for k in HIGHER_IS_BETTER]
        delta = (f"{entry['psnr'] - theirs['psnr']:+.2f}" if entry["done"] and theirs.get("psnr") is not None else "-")
        lines.append(f"| {entry['label']}{seeds} | {_fmt(entry['params_m'])} | "
                     f"{_fmt(entry['paper_gmacs'])} | {' | '.join(ours)} | {' | '.join(paper_cells)} | "
                     f"{delta} |")
    for method, theirs in reported.items():
        if method not in {e["label"] for e in entries}:
            paper_cells = [f"{theirs[k]:.{digits[k]}f}" for k in HIGHER_IS_BETTER]
            lines.append(f"| {method} | {_fmt(theirs['params_m'])} | {_fmt(theirs['flops_g'])} | "
                         f"not run | - | - | {' | '.join(paper_cells)} | - |")
    inputs = next((e for e in entries if e["done"]), None)
    if inputs is not None:
        cells = " | ".join(f"{inputs[f'input_{k}']:.{digits[k]}f}" for k in HIGHER_IS_BETTER)
        lines.append(f"| *input (degraded)* | - | - | {cells} | - | - | - | - |")
    return "\n".join(lines), notes


def render_markdown(metadata: dict, index: pd.DataFrame, runs: list[dict]) -> str:
    """The whole ``tables/<grid>.md``; ``runs`` are the specs (configs) of the grid's runs in order."""
    paper = paper_numbers()
    table = metadata.get("table")
    heading = f"Table {table}: " if table else ""
    lines = [f"# {heading}{metadata.get('title') or metadata['name']}", "",
             f"Generated by `python -m benchmark.run --grid {metadata['file']} --scale {metadata['scale']}` "
             f"(re-rendered from its store by `python -m benchmark.render`).", ""]
    config = runs[0]["config"] if runs else {}
    if config:
        train = config["train"]
        models = ", ".join(dict.fromkeys(r["model"] for r in runs))
        lines += [f"Scale `{metadata['scale']}`: {models}; {train['iters']} iterations of batch {train['batch']} on "
                  f"{train['crop']}x{train['crop']} crops; data " +
                  ", ".join(f"`{config['data']['sources'][t]}`" for t in TASKS[config["task"]]) + ". "
                  f"Params in millions (trainable, deploy form: as the paper counts); MACs in G at "
                  f"1x1x{runs[0]['config']['profile']['size']}x{runs[0]['config']['profile']['size']}, "
                  "module level as the paper counts them (`benchmark.profile`, convention `paper`). "
                  "PSNR in dB, SSIM and RMSE in physical units with the paper's protocol (`benchmark.metrics`). "
                  "The paper's numbers are Yang et al.'s; ΔPSNR is ours minus theirs. Best of ours in bold, "
                  "second underlined.", ""]
    tasks = list(TASKS[config["task"]]) if config else list(dict.fromkeys(index["eval_task"].dropna()))
    for task in tasks:
        if len(tasks) > 1:
            lines += [f"## {TASK_TITLES.get(task, task)}", ""]
        body, notes = task_table(index, task, table, paper)
        lines += [body, ""]
        if notes:
            lines += ["Runs without a result:", *notes, ""]
    return "\n".join(lines)
