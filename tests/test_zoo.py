"""The baseline zoo: every preset restores same-size images and trains on CPU; the paper presets
have the paper's parameters and MACs (Tables 1-2, `paper` convention at 1x1x128x128)."""
import pytest
import torch

import models
from benchmark import check_model, profile

# name: (parameters in M, MACs in G), as printed in the paper's tables (mambair's MAC count runs its
# PyTorch scan at 128x128, about a minute on 2 cores: checked in the slow test below)
PAPER = {"srcnn": (0.0573, 0.9369), "vdsr": (0.6647, 10.8905), "edsr": (38.3432, 628.2145),
         "redcnn": (1.8489, 24.9226), "restormer": (26.1241, 35.2052), "swinir": (11.4977, 187.9274),
         "xformer": (25.2197, 35.7291),
         "mambair": (31.5035, 34.3491)}
TINY = [f"{name}_tiny" for name in PAPER]


def assert_trains_at(name, size):
    """One L1 training step of ``name`` on a (2, 1, *size) batch plus the model's own auxiliary loss
    (``benchmark.check_model.check_gradients``): same-shape finite output, and a finite gradient for
    every trainable parameter."""
    torch.manual_seed(0)
    check_model.check_gradients(models.create_model(name), size)     # raises CheckFailed with the reason


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize("size", [(13, 17), (9, 8), (32, 32)])
def test_tiny_presets_train_at_any_size(name, size):
    assert_trains_at(name, size)


@pytest.mark.parametrize("name", sorted(PAPER))
def test_paper_presets_have_the_papers_parameters(name):
    assert round(profile.count_params(models.create_model(name)), 4) == PAPER[name][0]


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n == "mambair" else n
                                  for n in sorted(PAPER)])
def test_paper_presets_have_the_papers_macs(name):
    macs, _ = profile.count_macs(models.create_model(name), (1, 1, 128, 128), "paper")
    assert round(macs, 4) == PAPER[name][1]


@pytest.mark.parametrize("name", TINY)
def test_bad_input_is_named(name):
    model = models.create_model(name)
    with pytest.raises(ValueError, match="expects 1 input channel"):
        model(torch.zeros(1, 3, 16, 16))
    with pytest.raises(ValueError, match="dtype"):
        model(torch.zeros(1, 1, 16, 16, dtype=torch.float64))


def test_every_baseline_is_registered():
    assert set(PAPER) | set(TINY) <= set(models.list_models())


def test_swin_shifted_windows_mask_only_across_regions():
    from models.swinir import SwinLayer
    layer = SwinLayer(dim=4, heads=1, window=4, shift=2, mlp_ratio=1.0)
    mask = layer._mask(8, 8, 2, "cpu")                                   # 4 windows of 16 tokens
    assert mask.shape == (4, 16, 16)
    assert (mask[0] == 0).all()                                       # the top-left window is one region
    last = mask[3]                                                    # 4 regions of 2x2 tokens each
    assert (last == 0).sum() == 4 * 4 * 4 and set(last.unique().tolist()) == {-100.0, 0.0}
