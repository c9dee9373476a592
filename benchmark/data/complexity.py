"""Image complexity from the gray-level co-occurrence matrix (GLCM), after Du et al. (RWKV-IR:
"Exploring Real&Synthetic Dataset and Linear Attention in Image Restoration"), who show that a
GLCM-based complexity predicts PSNR and differs between training and test sets. Their code is not
public; our choices, stated:

- the image is the ground truth, in its modality's display window (``vocabulary.display_window``:
  CT [-160, 240] HU as the paper's metrics; MRI and PET between their 0.5th and 99.5th
  percentiles), clipped and quantised to ``LEVELS`` = 32 gray levels (enough for the intensity
  classes of a slice, few enough that a 128 x 128 slice fills the 32 x 32 matrix);
- co-occurrences at ``DISTANCES`` = 1 and 2 pixels in the four ``ANGLES`` 0, 45, 90, 135 degrees
  (fine texture and edges at the scale a restoration network must reproduce, in every direction),
  symmetric and normalised (scikit-image's ``graycomatrix``);
- the score is the GLCM **contrast**, sum_ij P(i, j) (i - j)^2, averaged over the 8 offsets: the
  mean squared gray-level step between neighbouring pixels, large for textured, edge-rich images
  (hard to restore) and small for smooth ones.
"""
from __future__ import annotations

import numpy as np

from benchmark.base.vocabulary import display_window

LEVELS = 32
DISTANCES = (1, 2)
ANGLES = (0.0, np.pi / 4, np.pi / 2, 3 * np.pi / 4)


def quantise(image: np.ndarray, modality: str, levels: int = LEVELS) -> np.ndarray:
    """``image`` in its display window as integer gray levels 0 .. levels - 1."""
    low, high = display_window(image, modality)
    scaled = (np.clip(np.asarray(image, dtype=np.float64), low, high) - low) / (high - low)
    return np.minimum((scaled * levels).astype(np.int64), levels - 1).astype(np.uint8)


def glcm_complexity(image: np.ndarray, modality: str) -> float:
    """The GLCM contrast of ``image`` (an (H, W) array in physical units), averaged over the offsets."""
    from skimage.feature import graycomatrix, graycoprops
    matrix = graycomatrix(quantise(image, modality), list(DISTANCES), list(ANGLES), levels=LEVELS,
                          symmetric=True, normed=True)
    return float(graycoprops(matrix, "contrast").mean())


def split_scores(source: str, size: int = 128) -> dict[str, np.ndarray]:
    """{split: the complexity of every HQ image} of a prepared folder or a phantom source."""
    from benchmark.data import dataset, sources
    out = {}
    for split in sources.SPLITS:
        data = dataset.open_dataset(source, split, phantom_size=size)
        parts = data.datasets if hasattr(data, "datasets") else [data]
        out[split] = np.array([glcm_complexity(np.asarray(part.hq[i], dtype=np.float64), part.modality)
                               for part in parts for i in range(len(part))])
    return out


def report(scores: dict[str, np.ndarray]) -> str:
    """The distribution per split and a two-sample Kolmogorov-Smirnov test of train against test."""
    from scipy import stats

    from benchmark.base import markdown
    rows = []
    for split, values in scores.items():
        q1, median, q3 = np.percentile(values, [25, 50, 75]) if len(values) else (np.nan,) * 3
        rows.append([split, len(values), f"{values.mean():.3f}", f"{values.std(ddof=1):.3f}" if len(values) > 1 else "-",
                     f"{median:.3f}", f"{q1:.3f} - {q3:.3f}"])
    test = stats.ks_2samp(scores["train"], scores["test"])
    return (markdown.table(["split", "images", "mean", "SD", "median", "IQR"], rows, "lrrrrr")
            + f"\n\nTrain against test (two-sample Kolmogorov-Smirnov): D = {test.statistic:.3f}, p = {test.pvalue:.3g}"
            + " (a small p: the test images differ in complexity from the training images, which biases a score).")
