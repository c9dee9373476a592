"""Rendering: a grid's store -> ``tables/<grid>.md``, ``tables/<grid>_curves.png`` (training
curves) and ``tables/<grid>_erf.png``, and from every grid store beside it the claims ledger
``tables/claims.md``, the leaderboard ``tables/leaderboard.csv`` / ``.json`` and the results page
``tables/index.html``. Reads only the stores (``benchmark.results.store``), so the same stores always give
the same files.

    python -m benchmark.render runs/token_shift     # writes tables/token_shift.md (+ figures) and tables/claims.md
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.results import store
from benchmark.results.grid_contents import GridContents, gather
from benchmark.render import claims, leaderboard, page
from benchmark.render.complexity import complexity_figure, complexity_text
from benchmark.render.examples import comparison_figure, panels
from benchmark.render.figures import CURVE_SMOOTHING, curves_figure, erf_figure
from benchmark.base.vocabulary import TASKS
from benchmark.render.tables import erf_table, provenance_notes, render_markdown, row_marks, tuning_table

__all__ = ["render_grid", "compose", "compose_summaries"]


def render_grid(grid_dir, out_dir="tables", headline: list[str] | None = None, summaries: bool = True) -> list[Path]:
    """Write the grid's table, its training curves (when any run has a log), its ERF figure (when
    any run has a map) and, with ``summaries``, the claims ledger, the leaderboard and the results
    page of every grid store in its folder (rendering several grids, only the last needs them);
    returns the paths. The table's headline lines are appended to ``headline``
    when a list is given. A run with an unreadable store file is rendered as ``broken`` (the file
    named under the table); the other runs are rendered as usual."""
    grid_dir = Path(grid_dir)
    stores = claims.gather_all(grid_dir.parent)         # every grid store beside this one: the ledger's evidence
    written = compose(gather(grid_dir), Path(out_dir), claims.by_table(stores), headline)
    if summaries:
        written += compose_summaries(stores, Path(out_dir), grid_dir.parent.name)
    return written


def compose(contents: GridContents, out_dir: Path, found: dict, headline: list[str] | None = None) -> list[Path]:
    """The grid's table and figures from what ``gather`` read; ``found``: the stores of every paper
    table (``claims.by_table``), for the rows that build another table's network and the ledger's link."""
    metadata, index, runs, scores = contents.metadata, contents.index, contents.specs, contents.scores
    problems, stacks, curves, shown = list(contents.problems), contents.erf_maps, contents.curves, contents.examples
    link = (f"The paper's claims this table tests, with their verdicts: [`{claims.LEDGER}`]({claims.LEDGER}#table-"
            f"{metadata['table']}).") if metadata.get("table") else ""
    same = claims.same_networks(metadata["name"], found)
    markdown = render_markdown(metadata, index, runs, scores, headline, provenance_notes(contents.records), same, link)
    config = runs[0]["config"] if runs else {}
    marks = row_marks(index, list(TASKS[config["task"]]), config["train"].get("min_gain", 0.0), same) if config else {}
    if metadata.get("tune"):
        markdown += tuning_table(metadata, contents.tuning)
    written = []
    if curves:
        figure = out_dir / f"{metadata['name']}_curves.png"
        curves_figure(list(curves.items()), figure,
                      f"Training curves: {metadata.get('title') or metadata['name']} (✗: did not learn; x: loss spike)",
                      marks)
        written.append(figure)
        markdown += (f"\nTraining curves: `{figure.name}` (per row, the training loss, a {CURVE_SMOOTHING}-iteration "
                     "moving average on a log scale, with loss spikes as crosses; the validation PSNR, one line per "
                     "seed, on one y-axis for all rows; and its last half enlarged, again on one y-axis; dashed: the "
                     "validation inputs' PSNR, the level of a model that returns its input).\n")
    if stacks:
        figure = out_dir / f"{metadata['name']}_erf.png"
        means = {label: np.mean(maps, axis=0) for label, maps in stacks.items()}
        erf_figure(list(means.items()), figure, f"Effective receptive fields: {metadata.get('title') or metadata['name']}",
                   marks)
        written.append(figure)
        markdown += erf_table(stacks, means, figure.name)
    for row in shown.values():                      # each row's scores, from those loaded above
        row["scores"] = scores[scores["id"] == row["id"]] if len(scores) else None
    if shown:
        figure = out_dir / f"{metadata['name']}_compare.png"
        reference = metadata.get("reference") or next(iter(shown))
        comparison_figure(panels(list(shown.values()), reference), figure,
                          f"Visual comparison: {metadata.get('title') or metadata['name']}", marks)
        written.append(figure)
        markdown += (f"\nVisual comparison: `{figure.name}` (per task, the test images whose degraded input has the "
                     "median and the lowest PSNR; the input, each row's output from its first finished run and the "
                     "ground truth in the display window, PSNR / SSIM under each, the same zoomed region in every "
                     "panel: where the reference row errs most; under them the absolute errors on one scale, with "
                     "its colour bar in physical units).\n")
    tasks = list(dict.fromkeys(scores["task"])) if len(scores) else []
    if tasks and "complexity" in scores and scores["complexity"].notna().any():
        figure = out_dir / f"{metadata['name']}_complexity.png"
        complexity_figure(scores, tasks, figure, f"Gain against image complexity: {metadata.get('title') or metadata['name']}",
                          marks)
        written.append(figure)
        markdown += complexity_text(scores, tasks, figure.name)
    problems = list(dict.fromkeys(problems + [r for r in index.loc[index["state"] == store.BROKEN, "reason"]]))
    if problems:
        markdown += "\nUnreadable store files (their runs are left out; rerun the grid's command to redo them):\n" \
                    + "".join(f"- {p}\n" for p in problems)
    table = out_dir / f"{metadata['name']}.md"
    store.write_text(table, markdown)
    written.insert(0, table)
    return written


def compose_summaries(stores: list, out_dir: Path, runs_name: str) -> list[Path]:
    """The claims ledger, the leaderboard and the results page of every grid store in a folder."""
    written = []
    found = claims.by_table(stores)
    if found:
        written.append(claims.render_ledger(found, out_dir, runs_name))
    rows = leaderboard.leaderboard_rows(stores)
    written += leaderboard.write_leaderboard(rows, out_dir)
    written.append(page.write_page(out_dir, rows, list(dict.fromkeys(r["grid"] for r in rows))))
    return written
