"""Fair tiny presets: each ``<name>_tiny`` has the paper's parameter count of ``<name>`` divided by
``models.TINY_DIVISOR``, within +-30%, so that smoke tables keep the paper's size ratios, unless
that is under ``models.TINY_FLOOR`` trainable parameters: then the preset is the full one with its
widths scaled uniformly to the smallest size of at least the floor, its layers kept, and it is
registered ``floored`` (tables mark its rows). Which paper row a preset is comes from its registry
entry (``models.model_info(name).paper``), its count from the one transcription of the paper's
tables, so a new model is checked without editing this test."""
import pytest

import models
from benchmark.measure.costs import count_params
from models.eformer import Eformer
from models.srcnn import SRCNN
from models.xiang_pet import AutoContextCNN
from tests.helpers import PAPER_MODELS, paper_size

PAPER_SIZES = {name: paper_size(name)[0] for name in PAPER_MODELS}


def test_every_paper_model_with_a_tiny_preset_is_checked():
    tiny = {n.removesuffix("_tiny") for n in models.list_models("*_tiny")}
    assert len(PAPER_SIZES) == 17 and set(PAPER_SIZES) <= tiny
    assert PAPER_SIZES["swinir"] == 11.4977 and PAPER_SIZES["xiang_pet"] == 0.2293


FLOOR_M = models.TINY_FLOOR / 1e6
UNDER_FLOOR = sorted(n for n, size in PAPER_SIZES.items() if size / models.TINY_DIVISOR < FLOOR_M)


WIDENED = sorted(n for n in PAPER_SIZES if models.model_info(f"{n}_tiny").widened)


@pytest.mark.parametrize("name", sorted(set(PAPER_SIZES) - set(UNDER_FLOOR) - set(WIDENED)))
def test_tiny_preset_is_the_paper_size_over_the_common_divisor(name):
    target = PAPER_SIZES[name] / models.TINY_DIVISOR
    tiny = count_params(models.create_model(f"{name}_tiny"), deploy=True)
    assert 0.7 <= tiny / target <= 1.3, f"{name}_tiny has {tiny:.5f} M; the rule asks {target:.5f} M +-30%"
    assert not models.model_info(f"{name}_tiny").floored


# the rule's widths, which were measured not to learn at smoke scale (docs/calibration.md)
RULE_WIDTHS = {"redcnn": {"features": 8}, "ctformer": {"token_dim": 2}, "drmc": {"blocks": 2, "features": 8}}


def test_only_presets_measured_too_narrow_are_widened_and_the_rule_would_have_kept_them():
    assert WIDENED == sorted(RULE_WIDTHS)
    for name, widths in RULE_WIDTHS.items():
        target = PAPER_SIZES[name] / models.TINY_DIVISOR
        rule = count_params(models.create_model(f"{name}_tiny", **widths), deploy=True)
        widened = count_params(models.create_model(f"{name}_tiny"), deploy=True)
        assert 0.7 <= rule / target <= 1.3 < widened / target       # the rule's preset, and wider than it
        info = models.model_info(f"{name}_tiny")
        assert not info.floored and f"({round(widened * 1e6):,} parameters)" in info.widened


def _layers(model) -> list[str]:
    """The model's layer structure: the class of every module, in order (widths aside)."""
    return [type(m).__name__ for m in model.modules()]


def _trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _scaled(widths: dict, s: float, multiples: dict) -> dict:
    def one(value, key):
        step = multiples.get(key, 1)
        return max(step, round(value * s / step) * step)
    return {k: tuple(one(v, k) for v in value) if isinstance(value, tuple) else one(value, k)
            for k, value in widths.items()}


# each floored family's full-size widths (the constructor's defaults) and the multiples they keep
FULL_WIDTHS = {"srcnn": (SRCNN, {"features": (64, 32)}, {}),
               "xiang_pet": (AutoContextCNN, {"widths": (64, 64, 32)}, {}),
               "eformer": (Eformer, {"dim": 16, "edge_channels": 32, "head_dim": 16}, {"edge_channels": 4})}


def test_the_floor_applies_to_the_three_smallest_paper_models():
    assert UNDER_FLOOR == ["eformer", "srcnn", "xiang_pet"] and set(FULL_WIDTHS) == set(UNDER_FLOOR)


@pytest.mark.parametrize("name", UNDER_FLOOR)
def test_a_preset_under_the_floor_is_scaled_to_it_marked_and_keeps_its_layers(name):
    tiny, full = models.create_model(f"{name}_tiny"), models.create_model(name)
    assert models.model_info(f"{name}_tiny").floored
    assert _trainable(tiny) >= models.TINY_FLOOR
    assert _layers(tiny) == _layers(full)                        # the paper's depth and layer structure
    build, widths, multiples = FULL_WIDTHS[name]
    sizes = {}                                                   # every uniform scaling on a fine grid
    for step in range(1, 2001):
        try:
            sizes[step] = _trainable(build(**_scaled(widths, step / 2000, multiples)))
        except ValueError:                                       # e.g. widths that do not split into heads
            continue
    smallest = min(size for size in sizes.values() if size >= models.TINY_FLOOR)
    assert _trainable(tiny) == smallest, f"{name}_tiny has {_trainable(tiny)}; the smallest scaling at the floor has {smallest}"
