"""The statistics behind every table, against independent computations: the Wilcoxon p-value by
enumerating every sign pattern, the bootstrap by SciPy's bootstrap and by a plain NumPy loop, on a
fixed table of per-image scores."""
import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from benchmark.results import stats

# A fixed table: 3 rows x 2 seeds x 10 images of PSNR (dB). "good" is ~0.5 dB above the reference
# on every image, "close" within the noise.
BASE = np.array([24.1, 25.3, 23.8, 26.0, 24.7, 25.9, 23.2, 24.4, 25.1, 24.9])
NOISE = np.array([[0.11, -0.23, 0.05, 0.31, -0.14, 0.02, -0.27, 0.19, 0.08, -0.06],
                  [-0.09, 0.17, -0.21, 0.04, 0.26, -0.12, 0.13, -0.03, -0.18, 0.22]])
ROWS = {"ref": BASE + NOISE[[0, 1]] * 0.5,
        "good": BASE + 0.5 + NOISE[[1, 0]],
        "close": BASE + 0.03 + NOISE[[0, 1]][:, ::-1]}


def table(seeds=(0, 1)) -> pd.DataFrame:
    rows = []
    for label, matrix in ROWS.items():
        for s in seeds:
            for i, value in enumerate(matrix[s]):
                rows.append({"label": label, "seed": s, "task": "mri_sr", "index": i, "psnr": value})
    return pd.DataFrame(rows)


def exact_wilcoxon(d: np.ndarray) -> float:
    """Two-sided exact p: the share of the 2^n sign patterns whose W+ is at least as extreme (zero
    differences carry no sign and are dropped first, Wilcoxon's convention)."""
    d = d[d != 0]
    ranks = scipy_stats.rankdata(np.abs(d))
    observed = ranks[d > 0].sum()
    centre = ranks.sum() / 2
    totals = np.array([sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1], repeat=len(d))])
    return float(np.mean(np.abs(totals - centre) >= abs(observed - centre) - 1e-9))


def test_wilcoxon_matches_the_exact_enumeration():
    d = ROWS["good"].mean(0) - ROWS["ref"].mean(0)
    assert stats.wilcoxon_p(d) == pytest.approx(exact_wilcoxon(d), abs=1e-12)
    d = ROWS["close"].mean(0) - ROWS["ref"].mean(0)
    assert stats.wilcoxon_p(d) == pytest.approx(exact_wilcoxon(d), abs=1e-12)
    assert stats.wilcoxon_p(np.zeros(5)) == 1.0


def test_one_seed_interval_is_scipys_paired_percentile_bootstrap():
    scores = table(seeds=(0,))
    result = {c.label: c for c in stats.compare(scores, ["ref", "good", "close"], "ref", "psnr", resamples=20_000)}
    for label in ("good", "close"):
        d = ROWS[label][0] - ROWS["ref"][0]
        ci = scipy_stats.bootstrap((d,), np.mean, n_resamples=20_000, method="percentile", confidence_level=0.95,
                                   rng=np.random.default_rng(1)).confidence_interval
        assert result[label].difference == pytest.approx(d.mean(), abs=1e-12)
        assert result[label].low == pytest.approx(ci.low, abs=0.015)
        assert result[label].high == pytest.approx(ci.high, abs=0.015)
        assert result[label].seeds == 1 and result[label].seed_sd is None
    assert result["good"].resolved and not result["close"].resolved
    assert result["ref"].p_value is None and result["ref"].difference == 0.0
    assert result["good"].wilcoxon == pytest.approx(exact_wilcoxon(ROWS["good"][0] - ROWS["ref"][0]), abs=1e-12)


def loop_bootstrap(resamples: int, rng: np.random.Generator):
    """Seeds of each row, then one shared set of images, by plain indexing: (differences to ref, first)."""
    labels = list(ROWS)
    means = np.empty((resamples, len(labels)))
    for b in range(resamples):
        picks = [rng.integers(0, 2, size=2) for _ in labels]
        images = rng.integers(0, 10, size=10)
        for r, label in enumerate(labels):
            means[b, r] = ROWS[label][picks[r]][:, images].mean()
    return means - means[:, [0]], (means == means.max(1, keepdims=True)).mean(0)


def test_two_seed_bootstrap_matches_a_plain_loop():
    result = stats.compare(table(), list(ROWS), "ref", "psnr", resamples=20_000)
    differences, first = loop_bootstrap(20_000, np.random.default_rng(7))
    for r, comparison in enumerate(result):
        low, high = np.quantile(differences[:, r], [0.025, 0.975])
        assert comparison.low == pytest.approx(low, abs=0.02)
        assert comparison.high == pytest.approx(high, abs=0.02)
        assert comparison.first == pytest.approx(first[r], abs=0.02)
    good = result[1]
    assert good.difference == pytest.approx((ROWS["good"].mean(0) - ROWS["ref"].mean(0)).mean(), abs=1e-12)
    assert good.mean == pytest.approx(ROWS["good"].mean(), abs=1e-12)
    assert good.seed_sd == pytest.approx(np.std(ROWS["good"].mean(1), ddof=1), abs=1e-12)
    assert good.first > 0.95                                     # clearly the best row


def test_lower_is_better_metrics_rank_the_lowest_first():
    scores = table().assign(rmse=lambda f: 100 - f["psnr"])
    result = stats.compare(scores, list(ROWS), "ref", "rmse", resamples=2_000)
    assert result[1].first > 0.95 and result[1].difference < 0


def test_compare_refuses_rows_it_cannot_pair():
    scores = table()
    with pytest.raises(ValueError, match="reference row 'missing'"):
        stats.compare(scores, list(ROWS), "missing", "psnr")
    short = scores[~((scores["label"] == "good") & (scores["index"] == 9))]
    with pytest.raises(ValueError, match=r"rows 'ref' and 'good' were scored on different images \(10 and 9 "
                                         r"images; ids in one but not the other: \[9\]\)"):
        stats.compare(short, list(ROWS), "ref", "psnr")
    # the same number of images, but other ones: not paired by position
    moved = scores.assign(index=np.where(scores["label"] == "close", scores["index"] + 100, scores["index"]))
    with pytest.raises(ValueError, match="rows 'ref' and 'close' were scored on different images"):
        stats.compare(moved, list(ROWS), "ref", "psnr")


def test_rows_are_paired_by_image_id_not_by_position():
    """The same scores listed in another order (one row's images reversed in the table) give the
    same comparison: image 3 of one row is paired with image 3 of the other."""
    scores = table(seeds=(0,))
    shuffled = pd.concat([scores[scores["label"] != "good"], scores[scores["label"] == "good"].iloc[::-1]])
    a = stats.compare(scores, list(ROWS), "ref", "psnr", resamples=500)
    b = stats.compare(shuffled, list(ROWS), "ref", "psnr", resamples=500)
    assert a == b
    d = ROWS["good"][0] - ROWS["ref"][0]
    assert b[1].wilcoxon == pytest.approx(exact_wilcoxon(d), abs=1e-12)


def test_rows_tied_for_first_share_the_credit():
    """Hand-computed: resample 1 has rows a and b tied for first (1/2 each); resample 2 has a alone
    first; resample 3 all three tied (1/3 each). Shares: a (1/2 + 1 + 1/3) / 3, b (1/2 + 1/3) / 3,
    c (1/3) / 3; they add up to 1."""
    means = np.array([[2.0, 2.0, 1.0], [3.0, 1.0, 2.0], [1.0, 1.0, 1.0]])
    shares = stats.first_shares(means, higher_is_better=True)
    np.testing.assert_allclose(shares, [(0.5 + 1 + 1 / 3) / 3, (0.5 + 1 / 3) / 3, (1 / 3) / 3], atol=1e-15)
    assert shares.sum() == pytest.approx(1.0, abs=1e-15)
    np.testing.assert_allclose(stats.first_shares(-means, higher_is_better=False), shares, atol=1e-15)
    # identical rows: every resample is a tie, each gets half
    scores = table(seeds=(0,))
    twin = pd.concat([scores[scores["label"] == "ref"], scores[scores["label"] == "ref"].assign(label="twin")])
    result = stats.compare(twin, ["ref", "twin"], "ref", "psnr", resamples=200)
    assert [c.first for c in result] == [0.5, 0.5]


# --- subjects: the coverage of the interval, by simulation --------------------------------------

def simulated_scores(rng, delta, seeds=5, subjects=50, slices=6, subject_sd=1.0, interaction_sd=0.3,
                     seed_sd=0.05, slice_sd=0.2) -> pd.DataFrame:
    """Two rows ("ref", "new") scored on ``subjects`` x ``slices`` images. Each image has a
    difficulty shared by the rows (subject effect + slice effect); "new" is ``delta`` better on
    average over subjects, by a subject-dependent amount (row x subject interaction: the reason the
    subject, not the slice, is the unit); each training run (seed) shifts all its images; every
    score has its own noise. The true difference is ``delta``."""
    difficulty = rng.normal(0, subject_sd, (subjects, 1)) + rng.normal(0, 0.5, (subjects, slices))
    interaction = rng.normal(0, interaction_sd, (subjects, 1))
    frames = []
    for label, shift, own in (("ref", 0.0, 0.0), ("new", delta, interaction)):
        for seed in range(seeds):
            score = 25 + shift + own + difficulty + rng.normal(0, seed_sd) + rng.normal(0, slice_sd, (subjects, slices))
            frames.append(pd.DataFrame({"label": label, "seed": seed, "task": "mri_sr",
                                        "index": np.arange(subjects * slices),
                                        "subject": np.repeat([f"subject-{s}" for s in range(subjects)], slices),
                                        "psnr": score.ravel()}))
    return pd.concat(frames, ignore_index=True)


def coverage(tables: int, by_slice: bool, seed: int = 2026) -> float:
    rng, delta, hits = np.random.default_rng(seed), 0.3, 0
    for t in range(tables):
        scores = simulated_scores(rng, delta)
        if by_slice:                                      # the old bootstrap: every slice its own subject
            scores = scores.assign(subject=scores["index"].astype(str))
        new = stats.compare(scores, ["ref", "new"], "ref", "psnr", resamples=1_000, seed=t)[1]
        hits += new.low <= delta <= new.high
    return hits / tables


def test_subject_level_interval_covers_the_truth_and_the_slice_level_one_does_not():
    """1,000 simulated tables (5 seeds, 50 subjects of 6 slices): the 95% interval resampling
    subjects covers the true difference 93-97% of the time; resampling slices as if independent
    (what the bootstrap did before subjects were recorded) covers it far less often."""
    assert 0.93 <= coverage(1_000, by_slice=False) <= 0.97
    assert coverage(300, by_slice=True) < 0.85


def test_two_stage_weights_draw_subjects_then_their_slices():
    """Hand-checkable: two subjects of 1 and 3 slices. Every resample's weights add to 1; a subject
    drawn twice contributes twice its slices; over many resamples each subject is drawn half the time
    and the expected weight of an image is E[its draws / slices drawn]."""
    subjects = ["a", "b", "b", "b"]
    weights = stats.image_weights(subjects, 20_000, np.random.default_rng(0))
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
    only_a = weights[:, 0] == 1.0                         # subject a drawn twice: 2 slices, both a's one image
    only_b = weights[:, 0] == 0.0                         # b twice: 6 slices from its 3 images
    assert only_a.mean() == pytest.approx(0.25, abs=0.01) and only_b.mean() == pytest.approx(0.25, abs=0.01)
    mixed = ~only_a & ~only_b                             # a once (1 slice) and b once (3 slices): a weighs 1/4
    np.testing.assert_allclose(weights[mixed, 0], 0.25, atol=1e-12)
    np.testing.assert_allclose(weights[mixed, 1:].sum(axis=1), 0.75, atol=1e-12)


def test_one_subject_interval_resamples_only_its_slices():
    """One subject: its slices are resampled (the ordinary bootstrap of the slices' paired
    differences, as SciPy's), so the interval covers these slices of this subject."""
    scores = table(seeds=(0,)).assign(subject="patient-1")
    result = stats.compare(scores, ["ref", "good"], "ref", "psnr", resamples=20_000)[1]
    d = ROWS["good"][0] - ROWS["ref"][0]
    ci = scipy_stats.bootstrap((d,), np.mean, n_resamples=20_000, method="percentile",
                               rng=np.random.default_rng(1)).confidence_interval
    assert result.subjects == 1
    assert result.low == pytest.approx(ci.low, abs=0.015) and result.high == pytest.approx(ci.high, abs=0.015)


def test_runs_that_give_an_image_two_subjects_are_refused():
    scores = table(seeds=(0,)).assign(subject=lambda f: np.where(f["label"] == "good", "x", "y"))
    with pytest.raises(ValueError, match="image 0 is given different subjects by different runs \\(x, y\\)"):
        stats.compare(scores, ["ref", "good"], "ref", "psnr")


# --- the p-value agrees with the interval; Holm --------------------------------------------------

def test_p_value_and_interval_agree_on_every_comparison():
    """p < 0.05 exactly when the interval excludes 0, on every row of a fixed table with 1 and 2
    seeds and for every metric, and on resampled differences crafted to sit on the boundary."""
    for seeds in ((0,), (0, 1)):
        scores = table(seeds=seeds).assign(rmse=lambda f: 100 - f["psnr"], ssim=lambda f: f["psnr"] / 30)
        for metric in ("psnr", "ssim", "rmse"):
            for c in stats.compare(scores, list(ROWS), "ref", metric, resamples=4_000)[1:]:
                assert (c.p_value < 0.05) == c.resolved, (seeds, metric, c)
    for below in range(0, 60):                                    # 1,000 differences, `below` of them <= 0
        d = np.concatenate([-np.arange(1, below + 1), np.arange(1, 1_001 - below)]).astype(float)
        low, high, p = stats.interval_and_p(d)
        assert (p < 0.05) == (low > 0 or high < 0), below
        assert (p < 0.05) == (below < 25)
        low, high, p = stats.interval_and_p(-d)                   # the mirror: high < 0 on the same counts
        assert (p < 0.05) == (high < 0) == (below < 25)


def test_holm_against_a_hand_computed_family():
    """p = (0.01, 0.04, 0.03, 0.005), m = 4. Sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 =
    0.06; 0.04 x 1 = 0.04, raised to the running maximum 0.06. In input order: 0.03, 0.06, 0.06, 0.02."""
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02], atol=1e-15)
    np.testing.assert_allclose(stats.holm([0.5, 0.9]), [1.0, 1.0])           # capped at 1
    assert stats.holm([]) == []
    result = stats.with_holm(stats.compare(table(), list(ROWS), "ref", "psnr", resamples=2_000))
    assert result[0].p_holm is None
    assert [c.p_holm for c in result[1:]] == stats.holm([c.p_value for c in result[1:]])
