"""The visual comparison and the complexity figure, re-rendered from a fixed store (no training):
the panels show the stored outputs in the display window, and the slopes are least squares."""
import numpy as np
import pandas as pd
import pytest

from benchmark.render import render_grid
from benchmark.render import complexity as complexity_render
from benchmark.render.examples import comparison_figure, panels, shown
from benchmark.results import store
from tests.helpers import FIGURES_SIDE as H, figures_store, marked_figures_store



def test_the_comparison_renders_from_the_store_and_a_panel_is_the_stored_output_in_its_window(tmp_path):
    grid_dir = figures_store(tmp_path)
    written = [p.name for p in render_grid(grid_dir, tmp_path / "tables")]
    assert "figs_compare.png" in written and "figs_complexity.png" in written
    text = (tmp_path / "tables" / "figs.md").read_text()
    assert "Visual comparison: `figs_compare.png`" in text and "Image complexity (`figs_complexity.png`" in text
    rows = [{"label": label, "examples": store.read_examples(grid_dir / f"{label.lower()}-run"),
             "scores": store.read_image_scores(grid_dir / f"{label.lower()}-run")} for label in ("A", "B")]
    examples = panels(rows, "A")
    assert [e["index"] for e in examples] == [3, 0]
    assert [p["title"] for p in examples[0]["panels"]] == ["Input", "A", "B", "Ground truth"]
    assert examples[0]["panels"][2]["caption"] == "29.00 dB / 0.8000"            # B's scores of image 3
    drawn = comparison_figure(examples, tmp_path / "c.png")
    stored = rows[1]["examples"]["output"][0].astype(np.float64)              # B's output of image 3
    hq = rows[0]["examples"]["hq"][0].astype(np.float64)
    low, high = np.percentile(hq, [0.5, 99.5])                                # MRI: the display percentiles
    expected = np.clip((stored - low) / (high - low), 0, 1)
    assert np.array_equal(np.asarray(drawn[2]), expected)
    assert np.array_equal(shown(stored, (low, high)), expected)
    top, left, side = examples[0]["inset"]
    error = np.abs(rows[0]["examples"]["output"][0].astype(np.float64) - hq)
    sums = [[error[t:t + side, c:c + side].sum() for c in range(H - side + 1)] for t in range(H - side + 1)]
    assert error[top:top + side, left:left + side].sum() == pytest.approx(np.max(sums))   # where A errs most


def test_the_complexity_slopes_are_least_squares_with_a_bootstrap_interval():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 10, 40)
    y = 3.0 - 0.4 * x + rng.normal(0, 0.2, 40)
    assert complexity_render.slope(x, y) == pytest.approx(np.polyfit(x, y, 1)[0], rel=1e-12)
    low, high = complexity_render.slope_interval(x, y)
    assert low < -0.4 < high and high - low < 0.1
    scores = pd.DataFrame({"label": ["A"] * 4 + ["A"] * 4, "seed": [0] * 4 + [1] * 4, "task": "mri_sr",
                           "index": [0, 1, 2, 3] * 2, "psnr": [24, 25, 26, 27, 26, 27, 28, 29],
                           "input_psnr": 22.0, "complexity": [1.0, 2.0, 3.0, 4.0] * 2})
    gains = complexity_render.gains(scores, "mri_sr")["A"]
    assert list(gains["gain"]) == [3.0, 4.0, 5.0, 6.0]                        # the mean over the seeds
    assert complexity_render.slope(gains["complexity"], gains["gain"]) == pytest.approx(1.0)


def test_the_overlap_check_finds_text_on_text_and_text_on_another_panel():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from benchmark.render.figures import text_overlaps
    fig, axes = plt.subplots(1, 2, figsize=(6, 3))
    axes[0].set_title("left")
    axes[1].set_title("right")
    fig.tight_layout()
    assert text_overlaps(fig) == []
    axes[0].text(1.5, 0.5, "spills onto the right panel", transform=axes[0].transAxes)
    fig.text(0.5, 0.99, "a title", va="top")
    fig.text(0.5, 0.99, "another title", va="top")
    found = text_overlaps(fig)
    assert "text 'spills onto the right panel' overlaps the panel 'right'" in found
    assert any("'a title' overlaps text 'another title'" in f for f in found)
    plt.close(fig)


def test_figures_from_a_fixed_store_mark_rows_carry_colour_bars_and_no_text_overlaps(tmp_path, monkeypatch, capsys):
    """All four figures of a grid, drawn from a fixed store: no text overlaps another text or a panel
    (the renderer reports any on stderr), B's marks (floored †, did not learn ✗) are in every figure,
    and the error maps and ERF maps have colour bars with their units."""
    from matplotlib.text import Text
    from benchmark.render import complexity, examples, figures
    texts = {}
    real = figures._save

    def recording(fig, path, title, dpi, **options):
        real(fig, path, title, dpi, **options)            # lays out, checks and writes, then closes
        texts[path.name] = [t.get_text() for t in fig.findobj(Text)]

    for module in (figures, examples, complexity):
        monkeypatch.setattr(module, "_save", recording)
    written = [p.name for p in render_grid(marked_figures_store(tmp_path), tmp_path / "tables")]
    assert {"figs_curves.png", "figs_erf.png", "figs_compare.png", "figs_complexity.png"} <= set(written)
    assert "overlaps" not in capsys.readouterr().err
    for name in ("figs_curves.png", "figs_erf.png", "figs_compare.png", "figs_complexity.png"):
        assert any("B † ✗" in t for t in texts[name]), name
        assert not any("A †" in t or "A ✗" in t for t in texts[name]), name
    assert "absolute error (scanner units)" in texts["figs_compare.png"]
    assert "(contribution / max)^0.25" in texts["figs_erf.png"]
    assert any(t.endswith("last half, enlarged") for t in texts["figs_curves.png"])


def test_a_comparison_of_one_example_and_twelve_columns_has_no_text_overlap(tmp_path, capsys):
    """The rehearsal's CT table (one test image, ten models, 512x512): the title took the panels'
    room and every caption overlapped the error map's title under it."""
    grid_dir = figures_store(tmp_path)
    rows = [{"label": label, "examples": store.read_examples(grid_dir / f"{label.lower()}-run"),
             "scores": store.read_image_scores(grid_dir / f"{label.lower()}-run")} for label in ("A", "B")]
    example = panels(rows, "A")[0]
    middle = [dict(p, title=f"Restore-RWKV {i} ≡ ✗") for i, p in enumerate(example["panels"][1:-1] * 5)]
    example = dict(example, panels=[example["panels"][0], *middle, example["panels"][-1]])
    comparison_figure([example], tmp_path / "one.png", title="Visual comparison: CT denoising (single task)")
    assert len(example["panels"]) == 12 and (tmp_path / "one.png").is_file()
    assert "overlaps" not in capsys.readouterr().err
