"""Anatomy-like 2D phantoms in each modality's physical units, deterministic from a seed.

Each phantom is a sum of filled ellipses (organs with typical values and random sizes, positions
and orientations) plus smooth low-frequency texture inside the body, so that restoration has edges,
flat regions and fine structure to recover:

- ``head_mri``: T2-weighted head in scanner units [0, 4095]: scalp/fat ~900, skull ~150, grey
  matter ~1700, white matter ~1200, CSF (ventricles, sulci) ~3200, small lesions ~2500.
- ``body_ct``: an abdomen slice in HU, as AAPM's liver scans are: air -1000, fat -100, muscle 50,
  liver 60, kidneys 30, vertebra 700 with a cortical rim 1200, contrast-filled vessels 200, and in
  3 of 10 (upper slices) the lung bases -850.
- ``whole_body_pet``: activity in SUV-like units [0, 20]: background tissue 1, liver 2.5, brain
  8, heart 5, bladder 15, lesions 4-12.

Geometry in mm (the image spans the field of view, whatever its size in pixels): the CT field is
350 mm (``degradations.FIELD_OF_VIEW_MM``; 512 pixels of 0.68 mm, as AAPM's), the body an ellipse
about 315 x 217 mm (semi-axes 0.9 and 0.62 of the half-field, +-5% and +-8%): an adult abdomen.
The MRI head fills 0.78 x 0.92 of a 240 mm field (IXI's 256 pixels of 0.94 mm): about 187 x 221 mm.
The PET field is 600 mm (``degradations.PET_FIELD_OF_VIEW_MM``), the coronal body about 210 x 570 mm.
"""
from __future__ import annotations

import numpy as np

from benchmark.base.vocabulary import RANGES as MODALITY_RANGES



def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    axis = (np.arange(size) + 0.5) / size * 2 - 1                      # pixel centres in [-1, 1]
    return np.meshgrid(axis, axis[::-1])                               # x right, y up


def _ellipse(xx, yy, cx, cy, a, b, angle) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    u, v = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _texture(rng: np.random.Generator, size: int, scale: float) -> np.ndarray:
    """Smooth random texture with unit standard deviation: white noise low-passed in k-space."""
    noise = rng.standard_normal((size, size))
    freq = np.fft.fftfreq(size)
    radius = np.hypot(*np.meshgrid(freq, freq))
    smooth = np.real(np.fft.ifft2(np.fft.fft2(noise) * np.exp(-(radius * size / scale) ** 2)))
    return smooth / (smooth.std() + 1e-12)


def head_mri(size: int, rng: np.random.Generator) -> np.ndarray:
    xx, yy = _grid(size)
    j = lambda spread: 1 + spread * rng.uniform(-1, 1)                  # noqa: E731 - a jitter factor
    a, b, angle = 0.78 * j(0.08), 0.92 * j(0.06), rng.uniform(-0.15, 0.15)
    image = np.zeros((size, size))
    image[_ellipse(xx, yy, 0, 0, a, b, angle)] = 900.0                  # scalp and fat
    image[_ellipse(xx, yy, 0, 0, a - 0.05, b - 0.05, angle)] = 150.0    # skull
    brain = _ellipse(xx, yy, 0, 0, a - 0.09, b - 0.09, angle)
    image[brain] = 1700.0                                               # grey matter
    white = _ellipse(xx, yy, 0, -0.02, (a - 0.09) * 0.72, (b - 0.09) * 0.7, angle)
    image[white] = 1200.0
    for side in (-1, 1):                                                # lateral ventricles
        image[_ellipse(xx, yy, side * 0.09 * j(0.3), 0.05, 0.06 * j(0.3), 0.22 * j(0.2), side * 0.3 + angle)] = 3200.0
    for _ in range(rng.integers(6, 12)):                                 # sulci near the cortex
        t = rng.uniform(0, 2 * np.pi)
        r = rng.uniform(0.75, 0.95)
        image[_ellipse(xx, yy, r * (a - 0.09) * np.cos(t), r * (b - 0.09) * np.sin(t), 0.012, 0.07, t) & brain] = 3200.0
    for _ in range(rng.integers(0, 3)):                                  # small lesions
        image[_ellipse(xx, yy, rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3), *rng.uniform(0.02, 0.06, 2), 0)] = 2500.0
    image += (image > 0) * 60.0 * _texture(rng, size, 12.0)
    return np.clip(image, *MODALITY_RANGES["mri"])


def body_ct(size: int, rng: np.random.Generator) -> np.ndarray:
    xx, yy = _grid(size)
    j = lambda spread: 1 + spread * rng.uniform(-1, 1)                  # noqa: E731
    a, b = 0.9 * j(0.05), 0.62 * j(0.08)
    image = np.full((size, size), -1000.0)                             # air
    body = _ellipse(xx, yy, 0, 0, a, b, 0)
    image[body] = -100.0                                               # subcutaneous fat
    image[_ellipse(xx, yy, 0, 0, a - 0.06, b - 0.06, 0)] = 50.0          # muscle / soft tissue
    image[_ellipse(xx, yy, -0.35 * j(0.1), 0.1, 0.38 * j(0.1), 0.3 * j(0.1), rng.uniform(-0.3, 0.3))] = 60.0  # liver
    for side in (-1, 1):                                                # kidneys
        image[_ellipse(xx, yy, side * 0.3, -0.2, 0.08 * j(0.2), 0.13 * j(0.2), side * 0.4)] = 30.0
    if rng.uniform() < 0.3:                                             # an upper slice: the lung bases
        for side in (-1, 1):
            image[_ellipse(xx, yy, side * 0.55 * j(0.05), -0.2, 0.14 * j(0.15), 0.2 * j(0.15), side * 0.3)] = -850.0
    image[_ellipse(xx, yy, 0, -0.38, 0.13, 0.11, 0)] = 1200.0          # vertebra: cortical rim
    image[_ellipse(xx, yy, 0, -0.38, 0.1, 0.08, 0)] = 700.0            # and cancellous bone
    for _ in range(rng.integers(2, 5)):                                  # contrast-filled vessels
        image[_ellipse(xx, yy, rng.uniform(-0.2, 0.2), rng.uniform(-0.25, 0.0), *(rng.uniform(0.02, 0.04),) * 2, 0)] = 200.0
    soft = body & (image > -500) & (image < 300)
    image += soft * 15.0 * _texture(rng, size, 10.0)
    return np.clip(image, *MODALITY_RANGES["ct"])


def whole_body_pet(size: int, rng: np.random.Generator) -> np.ndarray:
    xx, yy = _grid(size)
    j = lambda spread: 1 + spread * rng.uniform(-1, 1)                  # noqa: E731
    image = np.zeros((size, size))
    image[_ellipse(xx, yy, 0, 0, 0.35 * j(0.1), 0.95, 0)] = 1.0         # body (coronal)
    image[_ellipse(xx, yy, 0, 0.78, 0.13 * j(0.1), 0.16 * j(0.1), 0)] = 8.0   # brain
    image[_ellipse(xx, yy, 0.06, 0.3, 0.09 * j(0.2), 0.08 * j(0.2), 0.5)] = 5.0  # heart
    image[_ellipse(xx, yy, -0.13, 0.05, 0.16 * j(0.1), 0.12 * j(0.1), 0.3)] = 2.5  # liver
    image[_ellipse(xx, yy, 0, -0.6, 0.07 * j(0.2), 0.05 * j(0.2), 0)] = 15.0   # bladder
    for _ in range(rng.integers(1, 5)):                                  # lesions
        image[_ellipse(xx, yy, rng.uniform(-0.25, 0.25), rng.uniform(-0.7, 0.6), *(rng.uniform(0.015, 0.04),) * 2, 0)] = rng.uniform(4, 12)
    image *= 1.0 + 0.1 * _texture(rng, size, 8.0) * (image > 0)
    return np.clip(image, *MODALITY_RANGES["pet"])


PHANTOMS = {"mri": head_mri, "ct": body_ct, "pet": whole_body_pet}


def phantom(modality: str, size: int, seed: int) -> np.ndarray:
    """One phantom of ``modality`` ('mri', 'ct', 'pet'), ``size`` x ``size``, from ``seed``."""
    if modality not in PHANTOMS:
        raise ValueError(f"unknown modality {modality!r}; expected one of {', '.join(PHANTOMS)}")
    if size < 16:
        raise ValueError(f"phantoms need size >= 16; got {size}")
    return PHANTOMS[modality](size, np.random.default_rng(seed)).astype(np.float32)
