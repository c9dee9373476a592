"""Degradations against hand computations and their physics: the k-space crop, the projector, the
CT transmission noise and the PET count statistics, and the phantoms."""
import numpy as np
import pytest

from benchmark.data import degradations, phantoms, projector


def test_kspace_crop_matches_a_hand_computed_dft():
    """n = 8, factor 4: only the frequencies -1 and 0 survive on each axis."""
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (8, 8))
    n = np.arange(8)
    dft = np.exp(-2j * np.pi * np.outer(n, n) / 8)                             # F = D x D^T
    spectrum = dft @ image @ dft.T
    kept = [7, 0]                                                             # frequency -1 is index 7
    expected = np.zeros((8, 8), dtype=complex)
    for ky in kept:
        for kx in kept:
            expected += spectrum[ky, kx] * np.exp(2j * np.pi * (ky * n[:, None] + kx * n[None, :]) / 8) / 64
    np.testing.assert_allclose(degradations.mri_kspace_crop(image, factor=4), np.abs(expected), atol=1e-12)


def test_kspace_crop_keeps_the_central_sixteenth():
    image = np.random.default_rng(1).uniform(0, 1, (256, 256))
    low = degradations.mri_kspace_crop(image)
    assert low.shape == image.shape
    np.testing.assert_allclose(degradations.mri_kspace_crop(image, factor=1), image, atol=1e-12)
    # the crop is a projection: the complex low-pass of the low-pass is itself
    spectrum = np.fft.fftshift(np.fft.fft2(image))
    kept = np.zeros_like(spectrum)
    kept[96:160, 96:160] = spectrum[96:160, 96:160]                          # 64 x 64 = 6.25% of 256^2
    np.testing.assert_allclose(low, np.abs(np.fft.ifft2(np.fft.ifftshift(kept))), atol=1e-10)


def test_projector_is_accurate_and_its_adjoint_exact():
    n = 64
    beam = projector.ParallelBeam(n, 60)
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    blob = np.exp(-(xx ** 2 + yy ** 2) / 100)
    s = np.arange(beam.bins) - (beam.bins - 1) / 2
    analytic = np.sqrt(np.pi) * 10 * np.exp(-s ** 2 / 100)                    # line integrals of the blob
    sino = beam.forward(blob)
    assert np.abs(sino - analytic).max() < 0.01 * analytic.max()
    assert np.abs(beam.fbp(sino) - blob).max() < 0.01
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(n, n)), rng.normal(size=sino.shape)
    assert np.sum(beam.forward(x) * y) == pytest.approx(np.sum(x * beam.back(y)), rel=1e-5)


def test_transmission_counts_have_poisson_plus_electronic_statistics():
    rng = np.random.default_rng(3)
    counts = degradations.transmission_counts(np.full(400_000, 1.0), 1e4, 10.0, rng)
    mean = 1e4 * np.exp(-1.0)
    assert counts.mean() == pytest.approx(mean, rel=2e-3)
    assert counts.var() == pytest.approx(mean + 10.0 ** 2, rel=0.02)
    floor = degradations.transmission_counts(np.full(1000, 30.0), 1e4, 0.0, rng)
    assert floor.min() == 1.0                                                  # no log of zero


def water_disk(n):
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    r = np.hypot(xx, yy)
    return np.where(r < 0.4 * n, 0.0, -1000.0), r < 0.25 * n


def test_ct_noise_follows_the_dose():
    image, centre = water_disk(96)
    clean = degradations.ct_low_dose(image, dose=1e9, seed=0)
    assert abs(clean[centre].mean()) < 1.0 and clean[centre].std() < 10.0     # water at 0 HU (FBP ringing)
    noise = {d: (degradations.ct_low_dose(image, dose=d, seed=1) - clean)[centre].std() for d in (1.0, 0.25)}
    assert noise[0.25] / noise[1.0] == pytest.approx(2.0, rel=0.1)             # std ~ 1 / sqrt(dose)
    np.testing.assert_array_equal(degradations.ct_low_dose(image, seed=5), degradations.ct_low_dose(image, seed=5))


def test_pet_low_count_is_unbiased_and_noisier_with_fewer_counts():
    image = phantoms.phantom("pet", 64, seed=4).astype(np.float64)
    clean = degradations.pet_low_count(image, dose_reduction=1, counts=1e12, seed=0)
    assert clean.sum() == pytest.approx(image.sum(), rel=0.01)                 # MLEM keeps the counts
    full = degradations.pet_low_count(image, dose_reduction=1, seed=1)
    low = degradations.pet_low_count(image, dose_reduction=12, seed=1)
    assert low.sum() == pytest.approx(image.sum(), rel=0.05)                   # scaled back to activity
    ratio = (low - clean).std() / (full - clean).std()
    assert 2.0 < ratio < 5.0                                                    # about sqrt(12) = 3.5


@pytest.mark.parametrize("modality", ["mri", "ct", "pet"])
def test_phantoms_are_deterministic_and_in_physical_ranges(modality):
    a, b = phantoms.phantom(modality, 64, seed=7), phantoms.phantom(modality, 64, seed=7)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, phantoms.phantom(modality, 64, seed=8))
    low, high = phantoms.MODALITY_RANGES[modality]
    assert a.dtype == np.float32 and a.min() >= low and a.max() <= high and len(np.unique(a)) > 20


def test_degradations_reject_bad_input():
    with pytest.raises(ValueError, match="2D image"):
        degradations.mri_kspace_crop(np.zeros((2, 4, 4)))
    with pytest.raises(ValueError, match="NaN"):
        degradations.ct_low_dose(np.full((8, 8), np.nan))
    with pytest.raises(ValueError, match="square"):
        degradations.ct_low_dose(np.zeros((8, 10)))
    with pytest.raises(ValueError, match="non-negative"):
        degradations.pet_low_count(-np.ones((8, 8)))
    with pytest.raises(ValueError, match="unknown modality"):
        phantoms.phantom("us", 32, 0)
