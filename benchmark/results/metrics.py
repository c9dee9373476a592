"""Image quality metrics with the paper's protocol (Restore-RWKV, Sec. 4.1).

Every metric is computed per image, in physical units, and then averaged over images by the caller:

- ``psnr(pred, gt, data_range)``: ``10 log10(data_range^2 / MSE)``.
- ``ssim(pred, gt, data_range)``: Wang et al. (2004) with an 11x11 Gaussian window (sigma 1.5),
  ``K1 = 0.01``, ``K2 = 0.03`` and population (1/N) statistics inside the window. Border
  convention: the SSIM map is computed only where the whole window lies inside the image ("valid"
  filtering) and averaged there, i.e. a 5-pixel border is left out. This equals scikit-image's
  ``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``, which
  pads by reflection and then averages the same interior; the two differ only in how a border they
  both discard would be computed.
- ``rmse(pred, gt)``: root mean squared error.
- ``evaluate(pred, gt, modality)``: the three with the protocol of ``modality``: CT is clipped to
  the [-160, 240] HU display window first; the data range is ``gt.max() - gt.min()`` of the
  (clipped) ground truth.
"""
from __future__ import annotations

import numpy as np

from benchmark.base.vocabulary import MODALITIES
CT_EVAL_WINDOW = (-160.0, 240.0)  # HU
SSIM_WINDOW, SSIM_SIGMA, SSIM_K1, SSIM_K2 = 11, 1.5, 0.01, 0.03


def _pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction and ground truth differ in shape: {pred.shape} vs {gt.shape}")
    if pred.ndim != 2:
        raise ValueError(f"metrics take one 2D image; got shape {pred.shape}")
    for name, array in (("prediction", pred), ("ground truth", gt)):
        if not np.isfinite(array).all():
            raise ValueError(f"the {name} contains NaN or infinite values")
    return pred, gt


def _check_range(data_range: float) -> float:
    data_range = float(data_range)
    if not data_range > 0:
        raise ValueError(f"data_range must be positive; got {data_range} (a constant ground truth has no range)")
    return data_range


def rmse(pred, gt) -> float:
    pred, gt = _pair(pred, gt)
    return float(np.sqrt(np.mean((pred - gt) ** 2)))


def psnr(pred, gt, data_range: float) -> float:
    pred, gt = _pair(pred, gt)
    data_range = _check_range(data_range)
    mse = float(np.mean((pred - gt) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(data_range ** 2 / mse))


def _gaussian_window() -> np.ndarray:
    radius = SSIM_WINDOW // 2
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / SSIM_SIGMA) ** 2)
    return taps / taps.sum()


def _filter_valid(image: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Separable 'valid' correlation: the window never leaves the image."""
    rows = np.apply_along_axis(lambda r: np.convolve(r, taps, mode="valid"), 1, image)
    return np.apply_along_axis(lambda c: np.convolve(c, taps, mode="valid"), 0, rows)


def ssim(pred, gt, data_range: float) -> float:
    pred, gt = _pair(pred, gt)
    data_range = _check_range(data_range)
    if min(pred.shape) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}; got {pred.shape}")
    taps = _gaussian_window()
    mu_x, mu_y = _filter_valid(pred, taps), _filter_valid(gt, taps)
    var_x = _filter_valid(pred * pred, taps) - mu_x ** 2
    var_y = _filter_valid(gt * gt, taps) - mu_y ** 2
    cov = _filter_valid(pred * gt, taps) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return float(ssim_map.mean())


def evaluate(pred, gt, modality: str) -> dict[str, float]:
    """PSNR, SSIM and RMSE of one image in physical units (HU for CT), with the paper's protocol."""
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {', '.join(MODALITIES)}")
    pred, gt = _pair(pred, gt)
    if modality == "ct":
        pred, gt = np.clip(pred, *CT_EVAL_WINDOW), np.clip(gt, *CT_EVAL_WINDOW)
    data_range = float(gt.max() - gt.min())
    return {"psnr": psnr(pred, gt, data_range), "ssim": ssim(pred, gt, data_range), "rmse": rmse(pred, gt)}
