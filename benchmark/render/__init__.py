"""Rendering: a grid's store -> ``tables/<grid>.md`` and ``tables/<grid>_erf.png``. Reads only the
store (``benchmark.store``), so the same store always gives the same files.

    python -m benchmark.render runs/token_shift              # writes tables/token_shift.md (+ _erf.png)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import store
from .figures import erf_figure
from .tables import erf_table, render_markdown

__all__ = ["render_grid"]


def render_grid(grid_dir, out_dir="tables") -> list[Path]:
    """Write the grid's table (and its ERF figure when any run has a map); returns the paths. A run
    with an unreadable store file is rendered as ``broken`` (the file named under the table); the
    other runs are rendered as usual."""
    grid_dir, out_dir = Path(grid_dir), Path(out_dir)
    metadata = store.read_grid(grid_dir)
    index = store.load_index(grid_dir)
    problems: list[str] = []
    runs, stacks = [], {}                                  # stacks: label -> per-image maps of all its seeds
    for run in metadata["runs"]:
        folder = grid_dir / run["folder"]
        try:
            spec = store.read_spec(folder)
            maps = store.read_erf(folder)
        except store.StoreError as err:
            problems.append(str(err))
            continue
        if spec:
            runs.append(spec)
        if maps is not None:
            stacks.setdefault(run["label"], []).extend(maps)
    markdown = render_markdown(metadata, index, runs, store.load_image_scores(grid_dir, problems))
    written = []
    if stacks:
        figure = out_dir / f"{metadata['name']}_erf.png"
        means = {label: np.mean(maps, axis=0) for label, maps in stacks.items()}
        erf_figure(list(means.items()), figure, f"Effective receptive fields: {metadata.get('title') or metadata['name']}")
        written.append(figure)
        markdown += erf_table(stacks, means, figure.name)
    problems = list(dict.fromkeys(problems + [r for r in index.loc[index["state"] == store.BROKEN, "reason"]]))
    if problems:
        markdown += "\nUnreadable store files (their runs are left out; rerun the grid's command to redo them):\n" \
                    + "".join(f"- {p}\n" for p in problems)
    table = out_dir / f"{metadata['name']}.md"
    store.write_text(table, markdown)
    written.insert(0, table)
    return written
