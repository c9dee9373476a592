"""Which differences between a grid's rows are real: paired comparisons against a reference row.

Input: the per-image scores of every finished run (``store.load_image_scores``): one row per
(label, seed, image) of one task. Every run of a grid is tested on the same images, so rows are
compared image by image, paired by the image's id (its ``index``); rows scored on different
images are an error naming both.

- ``compare``: for each row, the mean difference to the reference row (ours minus reference) with
  a 95% bootstrap confidence interval, the Wilcoxon signed-rank p-value of the per-image
  differences, the share of bootstrap resamples in which the row ranks first (challengeR's rank
  stability; rows tied for first share a resample's credit, so the shares add up to 100%) and the standard deviation over seeds of the row's mean.
- The bootstrap is hierarchical (Davison & Hinkley, Sec. 3.8): each resample draws every row's
  seeds with replacement, then one set of images with replacement shared by all rows (the
  pairing), and takes each row's mean over the drawn seeds and images. With one seed per row it
  is the ordinary paired percentile bootstrap of the mean difference, and the interval then holds
  only the image-to-image spread, not the seed-to-seed one: it says so (``seeds``).

Compute only; ``benchmark.render`` formats the result.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

HIGHER_IS_BETTER = {"psnr": True, "ssim": True, "rmse": False}
RESAMPLES = 10_000
CONFIDENCE = 0.95
_CHUNK = 500                     # resamples per matrix product (bounds memory on large test sets)


@dataclass(frozen=True)
class Comparison:
    """One row against the reference, for one metric."""
    label: str
    seeds: int
    images: int
    mean: float                  # the row's mean over seeds and images
    seed_sd: float | None        # SD over seeds of the per-seed means (None with one seed)
    difference: float            # row minus reference, mean over images of the seed-averaged scores
    low: float                   # 95% bootstrap interval of the difference
    high: float
    p_value: float | None        # Wilcoxon signed-rank, two-sided (None for the reference itself)
    first: float                 # share of bootstrap resamples in which this row ranks first

    @property
    def resolved(self) -> bool:
        """The interval excludes 0: the difference is larger than this scale's noise."""
        return self.low > 0 or self.high < 0


def seed_image_matrix(scores, label: str, metric: str) -> tuple[np.ndarray, list]:
    """(seeds, images) scores of one row and the images' ids (their ``index``), in id order."""
    rows = scores[scores["label"] == label]
    table = rows.pivot_table(index="seed", columns="index", values=metric, aggfunc="mean").sort_index(axis=1)
    if table.isna().any().any():
        raise ValueError(f"{label}: its seeds were not all tested on the same images")
    return table.to_numpy(dtype=np.float64), list(table.columns)


def _paired(labels: list[str], ids: list[list]) -> None:
    """Every row must have been scored on the same images (by id), or no pairing holds."""
    for label, row_ids in zip(labels[1:], ids[1:]):
        if row_ids != ids[0]:
            only = sorted(set(ids[0]) ^ set(row_ids))
            raise ValueError(f"rows {labels[0]!r} and {label!r} were scored on different images ({len(ids[0])} and "
                             f"{len(row_ids)} images; ids in one but not the other: {only[:8]}); cannot pair them")


def first_shares(means: np.ndarray, higher_is_better: bool) -> np.ndarray:
    """Each row's share of resamples in which it ranks first; rows tied for first in a resample
    share its credit equally, so the shares add up to 1."""
    best = means.max(axis=1, keepdims=True) if higher_is_better else means.min(axis=1, keepdims=True)
    top = means == best
    return (top / top.sum(axis=1, keepdims=True)).mean(axis=0)


def wilcoxon_p(differences: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p-value (exact for small samples without ties, SciPy's
    default); zero differences are dropped (Wilcoxon's convention); 1 when every difference is 0."""
    differences = np.asarray(differences, dtype=np.float64)
    if not np.any(differences != 0):
        return 1.0
    return float(scipy_stats.wilcoxon(differences).pvalue)


def _bootstrap_means(matrices: list[np.ndarray], resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, rows) means of each row over its resampled seeds and the shared resampled images."""
    images = matrices[0].shape[1]
    out = np.empty((resamples, len(matrices)))
    for start in range(0, resamples, _CHUNK):
        count = min(_CHUNK, resamples - start)
        seed_draws = [rng.integers(0, m.shape[0], size=(count, m.shape[0])) for m in matrices]
        weights = rng.multinomial(images, np.full(images, 1.0 / images), size=count) / images  # (count, images)
        for r, (matrix, draw) in enumerate(zip(matrices, seed_draws)):
            per_seed = weights @ matrix.T                                   # (count, seeds): image-resampled means
            out[start:start + count, r] = np.take_along_axis(per_seed, draw, axis=1).mean(axis=1)
    return out


def compare(scores, labels: list[str], reference: str, metric: str, resamples: int = RESAMPLES,
            seed: int = 0) -> list[Comparison]:
    """One ``Comparison`` per label (in order), the reference included (difference 0)."""
    if reference not in labels:
        raise ValueError(f"reference row {reference!r} has no finished run; rows: {', '.join(labels)}")
    matrices, ids = zip(*(seed_image_matrix(scores, label, metric) for label in labels))
    _paired(list(labels), list(ids))
    ref = labels.index(reference)
    means = _bootstrap_means(list(matrices), resamples, np.random.default_rng(seed))
    first = first_shares(means, HIGHER_IS_BETTER[metric])
    alpha = (1 - CONFIDENCE) / 2
    out = []
    for r, (label, matrix) in enumerate(zip(labels, matrices)):
        per_image = matrix.mean(axis=0) - matrices[ref].mean(axis=0)
        low, high = np.quantile(means[:, r] - means[:, ref], [alpha, 1 - alpha])
        seed_means = matrix.mean(axis=1)
        out.append(Comparison(
            label=label, seeds=matrix.shape[0], images=matrix.shape[1], mean=float(matrix.mean()),
            seed_sd=float(seed_means.std(ddof=1)) if len(seed_means) > 1 else None,
            difference=float(per_image.mean()), low=float(low), high=float(high),
            p_value=None if r == ref else wilcoxon_p(per_image), first=float(first[r])))
    return out


def growth_exponent(pixels, values) -> float:
    """Least-squares slope of log(value) against log(pixels): 1 = linear, 2 = quadratic (how a
    cost grows with the image; ``benchmark.measure.profile`` and the efficiency table)."""
    return float(np.polyfit(np.log(pixels), np.log(values), 1)[0])
