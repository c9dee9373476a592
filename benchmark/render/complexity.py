"""Does a row's gain hold on hard images as well as easy ones? Each row's PSNR gain over the
degraded input, per test image (the mean over the row's seeds), against the image's GLCM
complexity (``benchmark.data.complexity``, recorded in ``test_images.csv``): its least-squares
slope (dB per unit of complexity) with a 95% bootstrap interval over the images, in a table and
a figure of the slopes with their intervals (Du et al., RWKV-IR: complexity predicts PSNR)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from benchmark.base import markdown
from benchmark.render.figures import _save

RESAMPLES = 2000


def gains(scores: pd.DataFrame, task: str) -> dict[str, pd.DataFrame]:
    """{row label: per test image, its complexity and the row's gain over the input (seed mean)}."""
    part = scores[(scores["task"] == task)].dropna(subset=["complexity"])
    part = part.assign(gain=part["psnr"] - part["input_psnr"])
    return {label: g.groupby("index", as_index=False).agg(complexity=("complexity", "first"), gain=("gain", "mean"))
            for label, g in part.groupby("label", sort=False)}


def slope(x: np.ndarray, y: np.ndarray) -> float:
    """The least-squares slope of ``y`` on ``x`` (NaN when ``x`` does not vary)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    spread = ((x - x.mean()) ** 2).sum()
    return float(((x - x.mean()) * (y - y.mean())).sum() / spread) if spread > 0 else float("nan")


def slope_interval(x: np.ndarray, y: np.ndarray, resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """The 95% percentile bootstrap interval of ``slope`` over resampled images."""
    rng = np.random.default_rng(seed)
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    draws = rng.integers(0, len(x), size=(resamples, len(x)))
    values = np.array([slope(x[d], y[d]) for d in draws])
    values = values[np.isfinite(values)]
    return (float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))) if len(values) else (np.nan, np.nan)


def complexity_text(scores: pd.DataFrame, tasks: list[str], figure: str) -> str:
    """The slopes under the table (markdown), "" when no run recorded complexities."""
    if "complexity" not in scores or scores["complexity"].isna().all():
        return ""
    lines = [f"\nImage complexity (`{figure}`: each row's slope with its interval): each row's PSNR gain over the "
             "input per test image against the image's GLCM complexity (contrast of the 32-level co-occurrence matrix at distances 1 and 2 in four "
             "directions, in the display window; `benchmark.data.complexity`). A negative slope: the gain shrinks "
             f"on complex images. Slope in dB per unit of complexity, 95% bootstrap interval over the images "
             f"({RESAMPLES:,} resamples).\n"]
    for task in tasks:
        rows = [[label, len(g), f"{slope(g['complexity'], g['gain']):+.3f}",
                 "[{:+.3f}, {:+.3f}]".format(*slope_interval(g["complexity"].to_numpy(), g["gain"].to_numpy()))]
                for label, g in gains(scores, task).items()]
        if rows:
            lines += ([f"{task}:", ""] if len(tasks) > 1 else []) + [markdown.table(
                ["Method", "images", "slope", "95% CI"], rows), ""]
    return "\n".join(lines)


def complexity_figure(scores: pd.DataFrame, tasks: list[str], path: Path, title: str = "",
                      marks: dict[str, str] | None = None) -> None:
    """Each row's slope of gain on complexity with its 95% interval, one panel per task (rows top to
    bottom in grid order, ``marks`` after their labels), a line at 0: a slope whose interval holds 0
    shows no dependence on complexity at this scale."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    marks = marks or {}
    rows = max((len(gains(scores, task)) for task in tasks), default=1)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks) + 1.6, 0.35 * rows + 1.6), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        per_row = gains(scores, task)
        for y, (label, g) in enumerate(reversed(list(per_row.items()))):
            x, gain = g["complexity"].to_numpy(), g["gain"].to_numpy()
            b = slope(x, gain)
            low, high = slope_interval(x, gain)
            colour = "tab:red" if "✗" in marks.get(label, "") else "tab:blue"     # did not learn
            ax.errorbar([b], [y], xerr=[[b - low], [high - b]], fmt="o", color=colour, ms=4, capsize=2, lw=1)
        ax.set_yticks(range(len(per_row)), [label + marks.get(label, "") for label in reversed(list(per_row))],
                      fontsize=7)
        ax.axvline(0.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xlabel("slope of PSNR gain on complexity (dB per unit)", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_title(task, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    _save(fig, path, title, dpi=100)
