"""Restore-RWKV: sizes against the paper, every ablation option, re-parameterization, inputs."""
import itertools
import os

import pytest
import torch
import torch.nn.functional as F

import models
from models.layers import OmniShift, QuadShift, SpatialMix, UniShift, plan_scans
from models.restore_rwkv import RestoreRWKV, convert_official_state_dict
from models.ops.wkv.reference import oracle
from tests.helpers import float64_spread

if not os.environ.get("MEDIR_TEST_THREADS"):      # (tests/conftest.py: a session's thread count)
    torch.set_num_threads(2)


def n_params(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def expected_deploy_params(dim, blocks, refinement, hidden_ratio):
    """Closed form from the paper's architecture description (Sec. 3.1-3.4, deploy form).

    Block at C channels: 2 LayerNorms (4C), spatial mix 4 C x C projections, Omni-Shift 5x5 (25C),
    w and u for M=2 passes (4C); channel mix Omni-Shift (25C), key/value C x rC each, receptance
    C x C; two residual scales (2C).
    """
    n1, n2, n3, n4 = blocks
    block = lambda c: 4 * c + 4 * c * c + 25 * c + 4 * c + 25 * c + 2 * int(hidden_ratio * c) * c + c * c + 2 * c
    blocks_total = (n1 * block(dim) + (2 * n2 + n1 + refinement) * block(2 * dim)
                    + 2 * n3 * block(4 * dim) + n4 * block(8 * dim))
    conv3 = lambda cin, cout: 9 * cin * cout
    others = (conv3(1, dim) + dim + conv3(2 * dim, 1) + 1                         # in / out projections
              + conv3(dim, dim // 2) + conv3(2 * dim, dim) + conv3(4 * dim, 2 * dim)    # downs
              + conv3(8 * dim, 16 * dim) + conv3(4 * dim, 8 * dim) + conv3(2 * dim, 4 * dim)  # ups
              + 8 * dim * 4 * dim + 4 * dim + 4 * dim * 2 * dim + 2 * dim)           # 1x1 reductions
    return blocks_total + others


def test_paper_parameter_count():
    model = models.create_model("restore_rwkv").reparameterize()
    assert n_params(model) == 27_846_625 == expected_deploy_params(48, (4, 6, 6, 8), 4, 4)
    # The paper's 27.9140M adds one unused 3x3 depth-wise kernel per block (9 x channel sum).
    channel_sum = 4 * 48 + (6 + 6 + 4 + 4) * 96 + 12 * 192 + 8 * 384
    assert channel_sum == 7_488
    assert round((n_params(model) + 9 * channel_sum) / 1e6, 4) == 27.9140


def test_light_and_tiny_sizes():
    light = models.create_model("restore_rwkv_light").reparameterize()
    assert n_params(light) == 1_144_129 == expected_deploy_params(12, (4, 6, 6, 8), 4, 1)
    assert round((n_params(light) + 9 * 7_488 // 4) / 1e6, 2) == 1.16     # the abstract's 1.16M
    tiny = models.create_model("restore_rwkv_tiny").reparameterize()
    assert n_params(tiny) == expected_deploy_params(8, (1, 1, 1, 1), 1, 2)


def assert_trains(model, shape=(2, 1, 16, 16)):
    x = torch.randn(*shape)
    y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    (y - x).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"parameters without gradient: {missing[:5]}"


VARIANTS = (
    [dict(wkv=w, shift=s) for w, s in itertools.product(("uni", "bi", "re"), ("uni", "quad", "omni"))]
    + [dict(recurrence=m) for m in (1, 3, 4)]
    + [dict(wkv="bi", first_scan="v"), dict(recurrence=1, first_scan="v")]
    + [dict(scan="alternate"), dict(scan="sum")]
    + [dict(shift_kernel=k) for k in (1, 3, 7, 9)]
    + [dict(reparam=False), dict(shift_kernel=3, reparam=False)]
)


@pytest.mark.parametrize("options", VARIANTS, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_every_variant_trains(options):
    torch.manual_seed(0)
    assert_trains(models.create_model("restore_rwkv_tiny", num_blocks=(2, 1, 1, 1), **options))


@pytest.mark.parametrize("name", models.list_models("restore_rwkv*"))
def test_every_preset_trains(name):
    torch.manual_seed(0)
    assert_trains(models.create_model(name), shape=(1, 1, 16, 16))  # latent level 2 x 2


@pytest.mark.parametrize("kernel", [1, 3, 5, 7, 9])
def test_reparameterize_keeps_outputs(kernel):
    torch.manual_seed(kernel)
    model = models.create_model("restore_rwkv_tiny", shift_kernel=kernel).eval()
    x = torch.randn(2, 1, 24, 24)
    # branches removed by folding: the smaller kernels (C * s^2 each) and the alphas (one per branch + identity)
    removed = sum(m.branches[0].weight.shape[0] * sum(s * s for s in range(1, kernel, 2)) + len(m.alpha)
                  for m in model.modules() if isinstance(m, OmniShift))
    spread = float64_spread(model, x)            # the float32 error of this model's outputs, here
    with torch.no_grad():
        before = model(x)
        trained = n_params(model)
        model.reparameterize()
        after = model(x)
    assert (after - before).abs().max() <= spread
    assert trained - n_params(model) == removed
    model.reparameterize()                                        # idempotent
    torch.testing.assert_close(model(x), after)


def test_eval_forward_has_no_side_effects():
    model = models.create_model("restore_rwkv_tiny").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model(torch.randn(1, 1, 16, 16))
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_omni_shift_fused_kernel_matches_branches_by_hand():
    """Eq. 11 for k=3: alpha0 * x + alpha1 * conv1x1 + alpha2 * conv3x3 == one 3x3 kernel."""
    shift = OmniShift(dim=2, kernel=3)
    with torch.no_grad():
        shift.alpha.copy_(torch.tensor([0.5, 2.0, -1.0]))
        shift.branches[0].weight.fill_(3.0)
        shift.branches[1].weight.copy_(torch.arange(18.0).reshape(2, 1, 3, 3))
    expected = -torch.arange(18.0).reshape(2, 1, 3, 3)
    expected[:, :, 1, 1] += 0.5 + 2.0 * 3.0
    torch.testing.assert_close(shift.fused_weight(), expected)


def test_omni_shift_training_form_equals_the_branch_sum():
    """The training form runs one conv with the fused kernel; its output and the gradients of every
    branch and alpha must equal Eq. 11 evaluated branch by branch."""
    torch.manual_seed(0)
    shift = OmniShift(dim=3, kernel=5).double()
    x = torch.randn(2, 7, 9, 3, dtype=torch.float64)               # (B, H, W, C)
    image = x.permute(0, 3, 1, 2)
    by_branch = shift.alpha[0] * image + sum(a * conv(image) for a, conv in zip(shift.alpha[1:], shift.branches))
    gy = torch.randn_like(by_branch)
    expected = torch.autograd.grad((by_branch * gy).sum(), list(shift.parameters()))
    out = shift(x)[0].permute(0, 3, 1, 2)
    torch.testing.assert_close(out, by_branch, rtol=1e-12, atol=1e-12)
    got = torch.autograd.grad((out * gy).sum(), list(shift.parameters()))
    for (name, _), a, b in zip(shift.named_parameters(), got, expected):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)


@pytest.mark.parametrize("size", [(13, 21), (8, 8), (1, 1), (5, 3), (31, 9)])
def test_any_image_size(size):
    model = models.create_model("restore_rwkv_tiny").eval()
    x = torch.randn(1, 1, *size)
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_padding_is_reflect_then_crop():
    model = models.create_model("restore_rwkv_tiny").eval()
    x = torch.randn(1, 1, 13, 21)
    padded = F.pad(x, (0, 3, 0, 3), mode="reflect")                 # to 16 x 24
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(padded)[:, :, :13, :21])


def test_bad_inputs_raise_clear_errors():
    model = models.create_model("restore_rwkv_tiny")
    with pytest.raises(ValueError, match=r"shape \(B, 1, H, W\); got \(1, 16, 16\)"):
        model(torch.randn(1, 16, 16))
    with pytest.raises(ValueError, match=r"1 input channel\(s\)"):
        model(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match="model's dtype torch.float32; got torch.float64"):
        model(torch.randn(1, 1, 16, 16, dtype=torch.float64))
    with pytest.raises(ValueError, match="got torch.int64"):
        model(torch.ones(1, 1, 16, 16, dtype=torch.long))


@pytest.mark.parametrize("options,message", [
    (dict(shift="omin"), "unknown shift 'omin'; expected one of uni, quad, omni"),
    (dict(wkv="tri"), "unknown wkv 'tri'; expected one of uni, bi, re"),
    (dict(scan="zigzag"), "unknown scan 'zigzag'; expected one of recurrent, alternate, sum"),
    (dict(first_scan="d"), "unknown first_scan 'd'; expected one of h, v"),
    (dict(shift_kernel=4), "unknown shift_kernel 4; expected one of 1, 3, 5, 7, 9"),
    (dict(recurrence=0), "recurrence must be an integer M >= 1; got 0"),
    (dict(wkv="bi", recurrence=2), "wkv='bi' makes one pass"),
    (dict(wkv="bi", scan="sum"), "scan='sum' applies to wkv='re' only"),
    (dict(scan="alternate", recurrence=3), "recurrence=3 applies to scan='recurrent'"),
    (dict(wkv="uni", first_scan="v"), "wkv='uni' scans the H-scan sequence only"),
    (dict(shift="quad", shift_kernel=3), "apply to shift='omni' only"),
    (dict(dim=7), "dim must be a positive even number"),
    (dict(num_blocks=(1, 1, 1)), "num_blocks must be 4 positive counts"),
])
def test_unknown_options_list_the_valid_values(options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        models.create_model("restore_rwkv_tiny", **options)


def test_scan_plans():
    assert plan_scans("re", None, "recurrent", "h", 0).directions == ("h", "v")
    assert plan_scans("re", 3, "recurrent", "h", 0).directions == ("h", "v", "h")
    assert plan_scans("re", 1, "recurrent", "v", 0).directions == ("v",)
    assert [plan_scans("re", None, "alternate", "h", i).directions for i in range(3)] == [("h",), ("v",), ("h",)]
    summed = plan_scans("re", None, "sum", "h", 0)
    assert summed.directions == ("h", "v") and summed.summed
    assert plan_scans("uni", None, "recurrent", "h", 0).causal


def _spatial_mix_projections(mix, x):
    xk, xv, xr = mix.shift(x)
    return mix.key(xk), mix.value(xv), mix.receptance(xr)


@pytest.mark.parametrize("directions,summed", [(("h", "v", "h"), False), (("v",), False), (("h", "v"), True)])
def test_re_wkv_against_oracle(directions, summed):
    """Eq. 9-10 with the O(T^2) oracle: each pass scans the image in its direction with w/T, u/T."""
    from models.layers.spatial_mix import ScanPlan
    torch.manual_seed(1)
    H, W, C = 5, 7, 4
    mix = SpatialMix(C, ScanPlan(directions, summed=summed)).double()
    x = torch.randn(2, H, W, C, dtype=torch.float64)
    k, v, r = _spatial_mix_projections(mix, x)

    def one_pass(j, direction, values):
        kk, vv = (t.transpose(1, 2) if direction == "v" else t for t in (k, values))
        shape = kk.shape
        out = oracle(mix.decay[j] / (H * W), mix.bonus[j] / (H * W), kk.reshape(2, H * W, C),
                     vv.reshape(2, H * W, C), causal=False).reshape(shape)
        return out.transpose(1, 2) if direction == "v" else out

    if summed:
        wkv = sum(one_pass(j, d, v) for j, d in enumerate(directions))
    else:
        wkv = v
        for j, d in enumerate(directions):
            wkv = one_pass(j, d, wkv)
    expected = mix.output(torch.sigmoid(r) * wkv)
    torch.testing.assert_close(mix(x), expected, rtol=1e-10, atol=1e-10)


def test_uni_shift_takes_the_previous_row_major_token():
    shift = UniShift(dim=1, n_out=1)
    with torch.no_grad():
        shift.mix.zero_()                                           # output = the neighbour alone
    x = torch.arange(6.0).reshape(1, 2, 3, 1)                       # [[0, 1, 2], [3, 4, 5]]
    (y,) = shift(x)
    assert y.flatten().tolist() == [0.0, 0.0, 1.0, 2.0, 3.0, 4.0]


def test_quad_shift_takes_a_quarter_from_each_neighbour():
    shift = QuadShift(dim=4, n_out=1)
    with torch.no_grad():
        shift.mix.zero_()
    grid = torch.arange(9.0).reshape(3, 3)                          # [[0,1,2],[3,4,5],[6,7,8]]
    x = grid[None, :, :, None].repeat(1, 1, 1, 4)
    (y,) = shift(x)
    centre = y[0, 1, 1]
    assert centre.tolist() == [3.0, 5.0, 1.0, 7.0]                  # left, right, above, below of 4
    assert y[0, 0, 0].tolist() == [0.0, 1.0, 0.0, 3.0]              # zeros across the border


# --- the authors' checkpoints ---------------------------------------------------------------------

def official_key(ours: str) -> str:
    """Our key -> the key of the authors' Restore_RWKV, written out independently of the converter."""
    stage_names = {"encoder1": "encoder_level1", "encoder2": "encoder_level2", "encoder3": "encoder_level3",
                   "decoder1": "decoder_level1", "decoder2": "decoder_level2", "decoder3": "decoder_level3",
                   "latent": "latent", "refinement": "refinement"}
    resamplers = {"down1": "down1_2", "down2": "down2_3", "down3": "down3_4",
                  "up3": "up4_3", "up2": "up3_2", "up1": "up2_1"}
    parts = ours.split(".")
    if parts[0] in resamplers:
        return f"{resamplers[parts[0]]}.body.0.{parts[-1]}"
    if parts[0] in ("reduce3", "reduce2"):
        return f"reduce_chan_level{parts[0][-1]}.{parts[-1]}"
    if parts[0] not in stage_names:
        return ours
    inner = ".".join(parts[2:])
    for a, b in [("norm1", "ln1"), ("norm2", "ln2"), ("spatial_mix.", "att."), ("channel_mix.", "ffn."),
                 ("att.decay", "att.spatial_decay"), ("att.bonus", "att.spatial_first"),
                 ("shift.branches.0.", "omni_shift.conv1x1."), ("shift.branches.1.", "omni_shift.conv3x3."),
                 ("shift.branches.2.", "omni_shift.conv5x5."), ("shift.alpha", "omni_shift.alpha"),
                 ("shift.conv.", "omni_shift.conv5x5_reparam.")]:
        inner = inner.replace(a, b)
    return f"{stage_names[parts[0]]}.{parts[1]}.{inner}"


def test_convert_official_training_checkpoint():
    ours = RestoreRWKV(dim=8, num_blocks=(1, 2, 1, 1), num_refinement_blocks=1)
    official = {official_key(k): v.clone() for k, v in ours.state_dict().items()}
    for key in [k for k in official if k.endswith("att.spatial_decay")]:
        prefix = key.removesuffix("spatial_decay")
        c = official[key].shape[1]
        official[prefix + "dwconv.weight"] = torch.randn(c, 1, 3, 3)           # older code version
        official[prefix + "omni_shift.conv5x5_reparam.weight"] = torch.randn(c, 1, 5, 5)  # stale buffer
    official = {"module." + k: v for k, v in official.items()}                  # saved from DataParallel
    fresh = RestoreRWKV(dim=8, num_blocks=(1, 2, 1, 1), num_refinement_blocks=1)
    fresh.load_state_dict(convert_official_state_dict(official), strict=True)
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), ours(x), rtol=0, atol=0)


def test_convert_official_deploy_checkpoint():
    ours = RestoreRWKV(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1).reparameterize()
    official = {official_key(k): v for k, v in ours.state_dict().items()}
    assert any(k.endswith("omni_shift.conv5x5_reparam.weight") for k in official)
    fresh = RestoreRWKV(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1).reparameterize()
    fresh.load_state_dict(convert_official_state_dict(official), strict=True)
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), ours(x), rtol=0, atol=0)


def test_convert_rejects_foreign_keys():
    with pytest.raises(ValueError, match="not from the authors' Restore_RWKV"):
        convert_official_state_dict({"backbone.layer1.weight": torch.zeros(1)})


def test_the_converter_is_registered_and_the_loading_path_finds_it(tmp_path):
    """``models.load_checkpoint(name, file, official=True)`` reads the file safely, maps the authors'
    keys with the converter registered with the preset and loads strictly; a model registered without
    a converter says so."""
    assert models.model_info("restore_rwkv_tiny").converter is convert_official_state_dict
    torch.manual_seed(0)
    ours = models.create_model("restore_rwkv_tiny")
    path = tmp_path / "official.pth"
    torch.save({"module." + official_key(k): v for k, v in ours.state_dict().items()}, path)
    loaded = models.load_checkpoint("restore_rwkv_tiny", path, official=True)
    x = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ours(x), rtol=0, atol=0)
    with pytest.raises(RuntimeError, match="Missing key"):                    # without the converter: not our keys
        models.load_checkpoint("restore_rwkv_tiny", path)
    torch.save(ours.state_dict(), tmp_path / "ours.pth")
    models.load_checkpoint("restore_rwkv_tiny", tmp_path / "ours.pth")      # our own keys load as they are
    with pytest.raises(ValueError, match="srcnn_tiny: no checkpoint converter is registered"):
        models.load_checkpoint("srcnn_tiny", models.create_model("srcnn_tiny").state_dict(), official=True)


def test_alternating_scan_is_the_h_scan_network_in_the_tiny_preset_only():
    """Table 7's "Alternating between Blocks" alternates the scan direction between the blocks of a
    stage: the tiny preset has one block per stage, so it builds Table 6's M=1 (H-Scan) network
    (same modules, scan plans and parameter shapes); the full model (4-8 blocks per stage) does not.
    Sum and recurrence never do, and the signature ignores the weights' values."""
    def signature(preset, **options):
        return models.network_signature(models.create_model(preset, **options))
    tiny_alternate = signature("restore_rwkv_tiny", scan="alternate")
    assert tiny_alternate == signature("restore_rwkv_tiny", wkv="re", recurrence=1, first_scan="h")
    assert tiny_alternate != signature("restore_rwkv_tiny", wkv="re", recurrence=1, first_scan="v")
    assert tiny_alternate != signature("restore_rwkv_tiny", scan="sum")
    assert tiny_alternate != signature("restore_rwkv_tiny", scan="recurrent")
    assert signature("restore_rwkv", scan="alternate") != signature("restore_rwkv", wkv="re", recurrence=1, first_scan="h")
    torch.manual_seed(1)
    assert signature("restore_rwkv_tiny") == signature("restore_rwkv_tiny")
    # re-parameterization changes the training network (its branches' parameters), not the name alone
    assert signature("restore_rwkv_tiny", reparam=False) != signature("restore_rwkv_tiny")
