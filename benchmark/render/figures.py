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


def erf_figure(maps: list[tuple[str, np.ndarray]], path: Path, title: str = "",
               marks: dict[str, str] | None = None) -> None:
    """One panel per row (``marks``: label -> its marks, e.g. ' ✗', shown after the label), with
    one colour bar for the rescaled contribution."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    marks = marks or {}
    columns = min(len(maps), 4)
    rows = -(-len(maps) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3 * columns + 0.8, 3.3 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    image = None
    for ax, (label, erf) in zip(axes.ravel(), maps):
        image = ax.imshow(rescale(erf), cmap="RdYlGn", vmin=0, vmax=1)
        ax.set_title(label + marks.get(label, ""), fontsize=10)
    _save(fig, path, title, dpi=100, right=0.9,
          after_layout=lambda: image is not None and colour_bar(fig, image, "(contribution / max)^0.25"))


def colour_bar(fig, image, label: str, box=(0.92, 0.15, 0.015, 0.7)):
    """A colour bar for ``image`` in its own axes at ``box`` (figure fractions: left, bottom, width,
    height), labelled."""
    bar = fig.colorbar(image, cax=fig.add_axes(box))
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=7)
    return bar


def _texts(fig) -> list[tuple[object, object]]:
    """(owner axes or None for the figure, text artist) of every visible, non-empty text."""
    out = [(None, t) for t in fig.texts if t.get_visible() and t.get_text().strip()]
    if getattr(fig, "_suptitle", None) is not None and fig._suptitle.get_text().strip():
        out.append((None, fig._suptitle))
    for ax in fig.axes:
        if not ax.get_visible() or not ax.axison and not ax.texts and not ax.get_title():
            continue
        own = [ax.title, ax._left_title, ax._right_title, *ax.texts]
        if ax.axison:
            own += [ax.xaxis.label, ax.yaxis.label]
        legend = ax.get_legend()
        if legend is not None:
            own += list(legend.get_texts())
        out += [(ax, t) for t in own if t.get_visible() and t.get_text().strip()]
    return list({id(t): (owner, t) for owner, t in out}.values())


def text_overlaps(fig, slack: float = 1.0) -> list[str]:
    """Texts that overlap another text or a panel that is not their own (in display pixels, after
    drawing): each a line naming both. A panel is an axes that is drawn (its frame or an image);
    a text may lie on its own panel (captions, legends)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    texts = [(owner, t, t.get_window_extent(renderer)) for owner, t in _texts(fig)]
    panels = [(ax, ax.get_window_extent(renderer)) for ax in fig.axes
              if ax.get_visible() and (ax.axison or ax.images)]

    def overlap(a, b) -> bool:
        return (min(a.x1, b.x1) - max(a.x0, b.x0) > slack) and (min(a.y1, b.y1) - max(a.y0, b.y0) > slack)

    found = []
    for i, (owner, text, box) in enumerate(texts):
        for other_owner, other, other_box in texts[i + 1:]:
            if overlap(box, other_box):
                found.append(f"text {text.get_text()!r} overlaps text {other.get_text()!r}")
        for ax, panel in panels:
            if ax is not owner and getattr(ax, "_colorbar", None) is None and overlap(box, panel):
                name = ax.get_title() or "an untitled panel"
                found.append(f"text {text.get_text()!r} overlaps the panel {name!r}")
    return found


def _save(fig, path: Path, title: str, dpi: int, right: float = 1.0, after_layout=None) -> None:
    """Title (wrapped to the figure's width), lay out (``right``: the share of the width the panels
    may use) and write ``fig`` atomically as a PNG without a timestamp (the same store gives the same
    bytes), then close it; ``after_layout()`` adds what must not move (colour bars). A text that
    overlaps another text or another panel is reported on stderr (``text_overlaps``)."""
    import sys
    import textwrap

    import matplotlib.pyplot as plt
    width, height = fig.get_size_inches()
    top = 1.0
    if title:
        wrapped = textwrap.fill(title, width=max(20, int(width * 72 / (11 * 0.6))))
        title_in = ((wrapped.count("\n") + 1) * 11 * 1.3 + 4) / 72
        fig.set_size_inches(width, height + title_in)       # the title takes its own room, never the panels'
        fig.suptitle(wrapped, fontsize=11, y=0.995, va="top")
        top = 1 - title_in / (height + title_in)
    fig.tight_layout(rect=(0, 0, right, top))
    if after_layout is not None:
        after_layout()
    try:
        for problem in text_overlaps(fig):
            print(f"{path.name}: {problem}", file=sys.stderr)
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


def curves_figure(rows: list[tuple[str, list[dict]]], path: Path, title: str = "",
                  marks: dict[str, str] | None = None) -> None:
    """Training curves per grid row, one line of three panels each: the training loss (moving
    average, log scale), the validation PSNR against the iteration, and its last half enlarged; one
    line per seed, the validation inputs' PSNR dashed. Both PSNR panels share their y-axis over the
    rows (the whole run's range, and the last half's), so rows compare at a glance. ``rows``: (label,
    runs) with each run a dict of ``seed``, ``log`` (a train_log DataFrame), ``val_input_psnr`` (or
    None), ``learned`` and ``spikes`` (iterations); ``marks``: label -> its marks (' ✗', ' †'). A run
    that did not learn is drawn in red and marked ✗ in the legend; loss spikes are red crosses."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    marks = marks or {}
    fig, axes = plt.subplots(len(rows), 3, figsize=(12, 2.3 * len(rows) + 0.7), squeeze=False)
    colours = [c for i, c in enumerate(plt.get_cmap("tab10").colors) if i != 3]   # red (3) marks "did not learn"
    last = max((float(run["log"]["iteration"].max()) for _, runs in rows for run in runs), default=1.0)
    half = last / 2
    whole, late = [], []                                       # the PSNR values each panel shows
    for number, (label, runs) in enumerate(rows):
        loss_ax, psnr_ax, late_ax = axes[number]
        for ax in (loss_ax, psnr_ax, late_ax):
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
            for ax in (psnr_ax, late_ax):
                ax.plot(val["iteration"], val["val_psnr"], "o-", color=colour, lw=1, ms=3, label=name)
            whole += list(val["val_psnr"])
            late += list(val.loc[val["iteration"] >= half, "val_psnr"])
        if inputs:
            for ax in (psnr_ax, late_ax):
                ax.axhline(float(np.mean(inputs)), color="black", ls="--", lw=1, label="input")
            whole.append(float(np.mean(inputs)))
        loss_ax.set_yscale("log")
        shown = label + marks.get(label, "")
        loss_ax.set_title(f"{shown}: training loss", fontsize=9)
        psnr_ax.set_title(f"{shown}: validation PSNR (dB)", fontsize=9)
        late_ax.set_title(f"{shown}: last half, enlarged", fontsize=9)
        late_ax.set_xlim(half, last * 1.02)
        psnr_ax.legend(fontsize=6, loc="lower right")
    for ax in axes[-1]:
        ax.set_xlabel("iteration", fontsize=7)
    for column, values in ((1, whole), (2, late)):
        if values:
            low, high = float(np.min(values)), float(np.max(values))
            pad = 0.05 * (high - low) or 0.5
            for ax in axes[:, column]:
                ax.set_ylim(low - pad, high + pad)
    _save(fig, path, title, dpi=80)
