"""The task-specific and all-in-one baselines (issue: baseline zoo part 2) built so far."""
import numpy as np
import pytest
import torch
from scipy import ndimage

import models
from tests.helpers import assert_trains_at

PART2 = ["drmc", "amir", "ctformer", "airnet", "dcnn_pet", "eformer", "xiang_pet", "argan"]
# (their parameters and MACs against the paper's rows: tests/zoo/test_zoo.py, over every paper preset)


@pytest.mark.parametrize("name", [f"{n}_tiny" for n in PART2])
@pytest.mark.parametrize("size", [(13, 17), (8, 9)])
def test_tiny_presets_train_at_any_size(name, size):
    assert_trains_at(name, size)


def test_dcnn_is_the_input_plus_a_residual():
    model = models.create_model("dcnn_pet_tiny")
    torch.nn.init.zeros_(model.tail.weight)
    torch.nn.init.zeros_(model.tail.bias)
    x = torch.rand(2, 1, 11, 13)
    assert torch.equal(model(x), x)


def test_drmc_routing_depends_on_the_input():
    """The expert weights come from the pooled features: two different images mix differently.
    (Seed 3: at some initialisations of the tiny preset every ReLU'd router weight is 0.)"""
    torch.manual_seed(3)
    model = models.create_model("drmc_tiny")
    bank = model.body[0].attention
    state = model.initial_state.expand(2, -1, -1, -1)
    features = model.head.out_channels
    weights, _ = bank.router(torch.stack([torch.zeros(features, 4, 4), torch.ones(features, 4, 4)]), state)
    assert weights.shape == (2, 2, 1, 1) and not torch.equal(weights[0], weights[1])


def test_amir_routes_pixels_to_two_experts_and_reports_the_balance_loss():
    torch.manual_seed(0)
    model = models.create_model("amir_tiny").eval()
    routing = model.routing["encoder1"]
    calls = []
    hooks = [e.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0])) for e in routing.experts]
    with torch.no_grad():
        model(torch.rand(1, 1, 16, 16))
    for h in hooks:
        h.remove()
    assert sum(calls) == 2 * 16 * 16                                   # top-2 of 4 experts per pixel
    assert model.aux_loss is not None and torch.isfinite(model.aux_loss)


def test_ctformer_works_on_64x64_tiles():
    """A 128x128 image is 2x2 tiles; each tile is restored on its own. In float64, so that the
    comparison holds on any CPU: a batch of four tiles and a single tile take different GEMM
    blockings (in float32 they differ by ~2e-5 on some CPUs), whose rounding stays within
    ~1,000 float64 epsilons of the output's magnitude; a tile that saw its neighbours would differ
    by orders of magnitude more, and changing another tile must leave this one unchanged."""
    torch.manual_seed(0)
    model = models.create_model("ctformer_tiny").eval().double()
    x = torch.rand(1, 1, 128, 128, dtype=torch.float64)
    other = x.clone()
    other[:, :, 64:, 64:] += 1.0                                           # another tile changed
    with torch.no_grad():
        whole, changed = model(x), model(other)
        corner = model(x[:, :, :64, :64].contiguous())
    rounding = 1024 * torch.finfo(torch.float64).eps * whole.abs().max().item()
    torch.testing.assert_close(whole[:, :, :64, :64], corner, rtol=0, atol=rounding)
    torch.testing.assert_close(changed[:, :, :64, :64], whole[:, :, :64, :64], rtol=0, atol=rounding)


def test_ctformer_starts_from_the_authors_initialisation():
    """As in the authors' code: linear weights from N(0, 0.02) truncated at +-2, zero biases, unit
    LayerNorms, the class token from N(0, 0.02). The pooled weights' standard deviation is checked
    within 5 standard errors of a sample SD (0.02 / sqrt(2n)); PyTorch's default (uniform of bound
    1 / sqrt(fan_in), SD 0.02 only for a fan-in of 833) would be far outside at every layer."""
    torch.manual_seed(0)
    model = models.create_model("ctformer")
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    for layer in linears:
        assert layer.bias is None or torch.count_nonzero(layer.bias) == 0
        n = layer.weight.numel()
        assert abs(layer.weight.std().item() - 0.02) < 5 * 0.02 / (2 * n) ** 0.5, (layer, layer.weight.std())
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(bool((m.weight == 1).all() and (m.bias == 0).all()) for m in norms)
    assert abs(model.cls_token.std().item() - 0.02) < 5 * 0.02 / (2 * model.cls_token.numel()) ** 0.5


def test_airnet_contrastive_step_updates_keys_and_queue():
    torch.manual_seed(0)
    model = models.create_model("airnet_tiny")
    before = [p.clone() for p in model.key_encoder.parameters()]
    with torch.no_grad():                                               # make the query encoder differ
        for p in model.encoder.parameters():
            p.add_(1.0)
    query, key = torch.rand(4, 1, 16, 16), torch.rand(4, 1, 16, 16)
    logits = model.contrastive_logits(query, key)
    assert logits.shape == (4, 1 + 16) and int(model.queue_ptr) == 4
    loss = torch.nn.functional.cross_entropy(logits, torch.zeros(4, dtype=torch.long))
    loss.backward()
    assert all(p.grad is None for p in model.key_encoder.parameters())          # momentum, not gradients
    moved = [not torch.equal(a, b) for a, b in zip(before, model.key_encoder.parameters())]
    assert all(moved)


def test_every_part2_model_is_listed():
    assert {"ctformer", "eformer", "airnet", "drmc", "amir", "xiang_pet", "dcnn_pet", "argan"} <= set(models.list_models())


def test_eformer_sobel_maps_are_the_four_sobel_feldman_gradients():
    """At its initial scale 1 and bias 0, the learnable Sobel layer is scipy's correlation with the
    horizontal, vertical and two diagonal Sobel-Feldman kernels (edges replicated)."""
    from models.eformer import LearnableSobel
    image = np.random.default_rng(0).random((11, 14))
    kernels = [np.array(k, dtype=float) for k in (
        [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], [[-1, -2, -1], [0, 0, 0], [1, 2, 1]],
        [[-2, -1, 0], [-1, 0, 1], [0, 1, 2]], [[0, 1, 2], [-1, 0, 1], [-2, -1, 0]])]
    layer = LearnableSobel(1, 8).double()
    with torch.no_grad():
        maps = layer(torch.from_numpy(image)[None, None])[0].numpy()
    for channel in range(8):                                # the directions repeat every 4 maps
        expected = ndimage.correlate(image, kernels[channel % 4], mode="nearest")
        np.testing.assert_allclose(maps[channel], expected, rtol=0, atol=1e-12)
    with torch.no_grad():
        layer.scale[2].fill_(-0.5)
        layer.bias[2].fill_(0.25)
        scaled = layer(torch.from_numpy(image)[None, None])[0, 2].numpy()
    np.testing.assert_allclose(scaled, -0.5 * ndimage.correlate(image, kernels[2], mode="nearest") + 0.25, atol=1e-12)


def test_eformer_subtracts_the_estimated_noise():
    model = models.create_model("eformer_tiny")
    torch.nn.init.zeros_(model.output_proj.weight)
    torch.nn.init.constant_(model.output_proj.bias, 0.125)
    x = torch.rand(2, 1, 13, 9)
    torch.testing.assert_close(model(x), x - 0.125)


def test_xiang_parameters_by_hand():
    """Four modules of 3x3 convs 64-64-32-1 with biases and BatchNorm; modules 2-4 see two channels."""
    def module(inputs):
        convs = 9 * (inputs * 64 + 64 * 64 + 64 * 32 + 32 * 1) + (64 + 64 + 32 + 1)
        return convs + 2 * (64 + 64 + 32)                                   # BatchNorm weight and bias
    assert sum(p.numel() for p in models.create_model("xiang_pet").parameters()) == module(1) + 3 * module(2)


def test_xiang_later_modules_refine_the_previous_estimate():
    """Auto-context: module k sees [low-dose image, estimate of module k-1], so a change in the first
    module's output reaches the final estimate, and the last module alone sees the image too."""
    torch.manual_seed(0)
    model = models.create_model("xiang_pet_tiny").eval()
    x = torch.rand(1, 1, 12, 12)
    with torch.no_grad():
        estimate = model.stages[0](x)
        for stage in model.stages[1:]:
            estimate = stage(torch.cat([x, estimate], 1))
        torch.testing.assert_close(model(x), estimate)
        before = model(x)
        model.stages[0][-1].bias.add_(1.0)                                   # move the first estimate
        assert not torch.allclose(model(x), before)


def test_argan_adds_the_rectified_residual_to_the_preliminary_estimate():
    torch.manual_seed(0)
    model = models.create_model("argan_tiny").eval()
    x = torch.rand(1, 1, 32, 64)                                             # a multiple of 2^5: no padding
    with torch.no_grad():
        preliminary = model.generator(x)
        residual = model.rectifier(torch.cat([x, preliminary], 1))
        torch.testing.assert_close(model(x), preliminary + residual)
        torch.nn.init.zeros_(model.rectifier.out.weight)
        torch.nn.init.zeros_(model.rectifier.out.bias)
        torch.testing.assert_close(model(x), preliminary)


@pytest.mark.parametrize("name", ["eformer", "xiang_pet", "argan"])
def test_full_presets_without_official_code_keep_odd_sizes(name):
    """The paper-size models pad internally (Eformer to 32, ARGAN to 128) and crop back."""
    model = models.create_model(name).eval()
    x = torch.rand(1, 1, 37, 29)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
