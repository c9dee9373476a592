"""Fair tiny presets: each ``<name>_tiny`` has the paper's parameter count of ``<name>`` divided by
``models.TINY_DIVISOR``, within +-30%, so that smoke tables keep the paper's size ratios. The
paper's counts are read from the transcribed tables; which model a table row names is read from
the grid files (label -> model.name), so a new grid row is checked without editing this test."""
from pathlib import Path

import pytest

import models
from benchmark.config import load_yaml
from benchmark.profile import count_params
from benchmark.render.tables import paper_numbers

ROOT = Path(__file__).resolve().parent.parent


def _paper_sizes() -> dict[str, float]:
    """model name -> the paper's parameter count (M), from every grid that names models by label."""
    counts = {(r["table"], r["method"]): r["params_m"] for r in paper_numbers() if r["params_m"] is not None}
    sizes = {}
    for path in sorted((ROOT / "ablations").glob("*.yaml")):
        grid = load_yaml(path.read_text())
        group = (grid.get("axes") or {}).get("zip") or {}
        for label, name in zip(group.get("label", []), group.get("model.name", [])):
            if (grid.get("table"), label) in counts:
                sizes.setdefault(name, counts[(grid["table"], label)])
    sizes["restore_rwkv"] = counts[(1, "Restore-RWKV")]
    return sizes


PAPER_SIZES = _paper_sizes()


def test_every_paper_model_with_a_tiny_preset_is_checked():
    tiny = {n.removesuffix("_tiny") for n in models.list_models("*_tiny")}
    assert len(PAPER_SIZES) == 17 and set(PAPER_SIZES) <= tiny
    assert PAPER_SIZES["swinir"] == 11.4977 and PAPER_SIZES["xiang_pet"] == 0.2293


@pytest.mark.parametrize("name", sorted(PAPER_SIZES))
def test_tiny_preset_is_the_paper_size_over_the_common_divisor(name):
    target = PAPER_SIZES[name] / models.TINY_DIVISOR
    tiny = count_params(models.create_model(f"{name}_tiny"), deploy=True)
    assert 0.7 <= tiny / target <= 1.3, f"{name}_tiny has {tiny:.5f} M; the rule asks {target:.5f} M +-30%"
