"""How the low-quality inputs are made: pure functions, 2D float arrays in, same shape out.

MRI super-resolution (``mri_kspace_crop``)
    The image's 2D Fourier transform (k-space) is kept only in its central ``1/factor x 1/factor``
    block, the low spatial frequencies that a shorter acquisition samples (6.25% of the samples for
    factor 4), and set to zero elsewhere; the inverse transform's magnitude is the low-resolution
    image at the original size. With the zero frequency at index ``n // 2`` after ``fftshift``, the
    kept rows (columns) are ``[(n - m) // 2, (n - m) // 2 + m)`` with ``m = n // factor``.

Low-dose CT (``ct_low_dose``)
    Attenuation ``mu = mu_water (1 + HU / 1000)`` (air and below: 0), line integrals ``p = A mu``
    through a parallel-beam projector, then transmission counts ``N ~ Poisson(I0 exp(-p)) + e``
    with ``I0 = dose x flux`` photons per ray and Gaussian electronic noise ``e`` (std
    ``electronic_noise`` counts), floored at 1 count; ``p' = log(I0 / N)`` is reconstructed by
    filtered back-projection and converted back to HU. The noise variance of ``p'`` is about
    ``1 / (I0 exp(-p))``: a quarter of the dose doubles the noise std.

Low-count PET (``pet_low_count``)
    The activity image is forward-projected and scaled so that the full-count acquisition would
    record ``counts`` coincidences; the low-count sinogram is Poisson with ``1 / dose_reduction`` of
    that mean (the thinning of a full-count Poisson acquisition), reconstructed with MLEM and
    scaled back by the same factors, so that it estimates the same activity in the same units.
"""
from __future__ import annotations

import numpy as np

from .projector import projector

MU_WATER = 0.0192  # linear attenuation of water at ~70 keV, 1/mm


def _image(image, name: str) -> np.ndarray:
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} takes a 2D image; got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: the image contains NaN or infinite values")
    return array


def mri_kspace_crop(image, factor: int = 4) -> np.ndarray:
    """Keep the central 1/factor x 1/factor of k-space; magnitude image of the same size."""
    array = _image(image, "mri_kspace_crop")
    if not (isinstance(factor, (int, np.integer)) and factor >= 1):
        raise ValueError(f"factor must be an integer >= 1; got {factor!r}")
    kspace = np.fft.fftshift(np.fft.fft2(array))
    mask = np.zeros(array.shape, dtype=bool)
    (h, w), (mh, mw) = array.shape, (max(1, array.shape[0] // factor), max(1, array.shape[1] // factor))
    mask[(h - mh) // 2:(h - mh) // 2 + mh, (w - mw) // 2:(w - mw) // 2 + mw] = True
    return np.abs(np.fft.ifft2(np.fft.ifftshift(np.where(mask, kspace, 0))))


def _square(array: np.ndarray, name: str) -> int:
    if array.shape[0] != array.shape[1]:
        raise ValueError(f"{name} simulates a square field of view; got shape {array.shape}")
    return array.shape[0]


def transmission_counts(line_integrals: np.ndarray, incident: float, electronic_noise: float,
                        rng: np.random.Generator) -> np.ndarray:
    """Detected counts per ray: Poisson(incident exp(-p)) plus Gaussian electronic noise, >= 1."""
    counts = rng.poisson(incident * np.exp(-line_integrals)).astype(np.float64)
    counts += rng.normal(0.0, electronic_noise, size=counts.shape)
    return np.maximum(counts, 1.0)


def ct_low_dose(image_hu, dose: float = 0.25, seed=None, *, flux: float = 1e6, electronic_noise: float = 10.0,
                pixel_mm: float | None = None, angles: int | None = None) -> np.ndarray:
    """A low-dose acquisition of ``image_hu`` (HU), reconstructed by FBP, in HU.

    ``flux``: photons per ray at full dose (the default 1e6 gives quarter-dose noise of ~24 HU std
    in water at 128x128 with 2.7 mm pixels and 128 views, ~40 HU at 256x256; AAPM's quarter-dose
    scans measure 20-40 HU); ``dose``: the fraction of it (0.25 = quarter dose);
    ``pixel_mm``: pixel size (default: a 350 mm field of view); ``angles``: views (default:
    min(size, 180))."""
    array = _image(image_hu, "ct_low_dose")
    size = _square(array, "ct_low_dose")
    if not dose > 0 or not flux > 0 or electronic_noise < 0:
        raise ValueError(f"dose and flux must be positive, electronic_noise >= 0; got {dose}, {flux}, {electronic_noise}")
    pixel_mm = 350.0 / size if pixel_mm is None else pixel_mm
    beam = projector(size, angles or min(size, 180))
    mu = np.maximum(MU_WATER * (1.0 + array / 1000.0), 0.0) * pixel_mm    # per pixel
    incident = dose * flux
    counts = transmission_counts(beam.forward(mu), incident, electronic_noise, np.random.default_rng(seed))
    mu_recon = beam.fbp(np.log(incident / counts)) / pixel_mm
    return 1000.0 * (mu_recon / MU_WATER - 1.0)


def pet_low_count(image, dose_reduction: float = 12, seed=None, *, counts: float = 1e6, iterations: int = 20,
                  angles: int | None = None) -> np.ndarray:
    """A low-count acquisition of the activity ``image``, reconstructed by MLEM, in its units.

    ``counts``: coincidences of the full-count acquisition of this slice; ``dose_reduction``: the
    factor by which the low-count one has fewer; ``angles``: views (default: min(size, 180))."""
    array = _image(image, "pet_low_count")
    size = _square(array, "pet_low_count")
    if (array < 0).any():
        raise ValueError("pet_low_count: activity must be non-negative")
    if not dose_reduction >= 1 or not counts > 0 or iterations < 1:
        raise ValueError(f"dose_reduction >= 1, counts > 0 and iterations >= 1 are required; got "
                         f"{dose_reduction}, {counts}, {iterations}")
    beam = projector(size, angles or min(size, 180))
    expected = beam.forward(array)
    total = expected.sum()
    if total <= 0:
        return np.zeros_like(array)
    scale = counts / total / dose_reduction                                # activity -> low-count counts
    sinogram = np.random.default_rng(seed).poisson(expected * scale).astype(np.float64)
    return beam.mlem(sinogram, iterations) / scale
