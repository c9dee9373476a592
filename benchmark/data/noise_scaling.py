"""The simulators' noise against the physics of a scanner, measured (``python -m benchmark.data
noise-scaling``): CT noise std against dose, pixel size, body size, simulated views and slice
thickness on water cylinders, and the quarter-dose level at AAPM's geometry; PET relative noise
against counts. Each line gives the measured value, what the physics predicts, and their ratio.

CT noise is measured in the central 60 mm of the cylinder from differences of independent scans
(which cancel the reconstruction's deterministic structure), over 3 pairs; PET noise over 6 draws.
"""
from __future__ import annotations

import numpy as np

from benchmark.base import markdown
from benchmark.data import degradations, phantoms


def water_cylinder(n: int, diameter_mm: float, pixel_mm: float) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2) * pixel_mm
    r = np.hypot(xx, yy)
    return np.where(r < diameter_mm / 2, 0.0, -1000.0), r < 60


def ct_noise(n: int = 128, diameter_mm: float = 300.0, field_mm: float = 350.0, dose: float = 0.25, **kw) -> float:
    """Low-dose noise std (HU) in the cylinder's centre (``ct_pair``)."""
    image, centre = water_cylinder(n, diameter_mm, field_mm / n)
    scans = [degradations.ct_pair(image, dose=dose, seed=s, pixel_mm=field_mm / n, **kw)[0] for s in range(6)]
    return float(np.mean([(scans[i] - scans[i + 1])[centre].std() / np.sqrt(2) for i in (0, 2, 4)]))


def pet_relative_noise(activity: np.ndarray, sensitivity: float, draws: int = 6) -> float:
    body = activity > 0.5 * activity.max() / 20
    full = np.stack([degradations.pet_pair(activity, seed=s, sensitivity=sensitivity)[1] for s in range(draws)])
    return float((full - full.mean(0))[:, body].std() * np.sqrt(draws / (draws - 1)) / full.mean(0)[body].mean())


def whole_slice(seed: int) -> tuple[float, float]:
    """(PSNR in the paper's window, std of LQ - HQ inside the body) of a whole 512x512 phantom slice."""
    from benchmark.results import metrics
    image = phantoms.phantom("ct", 512, seed).astype(np.float64)
    low, full = (np.clip(a, -1024, 3072) for a in degradations.ct_pair(image, seed=seed))
    return metrics.evaluate(low, full, "ct")["psnr"], float((low - full)[image > -950].std())


def rows() -> list[tuple[str, float, float]]:
    """(what, measured, predicted) for every check."""
    out = []
    base = ct_noise()
    for dose in (0.5, 0.125):
        out.append((f"CT noise, dose {dose} / dose 0.25 (dose^-1/2)", ct_noise(dose=dose) / base, (dose / 0.25) ** -0.5))
    fine = ct_noise(n=512, field_mm=358.4)
    out.append(("CT noise, 512x512 at 0.7 mm / 128x128 at 2.8 mm, one field (pixel^-3/2)",
                fine / ct_noise(n=128, field_mm=358.4), 8.0))
    out.append(("CT noise, 300 / 200 mm water (exp(mu_water x 100 mm / 2))", base / ct_noise(diameter_mm=200),
                float(np.exp(degradations.MU_WATER * 100 / 2))))
    out.append(("CT noise, 90 / 180 simulated views (independent)", ct_noise(angles=90) / ct_noise(angles=180), 1.0))
    out.append(("CT noise, 3 mm / 1 mm slice (thickness^-1/2)", ct_noise(slice_mm=3.0) / base, 3 ** -0.5))
    out.append(("CT quarter-dose noise (HU), 300 mm water at 0.7 mm (AAPM-like level: 8-25)", fine, float("nan")))
    whole = [whole_slice(seed) for seed in range(200_000, 200_008)]
    out.append(("CT quarter-dose PSNR (dB) of whole 512x512 phantom slices, mean of 8 (AAPM: about 29)",
                float(np.mean([w[0] for w in whole])), float("nan")))
    out.append(("CT quarter-dose std of LQ - HQ (HU) inside their bodies", float(np.mean([w[1] for w in whole])),
                float("nan")))
    activity = phantoms.phantom("pet", 64, seed=4).astype(np.float64)
    pet = pet_relative_noise(activity, 6.0)
    out.append(("PET relative noise, sensitivity x16 (counts^-1/2)", pet_relative_noise(activity, 96.0) / pet, 0.25))
    out.append(("PET relative noise, activity x2 (counts^-1/2)", pet_relative_noise(2 * activity, 6.0) / pet, 2 ** -0.5))
    return out


def table() -> str:
    cells = [[what, f"{measured:.3f}", f"{predicted:.3f}" if np.isfinite(predicted) else "-",
              f"{measured / predicted:.3f}" if np.isfinite(predicted) else "-"] for what, measured, predicted in rows()]
    return markdown.table(["check", "measured", "physics", "ratio"], cells)
