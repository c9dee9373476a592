"""ERF maps -> one figure per grid (Restore-RWKV, Fig. 6): one panel per run, each map divided by
its maximum and raised to the power 0.25 (the paper's rescaling, which makes weak but non-zero
contributions visible)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .. import store

ERF_EXPONENT = 0.25


def rescale(erf: np.ndarray) -> np.ndarray:
    """``(erf / max) ** 0.25`` in [0, 1] (all zeros stay zeros)."""
    erf = np.asarray(erf, dtype=np.float64)
    peak = erf.max()
    return (erf / peak) ** ERF_EXPONENT if peak > 0 else np.zeros_like(erf)


def high_contribution_area(erf: np.ndarray, share: float = 0.9) -> float:
    """The smallest fraction of the pixels that holds ``share`` of the total contribution (larger:
    a more spread-out, i.e. more global, receptive field)."""
    values = np.sort(np.asarray(erf, dtype=np.float64).ravel())[::-1]
    total = values.sum()
    if total <= 0:
        return 0.0
    return float((np.searchsorted(np.cumsum(values), share * total) + 1) / values.size)


def erf_figure(maps: list[tuple[str, np.ndarray]], path: Path, title: str = "") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    columns = min(len(maps), 4)
    rows = -(-len(maps) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns, 3.3 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (label, erf) in zip(axes.ravel(), maps):
        ax.imshow(rescale(erf), cmap="RdYlGn", vmin=0, vmax=1)
        ax.set_title(label, fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    try:
        store.write_with(path, lambda f: fig.savefig(f, format="png", dpi=100, metadata={"Software": None}))
    finally:
        plt.close(fig)
