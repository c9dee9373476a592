"""How the low-quality inputs are made: pure functions, 2D float arrays in, same shape out.

MRI super-resolution (``mri_kspace_crop``)
    The image's 2D Fourier transform (k-space) is kept only in its central ``1/factor x 1/factor``
    block, the low spatial frequencies that a shorter acquisition samples (6.25% of the samples for
    factor 4), and set to zero elsewhere; the inverse transform's magnitude is the low-resolution
    image at the original size. With the zero frequency at index ``n // 2`` after ``fftshift``, the
    kept rows (columns) are ``[(n - m) // 2, (n - m) // 2 + m)`` with ``m = n // factor``.

Low-dose CT: phantom pairs (``ct_pair``) and noise insertion into real slices (``ct_low_dose``)
    Attenuation ``mu = mu_water (1 + HU / 1000)`` (air and below: 0), line integrals ``p = A mu``
    through a parallel-beam projector (``pixel_mm`` per pixel, one detector bin per pixel), transmission
    counts ``N`` with mean ``I0 exp(-p)`` plus Gaussian electronic noise, floored at 1 count;
    ``p' = log(I0 / N)`` is reconstructed by filtered back-projection and converted back to HU. The
    noise variance of ``p'`` is about ``1 / (I0 exp(-p))``: a quarter of the dose doubles the noise std.

    The photons scale like a scanner's: ``flux`` is given per reading of a 1 mm x 1 mm detector
    element at one of ``REFERENCE_VIEWS`` views, and a simulated ray stands for
    ``pixel_mm x slice_mm x REFERENCE_VIEWS / views`` such readings (``readings_per_ray``), so
    ``I0 = dose x flux x readings``. The noise std then goes as dose^(-1/2), slice^(-1/2) and, at one
    field of view, pixel^(-3/2) (Brooks & Di Chiro 1976), grows with the body's size, and does not
    depend on how many views simulate the scan (``python -m benchmark.data noise-scaling`` measures
    each; docs/ct-noise.md). The level is set on AAPM's measured quarter-dose data, not on a tube
    current: the reconstruction is a plain Ram-Lak FBP without a scanner's smoothing kernel, bowtie
    filter or z-interpolation, all of which lower the noise, so ``CT_FLUX`` is an effective flux.

    ``ct_pair`` scans a phantom the way AAPM's pairs were made: the high-quality image is the FBP
    of a full-dose acquisition, the low-quality one the FBP of the quarter-dose acquisition of the
    same phantom with the same geometry, views and filter, whose photons are a binomial thinning
    (keep each with probability ``dose``) of the full-dose photons, so both images share the
    reconstruction's blur and view artefacts and differ only by the extra noise of the lower dose.

    ``ct_low_dose`` takes a slice that already is a full-dose reconstruction (a real scan) and adds
    only the extra noise of the lower dose in the projection domain, as Mayo Clinic made AAPM's
    quarter-dose data (Yu et al., Med. Phys. 39, 2012): with ``lam = I0 exp(-p)`` the full-dose
    mean counts of the slice's own line integrals, the low-dose counts ``dose lam + delta`` with
    ``delta ~ N(0, dose (1 - dose) lam + (1 - dose^2) electronic_noise^2)`` have the variance of a
    low-dose acquisition, ``dose lam + electronic_noise^2``, once the full-dose noise already in
    the slice is counted; the FBP of the change in the line integrals is added to the slice.
    The slice itself is never re-reconstructed, so it keeps its resolution.

Low-count PET (``pet_pair``)
    The activity image is forward-projected and scaled so that the full-count acquisition records
    ``counts`` coincidences; its sinogram is Poisson, and the low-count sinogram keeps each of its
    coincidences with probability ``1 / dose_reduction`` (binomial thinning: the low-count
    acquisition of the same scan). Both are reconstructed with the same MLEM iterations and scaled
    back by their own count factors, so that both estimate the same activity in the same units.
"""
from __future__ import annotations

import numpy as np

from benchmark.data.projector import projector

MU_WATER = 0.0192          # linear attenuation of water at ~70 keV, 1/mm
FIELD_OF_VIEW_MM = 350.0   # a body scan's field of view: the pixel size when none is given
SLICE_MM = 1.0             # slice thickness (AAPM released 1 mm and 3 mm series)
REFERENCE_VIEWS = 1000     # views per rotation of the scanner that CT_FLUX describes
CT_FLUX = 1.0e7            # full-dose photons per reading of a 1 mm x 1 mm detector element (calibrated: see ct_pair)
CT_ELECTRONIC_NOISE = 10.0  # std of one such reading's electronic noise, in photons
PET_FIELD_OF_VIEW_MM = 600.0  # a whole-body coronal slice's field of view: the pixel size when none is given
PET_SENSITIVITY = 6.0      # full-count coincidences per unit of activity per mm^2 of slice (~10^6 per phantom)


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


def measured_counts(photons: np.ndarray, electronic_noise: float, rng: np.random.Generator) -> np.ndarray:
    """What a detector reads: the photons plus Gaussian electronic noise, floored at 1 count (no log of 0)."""
    return np.maximum(photons + rng.normal(0.0, electronic_noise, size=np.shape(photons)), 1.0)


def _beam(size: int, angles: int | None):
    """The projector of a simulated scan: ``angles`` views, by default min(size, 180)."""
    return projector(size, angles or min(size, 180))


def _ct_geometry(array: np.ndarray, name: str, pixel_mm: float | None, angles: int | None):
    size = _square(array, name)
    pixel_mm = FIELD_OF_VIEW_MM / size if pixel_mm is None else float(pixel_mm)
    if not pixel_mm > 0:
        raise ValueError(f"{name}: pixel_mm must be positive; got {pixel_mm}")
    return _beam(size, angles), pixel_mm


def _check_dose(name: str, dose: float, flux: float, electronic_noise: float, slice_mm: float) -> None:
    if not 0 < dose <= 1 or not flux > 0 or electronic_noise < 0 or not slice_mm > 0:
        raise ValueError(f"{name}: needs 0 < dose <= 1, flux > 0, electronic_noise >= 0 and slice_mm > 0; got "
                         f"{dose}, {flux}, {electronic_noise}, {slice_mm}")


def readings_per_ray(pixel_mm: float, slice_mm: float, views: int) -> float:
    """How many readings of the reference scanner (1 mm x 1 mm elements, ``REFERENCE_VIEWS`` views)
    one simulated ray stands for: its detector bin is one pixel wide and ``slice_mm`` thick, and
    each of its ``views`` views gathers the photons of ``REFERENCE_VIEWS / views`` real ones. Photons
    and electronic noise variance both add over readings, so a ray's mean photons are
    ``flux x readings`` and its electronic noise std ``electronic_noise x sqrt(readings)``: the
    noise a slice gets does not depend on how many views simulate it, and at a fixed slice
    thickness it goes as pixel^(-3/2) (Brooks & Di Chiro, Phys. Med. Biol. 21, 1976)."""
    return pixel_mm * slice_mm * REFERENCE_VIEWS / views


def _full_dose_scan(name: str, image_hu, dose: float, flux: float, electronic_noise: float,
                    pixel_mm: float | None, slice_mm: float, angles: int | None):
    """What ``ct_pair`` and ``ct_low_dose`` share: the checked image (HU), its projector and pixel
    size, the mean full-dose photons of every ray, the photons per ray in air and the electronic
    noise std per ray (scaled by ``readings_per_ray``)."""
    array = _image(image_hu, name)
    _check_dose(name, dose, flux, electronic_noise, slice_mm)
    beam, pixel_mm = _ct_geometry(array, name, pixel_mm, angles)
    readings = readings_per_ray(pixel_mm, slice_mm, beam.angles)
    per_ray, electronic = flux * readings, electronic_noise * np.sqrt(readings)
    mean = per_ray * np.exp(-_line_integrals(beam, array, pixel_mm))
    return array, beam, pixel_mm, mean, per_ray, electronic


def _line_integrals(beam, image_hu: np.ndarray, pixel_mm: float) -> np.ndarray:
    """HU -> attenuation per pixel (air and below: 0) -> line integrals (unitless)."""
    return beam.forward(np.maximum(MU_WATER * (1.0 + image_hu / 1000.0), 0.0) * pixel_mm)


def _fbp_hu(beam, line_integrals: np.ndarray, pixel_mm: float) -> np.ndarray:
    """FBP of line integrals (unitless) -> HU relative to water: 1000 mu / mu_water."""
    return 1000.0 * beam.fbp(line_integrals) / pixel_mm / MU_WATER


def ct_pair(image_hu, dose: float = 0.25, seed=None, *, flux: float = CT_FLUX,
            electronic_noise: float = CT_ELECTRONIC_NOISE, pixel_mm: float | None = None,
            slice_mm: float = SLICE_MM, angles: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(low-dose FBP, full-dose FBP) of one phantom ``image_hu`` (HU), both in HU.

    ``flux``: full-dose photons per reading of a 1 mm x 1 mm detector element at one of
    ``REFERENCE_VIEWS`` views (``readings_per_ray`` scales it to the simulated geometry); the
    default gives the quarter dose 16 HU of noise in the centre of a 300 mm water cylinder at
    0.7 mm pixels, and the 128x128 phantom windows an input of 27.8 dB PSNR in the paper's
    [-160, 240] HU window (AAPM's real quarter-dose inputs: about 29 dB; docs/ct-noise.md says
    what it matches and what not); ``electronic_noise``: std of one such reading's electronic
    noise (photons); ``dose``: the low-dose fraction (0.25 = quarter dose); ``pixel_mm``: pixel
    size (default: a 350 mm field of view); ``slice_mm``: slice thickness; ``angles``: views
    (default: min(size, 180))."""
    _, beam, pixel_mm, mean, per_ray, electronic = _full_dose_scan(
        "ct_pair", image_hu, dose, flux, electronic_noise, pixel_mm, slice_mm, angles)
    rng = np.random.default_rng(seed)
    photons = rng.poisson(mean)                                             # full dose
    scans = []
    for fraction, detected in ((1.0, photons), (dose, rng.binomial(photons, dose))):
        counts = measured_counts(detected, electronic, rng)
        scans.append(_fbp_hu(beam, np.log(fraction * per_ray / counts), pixel_mm) - 1000.0)
    full, low = scans
    return low, full


def ct_low_dose(image_hu, dose: float = 0.25, seed=None, *, flux: float = CT_FLUX,
                electronic_noise: float = CT_ELECTRONIC_NOISE, pixel_mm: float | None = None,
                slice_mm: float = SLICE_MM, angles: int | None = None) -> np.ndarray:
    """``image_hu``, a full-dose reconstruction (HU), with the extra noise of ``dose`` inserted in
    the projection domain (see the module docstring), in HU. ``pixel_mm``: the slice's pixel size
    (``benchmark.data.io.pixel_spacing_mm`` reads it from a file's header; default a 350 mm field
    of view); ``slice_mm``: its thickness; ``flux``, ``electronic_noise``, ``angles`` as for
    ``ct_pair``. The line integrals are those of the image itself: a slice cropped from a larger
    body misses the attenuation of what lies outside it, and gets less noise than its scan had."""
    array, beam, pixel_mm, mean, _, electronic = _full_dose_scan(            # mean: full-dose counts of the slice
        "ct_low_dose", image_hu, dose, flux, electronic_noise, pixel_mm, slice_mm, angles)
    rng = np.random.default_rng(seed)
    spread = np.sqrt(dose * (1.0 - dose) * mean + (1.0 - dose ** 2) * electronic ** 2)
    low = np.maximum(dose * mean + spread * rng.standard_normal(mean.shape), 1.0)
    change = np.log(dose * mean / low)                                      # low-dose minus full-dose p
    return array + _fbp_hu(beam, change, pixel_mm)


def pet_pair(image, dose_reduction: float = 12, seed=None, *, sensitivity: float = PET_SENSITIVITY,
             pixel_mm: float | None = None, iterations: int = 20,
             angles: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(low-count MLEM, full-count MLEM) of the activity ``image``, both in its units.

    ``sensitivity``: coincidences the full-count acquisition records per unit of activity per mm^2
    of the slice, so that a slice's counts follow its activity and its area as a scanner's do
    (``pixel_mm``: pixel size, default a ``PET_FIELD_OF_VIEW_MM`` field of view; the default
    sensitivity gives the 128x128 phantoms about 10^6 coincidences); ``dose_reduction``: the factor
    by which the low-count acquisition has fewer; ``iterations``: MLEM iterations of both;
    ``angles``: views (default: min(size, 180))."""
    array = _image(image, "pet_pair")
    size = _square(array, "pet_pair")
    pixel_mm = PET_FIELD_OF_VIEW_MM / size if pixel_mm is None else float(pixel_mm)
    if (array < 0).any():
        raise ValueError("pet_pair: activity must be non-negative")
    if not dose_reduction >= 1 or not sensitivity > 0 or not pixel_mm > 0 or iterations < 1:
        raise ValueError(f"pet_pair: dose_reduction >= 1, sensitivity > 0, pixel_mm > 0 and iterations >= 1 are "
                         f"required; got {dose_reduction}, {sensitivity}, {pixel_mm}, {iterations}")
    beam = _beam(size, angles)
    expected = beam.forward(array)
    total = expected.sum()
    if total <= 0:
        return np.zeros_like(array), np.zeros_like(array)
    rng = np.random.default_rng(seed)
    counts = sensitivity * array.sum() * pixel_mm ** 2                      # coincidences of the full count
    scale = counts / total                                                  # activity -> full-count counts
    full = rng.poisson(expected * scale)
    low = rng.binomial(full, 1.0 / dose_reduction)
    return (beam.mlem(low.astype(np.float64), iterations) / (scale / dose_reduction),
            beam.mlem(full.astype(np.float64), iterations) / scale)
