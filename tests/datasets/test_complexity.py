"""The GLCM complexity (benchmark.data.complexity) against an independent NumPy computation of the
co-occurrence matrix, and the ``complexity`` command against SciPy on a fixed prepared set."""
import numpy as np
import pytest
from scipy import stats

from benchmark.base.vocabulary import display_window
from benchmark.data import complexity
from benchmark.data.__main__ import main as data_main


def numpy_contrast(levels_image: np.ndarray, levels: int, distances, angles) -> float:
    """Co-occurrences counted pair by pair: for each offset (row = round(sin a * d), column =
    round(cos a * d)), every pixel pair inside the image adds 1 to P[i, j] and to P[j, i]
    (symmetric), P is normalised, and contrast = sum P(i, j) (i - j)^2; the mean over offsets."""
    h, w = levels_image.shape
    values = []
    for d in distances:
        for a in angles:
            dr, dc = int(round(np.sin(a) * d)), int(round(np.cos(a) * d))
            counts = np.zeros((levels, levels))
            for r in range(h):
                for c in range(w):
                    r2, c2 = r + dr, c + dc
                    if 0 <= r2 < h and 0 <= c2 < w:
                        counts[levels_image[r, c], levels_image[r2, c2]] += 1
                        counts[levels_image[r2, c2], levels_image[r, c]] += 1
            p = counts / counts.sum()
            i, j = np.indices(p.shape)
            values.append(float((p * (i - j) ** 2).sum()))
    return float(np.mean(values))


def test_the_glcm_score_matches_a_pair_by_pair_count():
    rng = np.random.default_rng(3)
    image = np.cumsum(rng.normal(0, 40, (23, 17)), axis=1) + 100.0          # MRI-like values, some texture
    q = complexity.quantise(image, "mri")
    low, high = display_window(image, "mri")
    assert q.min() >= 0 and q.max() == complexity.LEVELS - 1
    expected_q = np.minimum(((np.clip(image, low, high) - low) / (high - low) * 32).astype(int), 31)
    assert np.array_equal(q, expected_q)
    expected = numpy_contrast(q, complexity.LEVELS, complexity.DISTANCES, complexity.ANGLES)
    assert complexity.glcm_complexity(image, "mri") == pytest.approx(expected, rel=1e-12)
    flat = np.full((16, 16), 40.0)                                           # CT water: one gray level
    assert complexity.glcm_complexity(flat, "ct") == 0.0
    stripes = np.where(np.arange(16)[None, :] % 2 == 0, -160.0, 240.0).repeat(16, 0)
    assert complexity.glcm_complexity(stripes, "ct") > 100                   # the window's extremes side by side


def test_the_complexity_command_reports_every_split_and_a_ks_test(tmp_path, capsys):
    folder = tmp_path / "mri"
    assert data_main(["prepare", "phantom-mri", "--out", str(folder), "--count", "5", "2", "4", "--size", "32",
                      "--quiet"]) == 0
    capsys.readouterr()
    assert data_main(["complexity", str(folder)]) == 0
    out = capsys.readouterr().out
    scores = complexity.split_scores(str(folder))
    assert [len(scores[s]) for s in ("train", "val", "test")] == [5, 2, 4]
    from benchmark.data import dataset
    hq = np.asarray(dataset.open_dataset(str(folder), "test").hq[0], dtype=np.float64)
    assert scores["test"][0] == pytest.approx(numpy_contrast(complexity.quantise(hq, "mri"), 32, (1, 2),
                                                             complexity.ANGLES), rel=1e-12)
    for split in ("train", "val", "test"):
        values = scores[split]
        assert f"| {split} | {len(values)} | {values.mean():.3f} | {values.std(ddof=1):.3f} | {np.median(values):.3f} |" in out
    ks = stats.ks_2samp(scores["train"], scores["test"])
    assert f"D = {ks.statistic:.3f}, p = {ks.pvalue:.3g}" in out
