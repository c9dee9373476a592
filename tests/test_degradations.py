"""Degradations against hand computations and their physics: the k-space crop, the projector, the
CT and PET pairs (two reconstructions of one scan at full and low dose), CT noise insertion into a
real slice, and the phantoms."""
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


def test_measured_counts_add_electronic_noise_and_never_reach_zero():
    rng = np.random.default_rng(3)
    photons = rng.poisson(1e4, size=400_000)
    counts = degradations.measured_counts(photons, 10.0, rng)
    assert counts.mean() == pytest.approx(1e4, rel=2e-3)
    assert counts.var() == pytest.approx(1e4 + 10.0 ** 2, rel=0.02)           # Poisson + electronic variance
    assert degradations.measured_counts(np.zeros(1000), 0.0, rng).min() == 1.0  # no log of zero


def water_disk(n):
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2
    r = np.hypot(xx, yy)
    return np.where(r < 0.4 * n, 0.0, -1000.0), r < 0.25 * n


def test_ct_pair_is_two_reconstructions_of_one_scan_at_full_and_quarter_dose():
    """Both images are FBPs of the same geometry, so their mean over noise draws is the same blurred
    reconstruction; the quarter-dose photons are a thinning of the full-dose ones, so the extra
    noise is independent of the full-dose noise: std(LQ - HQ) = sqrt(4 - 1) std(HQ noise)."""
    image, centre = water_disk(64)
    pairs = [degradations.ct_pair(image, seed=s, electronic_noise=0.0) for s in range(40)]
    low, full = (np.stack(p) for p in zip(*pairs))
    np.testing.assert_allclose(low.mean(0)[centre].mean(), full.mean(0)[centre].mean(), atol=2.0)
    assert abs(full.mean(0)[centre].mean()) < 5.0                                  # water at 0 HU
    edge = np.abs(np.hypot(*np.mgrid[:64, :64] - 31.5) - 0.4 * 64) < 1
    assert np.abs(full.mean(0) - image)[edge].mean() > 100                         # FBP blurs the rim ...
    assert np.abs(low.mean(0) - full.mean(0))[edge].mean() < 15                    # ... the same in both
    full_noise = (full - full.mean(0))[:, centre].std()
    extra = (low - full)[:, centre].std()
    assert extra / full_noise == pytest.approx(np.sqrt(3), rel=0.1)
    np.testing.assert_array_equal(degradations.ct_pair(image, seed=5)[0], degradations.ct_pair(image, seed=5)[0])


def test_ct_phantom_quarter_dose_input_is_like_aapm():
    """AAPM's real quarter-dose inputs measure about 29 dB in the paper's [-160, 240] HU window."""
    from benchmark import metrics
    from benchmark.data import sources
    psnr = [metrics.evaluate(*(a.astype(np.float64) for a in sources.phantom_pair("ct", 128, seed)), "ct")["psnr"]
            for seed in range(100_000, 100_008)]
    assert 26 <= np.mean(psnr) <= 32


def test_ct_low_dose_inserts_only_the_extra_noise_of_the_lower_dose():
    """On a slice that already is a reconstruction: no new blur (the mean over draws is the slice),
    and the inserted noise grows as sqrt(1 / dose - 1): the quarter dose adds sqrt(3) times the
    noise std of the half dose."""
    image, centre = water_disk(64)
    draws = {d: np.stack([degradations.ct_low_dose(image, dose=d, seed=s, electronic_noise=0.0) for s in range(30)])
             for d in (0.5, 0.25)}
    np.testing.assert_allclose(draws[0.25].mean(0), image, atol=60)                # no reconstruction blur
    assert np.abs(draws[0.25].mean(0) - image)[centre].mean() < 5
    noise = {d: (x - image)[:, centre].std() for d, x in draws.items()}
    assert noise[0.25] / noise[0.5] == pytest.approx(np.sqrt(3), rel=0.1)
    assert np.array_equal(degradations.ct_low_dose(image, dose=1.0, seed=0, electronic_noise=0.0), image)
    # the pixel size sets the physics: HU noise ~ (1 / pixel) / sqrt(counts), and the disc's diameter in mm
    # sets the attenuation (counts ~ exp(-mu_water d)): 2.0 -> 0.5 mm predicts 4 exp(-mu_water 51.2 * 1.5 / 2)
    coarse, fine = (degradations.ct_low_dose(image, seed=1, pixel_mm=mm, electronic_noise=0.0) - image
                    for mm in (2.0, 0.5))
    predicted = 4 * np.exp(-degradations.MU_WATER * 0.8 * 64 * 1.5 / 2)
    assert fine[centre].std() / coarse[centre].std() == pytest.approx(predicted, rel=0.15)


def test_pet_pair_is_two_mlem_reconstructions_of_one_scan():
    image = phantoms.phantom("pet", 64, seed=4).astype(np.float64)
    pairs = [degradations.pet_pair(image, seed=s) for s in range(12)]
    low, full = (np.stack(p) for p in zip(*pairs))
    assert full.sum((1, 2)).mean() == pytest.approx(image.sum(), rel=0.01)       # MLEM keeps the counts
    assert low.sum((1, 2)).mean() == pytest.approx(image.sum(), rel=0.02)        # scaled back to activity
    body = image > 0.5
    np.testing.assert_allclose(low.mean(0)[body].mean(), full.mean(0)[body].mean(), rtol=0.02)
    ratio = (low - full.mean(0))[:, body].std() / (full - full.mean(0))[:, body].std()
    assert 2.0 < ratio < 5.0                                                      # about sqrt(12) = 3.5
    with pytest.raises(ValueError, match="non-negative"):
        degradations.pet_pair(-np.ones((8, 8)))


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
    with pytest.raises(ValueError, match="0 < dose <= 1"):
        degradations.ct_pair(np.zeros((8, 8)), dose=2.0)
    with pytest.raises(ValueError, match="unknown modality"):
        phantoms.phantom("us", 32, 0)


def test_simulated_low_dose_of_a_dicom_slice_uses_its_pixel_spacing():
    pydicom_data = pytest.importorskip("pydicom.data")
    from benchmark import metrics
    from benchmark.data import io, sources
    path = pydicom_data.get_testdata_file("CT_small.dcm")                       # 128 x 128, 0.661468 mm pixels
    assert io.pixel_spacing_mm(path) == pytest.approx(0.661468)
    lq, hq = sources.simulated_ct_pair(path, seed=3)
    np.testing.assert_array_equal(hq, io.read_image(path))
    np.testing.assert_array_equal(lq, degradations.ct_low_dose(hq, seed=3, pixel_mm=0.661468))
    assert 22 < metrics.evaluate(lq, hq, "ct")["psnr"] < 32                    # AAPM's quarter dose: ~29 dB
