"""Rendering: a grid's store -> ``tables/<grid>.md`` and ``tables/<grid>_erf.png``. Reads only the
store (``benchmark.store``), so the same store always gives the same files.

    python -m benchmark.render runs/token_shift              # writes tables/token_shift.md (+ _erf.png)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import store
from .figures import erf_figure, high_contribution_area
from .tables import render_markdown

__all__ = ["render_grid"]


def render_grid(grid_dir, out_dir="tables") -> list[Path]:
    """Write the grid's table (and its ERF figure when any run has a map); returns the paths."""
    grid_dir, out_dir = Path(grid_dir), Path(out_dir)
    metadata = store.read_grid(grid_dir)
    index = store.load_index(grid_dir)
    runs = [store.read_json(grid_dir / r["folder"] / "spec.json") for r in metadata["runs"]]
    runs = [r for r in runs if r]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    markdown = render_markdown(metadata, index, runs)
    maps, seen = [], set()
    for run in metadata["runs"]:                                   # one panel per label: its first finished seed
        path = grid_dir / run["folder"] / "erf.npy"
        if run["label"] not in seen and path.is_file():
            seen.add(run["label"])
            maps.append((run["label"], np.load(path)))
    if maps:
        figure = out_dir / f"{metadata['name']}_erf.png"
        erf_figure(maps, figure, f"Effective receptive fields: {metadata.get('title') or metadata['name']}")
        written.append(figure)
        areas = " | ".join(f"{label}: {100 * high_contribution_area(m):.1f}%" for label, m in maps)
        markdown += (f"\nERF (`{figure.name}`, centre output pixel, x^0.25 rescaling): share of the pixels "
                     f"holding 90% of the contribution: {areas}\n")
    table = out_dir / f"{metadata['name']}.md"
    store.write_text(table, markdown)
    written.insert(0, table)
    return written
