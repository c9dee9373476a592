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
    """AAPM's real quarter-dose inputs measure about 29 dB in the paper's [-160, 240] HU window; the
    phantoms are windows of whole 512x512 slices scanned at AAPM's 0.68 mm pixels."""
    from benchmark.results import metrics
    from benchmark.data import sources
    pairs = [sources.phantom_pair("ct", 128, seed) for seed in range(100_000, 100_008)]
    psnr = [metrics.evaluate(lq.astype(np.float64), hq.astype(np.float64), "ct")["psnr"] for lq, hq in pairs]
    assert 26 <= np.mean(psnr) <= 32
    assert all(lq.shape == hq.shape == (128, 128) for lq, hq in pairs)
    with pytest.raises(ValueError, match="at most 512"):
        sources.phantom_pair("ct", 640, 0)


def water_cylinder(n: int, diameter_mm: float, pixel_mm: float):
    """A water cylinder of ``diameter_mm`` in air on an n x n grid of ``pixel_mm`` pixels, and its
    central region (60 mm radius) where the noise is measured."""
    yy, xx = (np.mgrid[:n, :n] - (n - 1) / 2) * pixel_mm
    r = np.hypot(xx, yy)
    return np.where(r < diameter_mm / 2, 0.0, -1000.0), r < 60


def quarter_noise(image, centre, dose=0.25, simulate=degradations.ct_pair, **kw):
    """The low-dose image's noise std in ``centre``: from differences of independent scans (which
    cancel the reconstruction's deterministic structure), averaged over 3 pairs."""
    def scan(seed):
        out = simulate(image, dose=dose, seed=seed, **kw)
        return out[0] if isinstance(out, tuple) else out
    return np.mean([(scan(2 * s) - scan(2 * s + 1))[centre].std() / np.sqrt(2) for s in range(3)])


def test_ct_noise_goes_as_dose_to_the_minus_one_half():
    image, centre = water_cylinder(128, 300, 350 / 128)
    scaled = [quarter_noise(image, centre, dose) * np.sqrt(dose) for dose in (1.0, 0.5, 0.25, 0.125)]
    assert max(scaled) / min(scaled) < 1.1


def test_ct_noise_goes_as_pixel_to_the_minus_three_halves_and_lands_at_aapm_level():
    """The same 300 mm water body (an adult's water-equivalent diameter) on 512x512 pixels of 0.7 mm
    and on 128x128 of 2.8 mm (one field of view): a scanner's noise goes as pixel^(-3/2) (Brooks &
    Di Chiro), 8 times more on the fine grid. At 0.7 mm the quarter dose has AAPM's level of noise."""
    fine, coarse = (quarter_noise(*water_cylinder(n, 300, 358.4 / n), pixel_mm=358.4 / n) for n in (512, 128))
    assert 5 <= fine / coarse <= 12 and fine / coarse == pytest.approx(8, rel=0.15)
    assert 8 <= fine <= 25                                                  # HU, quarter dose


def test_ct_noise_does_not_depend_on_how_many_views_simulate_it_and_falls_with_slice_thickness():
    image, centre = water_cylinder(128, 300, 350 / 128)
    base = quarter_noise(image, centre)
    assert quarter_noise(image, centre, angles=90) == pytest.approx(base, rel=0.1)
    assert base / quarter_noise(image, centre, slice_mm=3.0) == pytest.approx(np.sqrt(3), rel=0.1)


def test_a_larger_body_is_noisier():
    """Through water of diameter d, a central ray keeps exp(-mu_water d) of its photons: noise grows
    as exp(mu_water d / 2)."""
    noise = {d: quarter_noise(*water_cylinder(128, d, 350 / 128)) for d in (200, 250, 300)}
    assert noise[200] < noise[250] < noise[300]
    assert noise[300] / noise[200] == pytest.approx(np.exp(degradations.MU_WATER * 100 / 2), rel=0.15)


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
    # noise insertion follows the same physics: the same field of view on 4 times the pixels (2x
    # finer) gets 2^(3/2) times the noise
    image, centre = water_cylinder(128, 300, 350 / 128)
    fine = quarter_noise(*water_cylinder(256, 300, 350 / 256), simulate=degradations.ct_low_dose)
    assert fine / quarter_noise(image, centre, simulate=degradations.ct_low_dose) == pytest.approx(2 ** 1.5, rel=0.15)


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


def test_pet_noise_goes_as_counts_to_the_minus_one_half():
    """A slice's coincidences are sensitivity x activity x area: relative noise falls as
    counts^(-1/2), whether the counts grow with the scanner's sensitivity or with the activity."""
    image = phantoms.phantom("pet", 64, seed=4).astype(np.float64)
    body = image > 0.5

    def relative_noise(activity, sensitivity, draws=6):
        full = np.stack([degradations.pet_pair(activity, seed=s, sensitivity=sensitivity)[1] for s in range(draws)])
        return (full - full.mean(0))[:, body].std() * np.sqrt(draws / (draws - 1)) / full.mean(0)[body].mean()
    levels = (1.5, 6.0, 24.0, 96.0)
    scaled = [relative_noise(image, s) * np.sqrt(s) for s in levels]
    assert max(scaled) / min(scaled) < 1.1
    assert relative_noise(2 * image, 6.0) / relative_noise(image, 6.0) == pytest.approx(2 ** -0.5, rel=0.1)


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
    """pydicom's CT_small.dcm: PixelSpacing 0.661468 mm (= its ReconstructionDiameter 338.67 mm /
    512) on 128 columns, with tissue at its border: a 128x128 crop of a 512x512 reconstruction, so the
    header's spacing is the image's (a vertebral body about 20 mm wide); the crop misses the body's
    attenuation outside it, which is said."""
    pydicom_data = pytest.importorskip("pydicom.data")
    from benchmark.data import io, sources
    path = pydicom_data.get_testdata_file("CT_small.dcm")                       # 128 x 128, 0.661468 mm pixels
    with pytest.warns(UserWarning, match="CT_small.dcm: PixelSpacing 0.661468 mm x 128 columns = 84.7 mm.*using "
                                         "0.661468 mm: the image cuts through tissue"):
        assert io.pixel_spacing_mm(path) == pytest.approx(0.661468)
    with pytest.warns(UserWarning) as said:
        lq, hq = sources.simulated_ct_pair(path, seed=3)
    assert any("cuts through tissue" in str(w.message) for w in said)
    assert any("(a crop of its reconstruction): the inserted noise misses" in str(w.message) for w in said)
    np.testing.assert_array_equal(hq, io.read_image(path))
    np.testing.assert_array_equal(lq, degradations.ct_low_dose(hq, seed=3, pixel_mm=0.661468))


def dicom_slice(tmp_path, image_hu, spacing_mm, diameter_mm, name="slice.dcm"):
    """CT_small.dcm with other pixels (HU, 128 x 128), PixelSpacing and ReconstructionDiameter."""
    pydicom = pytest.importorskip("pydicom")
    ds = pydicom.dcmread(pytest.importorskip("pydicom.data").get_testdata_file("CT_small.dcm"))
    stored = np.round((image_hu - float(ds.RescaleIntercept)) / float(ds.RescaleSlope))
    ds.PixelData = stored.astype(ds.pixel_array.dtype).tobytes()
    ds.PixelSpacing, ds.ReconstructionDiameter = [spacing_mm, spacing_mm], diameter_mm
    ds.save_as(tmp_path / name)
    return tmp_path / name


def test_pixel_spacing_follows_the_header_entry_consistent_with_the_image(tmp_path):
    import warnings
    from benchmark.data import io
    whole, _ = water_cylinder(128, 300, 350 / 128)                              # air all around the body
    # resampled to 128 columns with the 512 reconstruction's spacing kept: the diameter is right
    path = dicom_slice(tmp_path, whole, 350 / 512, 350.0)
    with pytest.warns(UserWarning, match=r"slice.dcm: .*using 2.73438 mm: the image shows its whole field"):
        assert io.pixel_spacing_mm(path) == pytest.approx(350 / 128)
    # header entries that agree: used as they are, without a word
    path = dicom_slice(tmp_path, whole, 350 / 128, 350.0, "agree.dcm")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert io.pixel_spacing_mm(path) == pytest.approx(350 / 128)
