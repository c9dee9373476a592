"""A grid's figures. ERF maps (Restore-RWKV, Fig. 6): one panel per run, each map divided by its
maximum and raised to the power 0.25 (the paper's rescaling, which makes weak but non-zero
contributions visible). Training curves: per row, the loss and the validation PSNR of every seed
against the iteration, with the inputs' PSNR, so that a run that diverged, collapsed or did not
learn shows at a glance."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.results import store

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
    _save(fig, path, title, dpi=100)


def _save(fig, path: Path, title: str, dpi: int) -> None:
    """Title, lay out and write ``fig`` atomically as a PNG without a timestamp (the same store gives
    the same bytes), then close it."""
    import matplotlib.pyplot as plt
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    try:
        store.write_with(path, lambda f: fig.savefig(f, format="png", dpi=dpi, metadata={"Software": None}))
    finally:
        plt.close(fig)


CURVE_SMOOTHING = 25          # iterations in the moving average of the plotted training loss


def smooth(values: np.ndarray, width: int = CURVE_SMOOTHING) -> np.ndarray:
    """Trailing moving average over ``width`` values (shorter at the start), same length as ``values``."""
    values = np.asarray(values, dtype=np.float64)
    sums = np.cumsum(np.concatenate([[0.0], values]))
    counts = np.minimum(np.arange(1, len(values) + 1), width)
    return (sums[1:] - sums[np.arange(1, len(values) + 1) - counts]) / counts


def curves_figure(rows: list[tuple[str, list[dict]]], path: Path, title: str = "") -> None:
    """Training curves per grid row: the training loss (moving average, log scale) and the validation
    PSNR against the iteration, one line per seed, the validation inputs' PSNR dashed. ``rows``:
    (label, runs) with each run a dict of ``seed``, ``log`` (a train_log DataFrame), ``val_input_psnr``
    (or None), ``learned`` and ``spikes`` (iterations). A run that did not learn is drawn in red and
    marked ✗ in the legend; loss spikes are red crosses on the loss curve."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pairs = min(len(rows), 2)                                   # label panels side by side per figure row
    lines = -(-len(rows) // pairs)
    fig, axes = plt.subplots(lines, 2 * pairs, figsize=(4.6 * 2 * pairs, 2.6 * lines + 0.5), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    colours = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 3]   # red (3) marks "did not learn"
    for number, (label, runs) in enumerate(rows):
        loss_ax, psnr_ax = axes[number // pairs, 2 * (number % pairs)], axes[number // pairs, 2 * (number % pairs) + 1]
        for ax in (loss_ax, psnr_ax):
            ax.axis("on")
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
        inputs = [r["val_input_psnr"] for r in runs if r["val_input_psnr"] is not None]
        for k, run in enumerate(runs):
            log = run["log"]
            colour = "tab:red" if not run["learned"] else colours[k % len(colours)]
            name = f"seed {run['seed']}" + ("" if run["learned"] else " ✗ did not learn")
            loss_ax.plot(log["iteration"], smooth(log["loss"]), color=colour, lw=1, label=name)
            spikes = log[log["iteration"].isin(run["spikes"])]
            loss_ax.plot(spikes["iteration"], spikes["loss"], "x", color="tab:red", ms=5)
            val = log.dropna(subset=["val_psnr"])
            psnr_ax.plot(val["iteration"], val["val_psnr"], "o-", color=colour, lw=1, ms=3, label=name)
        if inputs:
            psnr_ax.axhline(float(np.mean(inputs)), color="black", ls="--", lw=1, label="input")
        loss_ax.set_yscale("log")
        loss_ax.set_title(f"{label}: training loss", fontsize=9)
        psnr_ax.set_title(f"{label}: validation PSNR (dB)", fontsize=9)
        loss_ax.set_xlabel("iteration", fontsize=7)
        psnr_ax.set_xlabel("iteration", fontsize=7)
        psnr_ax.legend(fontsize=6, loc="lower right")
    _save(fig, path, title, dpi=80)
