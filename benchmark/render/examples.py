"""The visual comparison (Restore-RWKV, Fig. 5), re-rendered from the store: for each test image a
run keeps (``harness.evaluate.EXAMPLES``: per task, the image whose degraded input has the median
PSNR and the one whose input has the lowest), the degraded input, each table row's output (its
first finished run) and the ground truth side by side in the modality's display window
(``vocabulary.display_window``: CT [-160, 240] HU; MRI and PET between the ground truth's 0.5th and
99.5th percentiles), each with its PSNR / SSIM; one zoomed inset of the same region in every
panel (the inset-sized square where the reference row's absolute error is largest); and under
them the absolute error of each, on one colour scale shared by the image's panels."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmark.base.vocabulary import MODALITY, UNITS, display_window
from benchmark.render.figures import _save

INSET = 4                 # the inset shows 1/INSET of the image's side


def shown(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """An image in physical units as drawn: clipped to ``window`` and mapped to [0, 1]."""
    low, high = window
    return np.clip((np.asarray(image, dtype=np.float64) - low) / (high - low), 0.0, 1.0)


def inset_box(error: np.ndarray) -> tuple[int, int, int]:
    """(top, left, side) of the inset: the square of side H / INSET whose summed error is largest."""
    from scipy import ndimage
    side = max(4, min(error.shape) // INSET)
    summed = ndimage.uniform_filter(np.asarray(error, dtype=np.float64), size=side, mode="constant")
    half = side // 2
    inner = summed[half:error.shape[0] - side + half + 1, half:error.shape[1] - side + half + 1]
    top, left = np.unravel_index(int(np.argmax(inner)), inner.shape)
    return int(top), int(left), side


def panels(rows: list[dict], reference: str) -> list[dict]:
    """One entry per example image: its task, index, window, inset and the panels in order (input,
    each row's output, ground truth), each with its title, shown image, caption and error map.
    ``rows``: per table row, its label, its run's ``examples.npz`` arrays and ``test_images.csv``."""
    first = rows[0]["examples"]
    out = []
    for k, (task, index) in enumerate(zip(first["task"], first["index"])):
        task, index = str(task), int(index)
        modality = MODALITY[task]
        lq, hq = first["lq"][k].astype(np.float64), first["hq"][k].astype(np.float64)
        window = display_window(hq, modality)
        images = [("Input", lq, _scores(rows[0]["scores"], task, index, "input_"))]
        for row in rows:
            ex = row["examples"]
            match = [j for j in range(len(ex["index"])) if str(ex["task"][j]) == task and int(ex["index"][j]) == index]
            if match:
                images.append((row["label"], ex["output"][match[0]].astype(np.float64),
                               _scores(row["scores"], task, index, "")))
        images.append(("Ground truth", hq, ""))
        ref = next((img for label, img, _ in images if label == reference), images[1][1])
        out.append({"task": task, "index": index, "window": window, "modality": modality,
                    "inset": inset_box(np.abs(ref - hq)),
                    "panels": [{"title": label, "image": shown(img, window), "caption": caption,
                                "error": np.abs(img - hq)} for label, img, caption in images]})
    return out


def _scores(scores, task: str, index: int, prefix: str) -> str:
    if scores is None:
        return ""
    hit = scores[(scores["task"] == task) & (scores["index"] == index)]
    if hit.empty:
        return ""
    return f"{hit[prefix + 'psnr'].iloc[0]:.2f} dB / {hit[prefix + 'ssim'].iloc[0]:.4f}"


def comparison_figure(examples: list[dict], path: Path, title: str = "", marks: dict[str, str] | None = None):
    """Draw ``panels(...)`` (two rows per example image: the images with their inset, the absolute
    errors on a shared scale with its colour bar) and write ``path``; ``marks``: label -> its marks
    (' ✗', ' †') shown after each row's title. Returns the figure's image arrays in panel order (the
    drawn pixels, for checking)."""
    marks = marks or {}
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle
    columns = max(len(e["panels"]) for e in examples)
    fig, axes = plt.subplots(2 * len(examples), columns, figsize=(2.2 * columns, 4.9 * len(examples) + 0.5),
                             squeeze=False)
    drawn = []
    for ax in axes.ravel():
        ax.axis("off")
    for e, example in enumerate(examples):
        top, left, side = example["inset"]
        scale = max(float(np.percentile(np.concatenate([p["error"].ravel() for p in example["panels"]]), 99.5)), 1e-12)
        low, high = example["window"]
        for c, panel in enumerate(example["panels"]):
            ax = axes[2 * e, c]
            drawn.append(ax.imshow(panel["image"], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest"))
            ax.add_patch(Rectangle((left - 0.5, top - 0.5), side, side, fill=False, edgecolor="yellow", linewidth=0.8))
            zoom = ax.inset_axes([0.62, 0.0, 0.38, 0.38])
            zoom.imshow(panel["image"][top:top + side, left:left + side], cmap="gray", vmin=0.0, vmax=1.0,
                        interpolation="nearest")
            zoom.set_xticks([]), zoom.set_yticks([])
            for spine in zoom.spines.values():
                spine.set_edgecolor("yellow")
            ax.set_title(panel["title"] + marks.get(panel["title"], ""), fontsize=8)
            ax.text(0.5, -0.04, panel["caption"], transform=ax.transAxes, ha="center", va="top", fontsize=7)
            if panel["title"] != "Ground truth":
                err_ax = axes[2 * e + 1, c]
                errors = err_ax.imshow(panel["error"], cmap="inferno", vmin=0.0, vmax=scale, interpolation="nearest")
                err_ax.set_title(f"|{panel['title']}{marks.get(panel['title'], '')} - truth|", fontsize=7)
        bar = fig.colorbar(errors, cax=axes[2 * e + 1, columns - 1].inset_axes([0.08, 0.05, 0.1, 0.85]))
        bar.set_label(f"absolute error ({UNITS[example['modality']]})", fontsize=7)
        bar.ax.tick_params(labelsize=6)
        axes[2 * e, 0].text(-0.08, 0.5, f"{example['task']} #{example['index']}\n[{low:.4g}, {high:.4g}]",
                            transform=axes[2 * e, 0].transAxes, rotation=90, ha="right", va="center", fontsize=7)
    _save(fig, path, title, dpi=110)
    return [image.get_array() for image in drawn]
