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
    """Write the grid's table (and its ERF figure when any run has a map); returns the paths."""
    grid_dir, out_dir = Path(grid_dir), Path(out_dir)
    metadata = store.read_grid(grid_dir)
    index = store.load_index(grid_dir)
    runs = [store.read_json(grid_dir / r["folder"] / "spec.json") for r in metadata["runs"]]
    runs = [r for r in runs if r]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    markdown = render_markdown(metadata, index, runs, store.load_image_scores(grid_dir))
    stacks: dict[str, list[np.ndarray]] = {}                      # label -> per-image maps of all its seeds
    for run in metadata["runs"]:
        path = grid_dir / run["folder"] / "erf.npy"
        if path.is_file():
            maps = np.load(path, allow_pickle=False)
            stacks.setdefault(run["label"], []).extend(maps if maps.ndim == 3 else [maps])
    if stacks:
        figure = out_dir / f"{metadata['name']}_erf.png"
        means = {label: np.mean(maps, axis=0) for label, maps in stacks.items()}
        erf_figure(list(means.items()), figure, f"Effective receptive fields: {metadata.get('title') or metadata['name']}")
        written.append(figure)
        markdown += erf_table(stacks, means, figure.name)
    table = out_dir / f"{metadata['name']}.md"
    store.write_text(table, markdown)
    written.insert(0, table)
    return written
