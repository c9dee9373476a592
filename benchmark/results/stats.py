"""Which differences between a grid's rows are real: paired comparisons against a reference row.

Input: the per-image scores of every finished run (``store.load_image_scores``): one row per
(label, seed, image) of one task, each image with its ``subject`` (the IXI subject, AAPM patient,
PET file or phantom it was cut from). Every run of a grid is tested on the same images, so rows are
compared image by image, paired by the image's id (its ``index``); rows scored on different images,
or on images given different subjects, are an error naming both.

- ``compare``: for each row, the mean difference to the reference row (ours minus reference) with
  a 95% bootstrap confidence interval and the p-value of the same resampling, the Wilcoxon
  signed-rank p-value of the per-image differences (a secondary test: it ignores seeds and
  subjects), the share of bootstrap resamples in which the row ranks first (challengeR's rank
  stability; rows tied for first share a resample's credit, so the shares add up to 100%) and the
  standard deviation over seeds of the row's mean.
- The bootstrap is hierarchical (Davison & Hinkley, Sec. 3.8): each resample draws every row's
  seeds with replacement; then subjects with replacement and, within each drawn subject, its slices
  with replacement, one draw shared by all rows (the pairing); and takes each row's mean over the
  drawn seeds and slices. Slices of one subject are correlated, so the subject is the unit that
  varies: with one image per subject (phantoms) this is the paired bootstrap of images; with one
  subject (the paper's CT test patient) only the slices vary, and the interval covers those slices
  of that subject, not other subjects. With one seed per row the spread between training runs is
  not in the interval (``seeds``).
- ``p_value`` inverts the same interval: twice the smaller share of resampled differences on
  either side of 0 (at or beyond it), so that ``p < 1 - CONFIDENCE`` exactly when the interval
  excludes 0 (the interval's ends are the order statistics that make this hold); ``holm`` adjusts a
  family of them (Holm 1979).

Compute only; ``benchmark.render`` formats the result.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

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
    subjects: int                # distinct subjects among the images
    mean: float                  # the row's mean over seeds and images
    seed_sd: float | None        # SD over seeds of the per-seed means (None with one seed)
    difference: float            # row minus reference, mean over images of the seed-averaged scores
    low: float                   # 95% bootstrap interval of the difference
    high: float
    p_value: float | None        # from the same resampling (None for the reference itself)
    wilcoxon: float | None       # Wilcoxon signed-rank over images, two-sided (secondary; None for the reference)
    first: float                 # share of bootstrap resamples in which this row ranks first
    p_holm: float | None = None  # p_value adjusted over a family of comparisons (``with_holm``)

    @property
    def resolved(self) -> bool:
        """The interval excludes 0: the difference is larger than this scale's noise (the same as
        ``p_value < 1 - CONFIDENCE``)."""
        return self.low > 0 or self.high < 0


def seed_image_matrix(scores, label: str, metric: str) -> tuple[np.ndarray, list]:
    """(seeds, images) scores of one row and the images' ids (their ``index``), in id order."""
    rows = scores[scores["label"] == label]
    table = rows.pivot_table(index="seed", columns="index", values=metric, aggfunc="mean").sort_index(axis=1)
    if table.isna().any().any():
        raise ValueError(f"{label}: its seeds were not all tested on the same images")
    return table.to_numpy(dtype=np.float64), list(table.columns)


def image_subjects(scores, labels: list[str], ids: list) -> list[str]:
    """The subject of each image id (in ``ids`` order); every row must give an image the same one."""
    if "subject" not in scores:
        return [f"image-{i}" for i in ids]
    named = scores[scores["label"].isin(labels)].groupby("index")["subject"].agg(lambda s: sorted(set(map(str, s))))
    clashes = {i: names for i, names in named.items() if len(names) > 1}
    if clashes:
        i, names = next(iter(clashes.items()))
        raise ValueError(f"image {i} is given different subjects by different runs ({', '.join(names)}): the runs "
                         "were not tested on the same data")
    return [named[i][0] for i in ids]


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


def image_weights(subjects: list[str], count: int, rng: np.random.Generator) -> np.ndarray:
    """(count, images) weights of ``count`` two-stage resamples: subjects drawn with replacement,
    then each drawn subject's slices drawn with replacement (as many as it has); an image's weight
    is how often it was drawn over the number of slices drawn, so ``weights @ scores`` is the
    resample's mean."""
    names, group = np.unique(np.asarray(subjects), return_inverse=True)
    drawn = rng.multinomial(len(names), np.full(len(names), 1.0 / len(names)), size=count)    # (count, subjects)
    weights = np.zeros((count, len(subjects)))
    for s in range(len(names)):
        members = np.flatnonzero(group == s)
        weights[:, members] = rng.multinomial(drawn[:, s] * len(members), np.full(len(members), 1.0 / len(members)))
    return weights / weights.sum(axis=1, keepdims=True)


def _bootstrap_means(matrices: list[np.ndarray], subjects: list[str], resamples: int,
                     rng: np.random.Generator) -> np.ndarray:
    """(resamples, rows) means of each row over its resampled seeds and the shared resampled slices."""
    out = np.empty((resamples, len(matrices)))
    for start in range(0, resamples, _CHUNK):
        count = min(_CHUNK, resamples - start)
        seed_draws = [rng.integers(0, m.shape[0], size=(count, m.shape[0])) for m in matrices]
        weights = image_weights(subjects, count, rng)                       # (count, images)
        for r, (matrix, draw) in enumerate(zip(matrices, seed_draws)):
            per_seed = weights @ matrix.T                                   # (count, seeds): image-resampled means
            out[start:start + count, r] = np.take_along_axis(per_seed, draw, axis=1).mean(axis=1)
    return out


def interval_and_p(differences: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(low, high, p) of resampled differences: the percentile interval as order statistics (low:
    the k-th smallest, high: the k-th largest, k = ceil(alpha/2 * n)) and the two-sided p-value
    2 * min(share <= 0, share >= 0), capped at 1, so that p < 1 - confidence exactly when low > 0
    or high < 0."""
    ordered = np.sort(np.asarray(differences, dtype=np.float64))
    n = len(ordered)
    k = max(1, int(np.ceil((1 - confidence) / 2 * n - 1e-9)))
    low, high = ordered[k - 1], ordered[n - k]
    p = min(1.0, 2 * min(np.mean(ordered <= 0), np.mean(ordered >= 0)))
    return float(low), float(high), float(p)


def compare(scores, labels: list[str], reference: str, metric: str, resamples: int = RESAMPLES,
            seed: int = 0) -> list[Comparison]:
    """One ``Comparison`` per label (in order), the reference included (difference 0)."""
    if reference not in labels:
        raise ValueError(f"reference row {reference!r} has no finished run; rows: {', '.join(labels)}")
    matrices, ids = zip(*(seed_image_matrix(scores, label, metric) for label in labels))
    _paired(list(labels), list(ids))
    subjects = image_subjects(scores, list(labels), ids[0])
    ref = labels.index(reference)
    means = _bootstrap_means(list(matrices), subjects, resamples, np.random.default_rng(seed))
    first = first_shares(means, HIGHER_IS_BETTER[metric])
    out = []
    for r, (label, matrix) in enumerate(zip(labels, matrices)):
        per_image = matrix.mean(axis=0) - matrices[ref].mean(axis=0)
        low, high, p = interval_and_p(means[:, r] - means[:, ref])
        seed_means = matrix.mean(axis=1)
        out.append(Comparison(
            label=label, seeds=matrix.shape[0], images=matrix.shape[1], subjects=len(set(subjects)),
            mean=float(matrix.mean()), seed_sd=float(seed_means.std(ddof=1)) if len(seed_means) > 1 else None,
            difference=float(per_image.mean()), low=0.0 if r == ref else low, high=0.0 if r == ref else high,
            p_value=None if r == ref else p, wilcoxon=None if r == ref else wilcoxon_p(per_image),
            first=float(first[r])))
    return out


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment (family-wise error): sorted ascending, the i-th of m becomes
    max over j <= i of (m - j + 1) * p_(j), capped at 1; returned in the input's order."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    m = len(p)
    stepped = np.maximum.accumulate(np.minimum(1.0, (m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = stepped
    return out.tolist()


def with_holm(comparisons: list[Comparison]) -> list[Comparison]:
    """The comparisons with ``p_holm`` set over those that have a p-value (one family)."""
    tested = [c for c in comparisons if c.p_value is not None]
    adjusted = dict(zip(map(id, tested), holm([c.p_value for c in tested])))
    return [replace(c, p_holm=adjusted[id(c)]) if id(c) in adjusted else c for c in comparisons]


def growth_exponent(pixels, values) -> float:
    """Least-squares slope of log(value) against log(pixels): 1 = linear, 2 = quadratic (how a
    cost grows with the image; ``benchmark.measure.costs`` and the efficiency table)."""
    return float(np.polyfit(np.log(pixels), np.log(values), 1)[0])
