"""Metrics against independent formulas and scikit-image, and the paper's evaluation protocol."""
import numpy as np
import pytest
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from benchmark.results import metrics


def images(seed=0, shape=(40, 52)):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(0, 100, shape)
    return gt + rng.normal(0, 5, shape), gt


def test_psnr_and_rmse_match_their_formulas():
    pred, gt = images()
    mse = ((pred - gt) ** 2).sum() / pred.size
    assert metrics.rmse(pred, gt) == pytest.approx(mse ** 0.5, rel=1e-12)
    assert metrics.psnr(pred, gt, 100.0) == pytest.approx(20 * np.log10(100.0) - 10 * np.log10(mse), rel=1e-12)
    assert metrics.psnr(gt, gt, 1.0) == float("inf")
    assert metrics.psnr(pred, gt, 100.0) == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=100.0))
    assert metrics.rmse(pred, gt) == pytest.approx(mean_squared_error(gt, pred) ** 0.5)


def test_ssim_equals_scikit_image_with_the_papers_window():
    for seed in range(3):
        pred, gt = images(seed)
        ours = metrics.ssim(pred, gt, data_range=100.0)
        ref = structural_similarity(pred, gt, data_range=100.0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
        assert ours == pytest.approx(ref, abs=1e-9)
    assert metrics.ssim(gt, gt, 100.0) == pytest.approx(1.0)


def test_ssim_of_a_hand_computed_constant_pair():
    # Constant images a and b: mu_x = a, mu_y = b, no variance -> (2ab + c1) / (a^2 + b^2 + c1).
    a, b, data_range = 10.0, 14.0, 50.0
    c1 = (0.01 * data_range) ** 2
    expected = (2 * a * b + c1) / (a * a + b * b + c1)
    assert metrics.ssim(np.full((16, 16), a), np.full((16, 16), b), data_range) == pytest.approx(expected, rel=1e-12)


def test_evaluate_clips_ct_to_the_display_window():
    gt = np.linspace(-1000, 1000, 64 * 64).reshape(64, 64)
    pred = gt + 30.0
    result = metrics.evaluate(pred, gt, "ct")
    clipped_pred, clipped_gt = np.clip(pred, -160, 240), np.clip(gt, -160, 240)
    assert result["rmse"] == pytest.approx(np.sqrt(np.mean((clipped_pred - clipped_gt) ** 2)))
    assert result["psnr"] == pytest.approx(metrics.psnr(clipped_pred, clipped_gt, 400.0))
    mri = metrics.evaluate(pred + 1000, gt + 1000, "mri")                       # no clipping
    assert mri["rmse"] == pytest.approx(30.0) and mri["psnr"] == pytest.approx(metrics.psnr(pred, gt, 2000.0))


def test_bad_inputs_say_what_is_wrong():
    pred, gt = images()
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.rmse(pred[:-1], gt)
    with pytest.raises(ValueError, match="NaN"):
        metrics.psnr(np.where(pred > 50, np.nan, pred), gt, 1.0)
    with pytest.raises(ValueError, match="unknown modality 'xray'"):
        metrics.evaluate(pred, gt, "xray")
    with pytest.raises(ValueError, match="data_range must be positive"):
        metrics.evaluate(pred, np.zeros_like(gt), "mri")
    with pytest.raises(ValueError, match="at least 11x11"):
        metrics.ssim(pred[:8, :8], gt[:8, :8], 1.0)
