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
        xx, yy = (a.ravel() for a in np.meshgrid(x, y))                # pixel centres, row-major
        theta = np.arange(angles) * np.pi / angles
        pixel = np.arange(size * size, dtype=np.int32)
        # Built a few views at a time in int32 / float32, so that a 512x512 projector (10^8
        # weights) peaks near the size of the matrix itself rather than several times it.
        rows, cols, data = [], [], []
        step = max(1, 2 ** 22 // (size * size))
        for start in range(0, angles, step):
            t = theta[start:start + step, None]
            s = np.cos(t) * xx + np.sin(t) * yy                          # (views, pixels)
            # Each unit pixel's footprint on the detector is approximated by a box of its projected
            # width |cos| + |sin| (in [1, sqrt 2]), whose mass is split by overlap over at most 3 bins.
            width = np.abs(np.cos(t)) + np.abs(np.sin(t))
            low = s - width / 2 + self.bins / 2                        # bin b spans [b, b + 1)
            first = np.floor(low).astype(np.int32)
            view = (np.arange(start, start + len(t), dtype=np.int32) * self.bins)[:, None]
            for offset in range(3):
                edge = first + offset
                overlap = np.minimum(low + width, edge + 1) - np.maximum(low, edge)
                keep = overlap > 0
                rows.append((view + edge)[keep])
                cols.append(np.broadcast_to(pixel, s.shape)[keep])
                data.append((overlap / width)[keep].astype(np.float32))
        shape = (angles * self.bins, size * size)
        coo = scipy.sparse.coo_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))), shape=shape)
        del rows, cols, data
        self.matrix = coo.tocsr()
        del coo
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
