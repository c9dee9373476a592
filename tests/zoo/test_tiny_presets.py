"""Fair tiny presets: each ``<name>_tiny`` has the paper's parameter count of ``<name>`` divided by
``models.TINY_DIVISOR``, within +-30%, so that smoke tables keep the paper's size ratios. Which
paper row a preset is comes from its registry entry (``models.model_info(name).paper``), its count
from the one transcription of the paper's tables, so a new model is checked without editing this
test."""
import pytest

import models
from benchmark.measure.profile import count_params
from tests.helpers import PAPER_MODELS, paper_size

PAPER_SIZES = {name: paper_size(name)[0] for name in PAPER_MODELS}


def test_every_paper_model_with_a_tiny_preset_is_checked():
    tiny = {n.removesuffix("_tiny") for n in models.list_models("*_tiny")}
    assert len(PAPER_SIZES) == 17 and set(PAPER_SIZES) <= tiny
    assert PAPER_SIZES["swinir"] == 11.4977 and PAPER_SIZES["xiang_pet"] == 0.2293


@pytest.mark.parametrize("name", sorted(PAPER_SIZES))
def test_tiny_preset_is_the_paper_size_over_the_common_divisor(name):
    target = PAPER_SIZES[name] / models.TINY_DIVISOR
    tiny = count_params(models.create_model(f"{name}_tiny"), deploy=True)
    assert 0.7 <= tiny / target <= 1.3, f"{name}_tiny has {tiny:.5f} M; the rule asks {target:.5f} M +-30%"
