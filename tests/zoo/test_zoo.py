"""The baseline zoo: every preset restores same-size images and trains on CPU; every preset the
registry ties to a row of the paper's Tables 1-4 has that row's parameters and MACs (`paper`
convention at its ``paper_input``, 1x1x128x128 unless the paper measured another)."""
import pytest
import torch

import models
from benchmark.measure import costs
from tests.helpers import PAPER_MODELS, assert_trains_at, paper_size

SLOW_MACS = {"mambair", "airnet"}            # a minute or more of MAC counting on 2 cores
BASELINES = ["srcnn", "vdsr", "edsr", "redcnn", "restormer", "swinir", "xformer", "mambair"]
TINY = [f"{name}_tiny" for name in BASELINES]


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("size", [(13, 17), (9, 8), (32, 32)])
def test_tiny_presets_train_at_any_size(name, size):
    assert_trains_at(name, size)


def test_the_paper_presets_are_the_papers_models():
    assert sorted(PAPER_MODELS) == sorted(BASELINES + ["ctformer", "eformer", "dcnn_pet", "xiang_pet", "argan", "drmc",
                                                       "amir", "airnet", "restore_rwkv"])


# the paper's 27.9140 M for Restore-RWKV counts an unused kernel per block: tests/zoo/test_restore_rwkv.py
@pytest.mark.parametrize("name", [n for n in PAPER_MODELS if n != "restore_rwkv"])
def test_paper_presets_have_the_papers_parameters(name):
    """Exact to the paper's 4 decimals; within ``paper_tolerance`` for the models without official code
    (each model file says how it was sized)."""
    tolerance = models.model_info(name).paper_tolerance
    params = costs.count_params(models.create_model(name))
    if tolerance:
        assert params == pytest.approx(paper_size(name)[0], rel=tolerance)
    else:
        assert round(params, 4) == paper_size(name)[0]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_MACS else n
                                  for n in PAPER_MODELS])
def test_paper_presets_have_the_papers_macs(name):
    info = models.model_info(name)
    macs, _ = costs.count_macs(models.create_model(name), info.paper_input, "paper")
    if info.paper_tolerance:
        assert macs == pytest.approx(paper_size(name)[1], rel=info.paper_tolerance)
    else:
        assert round(macs, 4) == paper_size(name)[1]


@pytest.mark.parametrize("name", TINY)
def test_bad_input_is_named(name):
    model = models.create_model(name)
    with pytest.raises(ValueError, match="expects 1 input channel"):
        model(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="dtype"):
        model(torch.zeros(1, 1, 16, 16, dtype=torch.float64))


def test_every_baseline_is_registered():
    assert set(BASELINES) | set(TINY) <= set(models.list_models())


def test_swin_shifted_windows_mask_only_across_regions():
    from models.swinir import SwinLayer
    layer = SwinLayer(dim=4, heads=1, window=4, shift=2, mlp_ratio=1.0)
    mask = layer._mask(8, 8, 2, "cpu")                                   # 4 windows of 16 tokens
    assert mask.shape == (4, 16, 16)
    assert (mask[0] == 0).all()                                       # the top-left window is one region
    last = mask[3]                                                    # 4 regions of 2x2 tokens each
    assert (last == 0).sum() == 4 * 4 * 4 and set(last.unique().tolist()) == {-100.0, 0.0}
