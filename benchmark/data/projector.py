"""A 2D parallel-beam projector for the CT and PET simulators: forward projection (line integrals),
its adjoint (back-projection), filtered back-projection and MLEM.

Geometry: an n x n image of unit pixels centred on the rotation axis, ``angles`` views evenly
spaced over [0, pi), ``ceil(n sqrt 2) + 1`` unit detector bins (the image diagonal). Pixel-driven:
each pixel centre projects to ``s = x cos(theta) + y sin(theta)`` and its value is shared between
the bins its footprint overlaps (a box as wide as the pixel's projection), so a row of the system
matrix ``A`` approximates the line integral through the image in pixel units. ``A`` is a sparse matrix built once per
(size, angles) and cached; ``A.T`` is the exact adjoint used by back-projection and MLEM.
"""
from __future__ import annotations

import functools

import numpy as np
import scipy.sparse


class ParallelBeam:
    def __init__(self, size: int, angles: int):
        if size < 2 or angles < 1:
            raise ValueError(f"a projector needs size >= 2 and angles >= 1; got {size}, {angles}")
        self.size, self.angles = size, angles
        self.bins = int(np.ceil(size * np.sqrt(2))) + 1
        centre = (size - 1) / 2
        x = np.arange(size) - centre                                   # columns, left to right
        y = centre - np.arange(size)                                   # rows, top to bottom
        xx, yy = np.meshgrid(x, y)                                     # (size, size) pixel centres
        theta = np.arange(angles) * np.pi / angles
        s = np.cos(theta)[:, None] * xx.ravel() + np.sin(theta)[:, None] * yy.ravel()  # (angles, pixels)
        # Each unit pixel's footprint on the detector is approximated by a box of its projected
        # width |cos| + |sin| (in [1, sqrt 2]), whose mass is split by overlap over at most 3 bins.
        width = (np.abs(np.cos(theta)) + np.abs(np.sin(theta)))[:, None]
        low = s - width / 2 + self.bins / 2                            # bin b spans [b, b + 1)
        first = np.floor(low).astype(np.int64)
        view = np.arange(angles, dtype=np.int64)[:, None] * self.bins
        pixel = np.broadcast_to(np.arange(size * size, dtype=np.int64), s.shape)
        rows, cols, data = [], [], []
        for offset in range(3):
            edge = first + offset
            overlap = np.minimum(low + width, edge + 1) - np.maximum(low, edge)
            keep = overlap > 0
            rows.append((view + edge)[keep])
            cols.append(pixel[keep])
            data.append((overlap / width)[keep].astype(np.float32))
        rows, cols, data = np.concatenate(rows), np.concatenate(cols), np.concatenate(data)
        shape = (angles * self.bins, size * size)
        self.matrix = scipy.sparse.csr_matrix((data, (rows, cols)), shape=shape, dtype=np.float32)
        self.adjoint = self.matrix.T.tocsr()

    def _check(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image, dtype=np.float64)
        if image.shape != (self.size, self.size):
            raise ValueError(f"the projector is for {self.size}x{self.size} images; got {image.shape}")
        return image

    def forward(self, image: np.ndarray) -> np.ndarray:
        """Line integrals: (angles, bins)."""
        return (self.matrix @ self._check(image).ravel()).reshape(self.angles, self.bins)

    def back(self, sinogram: np.ndarray) -> np.ndarray:
        """The adjoint A^T: (angles, bins) -> (size, size)."""
        return (self.adjoint @ np.asarray(sinogram, dtype=np.float64).ravel()).reshape(self.size, self.size)

    def fbp(self, sinogram: np.ndarray) -> np.ndarray:
        """Filtered back-projection with the Ram-Lak filter (Kak & Slaney, Eq. 3.61: the spatial
        kernel h(0) = 1/4, h(n) = -1/(pi n)^2 for odd n, 0 for even n, applied by zero-padded FFT)."""
        sinogram = np.asarray(sinogram, dtype=np.float64)
        padded = 1 << int(np.ceil(np.log2(2 * self.bins)))
        n = np.fft.fftfreq(padded) * padded                            # 0, 1, ..., -1 (integer offsets)
        kernel = np.zeros(padded)
        kernel[0] = 0.25
        odd = n.astype(np.int64) % 2 == 1
        kernel[odd] = -1.0 / (np.pi * n[odd]) ** 2
        filtered = np.fft.irfft(np.fft.rfft(sinogram, padded, axis=1) * np.fft.rfft(kernel), padded, axis=1)
        return self.back(filtered[:, :self.bins]) * (np.pi / self.angles)

    def mlem(self, counts: np.ndarray, iterations: int, background: float = 0.0) -> np.ndarray:
        """Maximum-likelihood EM (Shepp & Vardi): x <- x / A^T 1 * A^T (y / (A x + b))."""
        counts = np.asarray(counts, dtype=np.float64).ravel()
        sensitivity = self.adjoint @ np.ones(self.matrix.shape[0])
        inside = sensitivity > 0
        estimate = np.where(inside, 1.0, 0.0)
        for _ in range(iterations):
            expected = self.matrix @ estimate + background
            ratio = np.divide(counts, expected, out=np.zeros_like(counts), where=expected > 0)
            update = self.adjoint @ ratio
            estimate = np.divide(estimate * update, sensitivity, out=np.zeros_like(estimate), where=inside)
        return estimate.reshape(self.size, self.size)


@functools.lru_cache(maxsize=4)
def projector(size: int, angles: int) -> ParallelBeam:
    return ParallelBeam(size, angles)
