"""RWKV-IR against an independent float64 reading of its authors' module: a state dict in the
authors' key layout (``RWKVIRv4`` of YuzhenD/ReSyn, shift_pixel 0, no up-sampler), written out key by
key from their constructor, is converted, loaded strictly, and gives the output of a functional
forward that reads the authors' keys and computes the Bi-WKV as an O(T^2) sum."""
import math

import pytest
import torch
import torch.nn.functional as F

import models
from benchmark.measure import costs
from models.rwkv_ir import RWKVIR, convert_official_state_dict

DIM, DEPTHS, HIDDEN = 8, (2, 1), 2


def authors_state_dict(seed: int = 0) -> dict:
    """Every key of the authors' module for DIM, DEPTHS, HIDDEN (one channel), with random values."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g, dtype=torch.float64) * 0.3   # noqa: E731
    c, h = DIM, HIDDEN * DIM
    state = {"conv_first.weight": r(c, 1, 3, 3), "conv_first.bias": r(c), "patch_embed.norm.weight": 1 + r(c),
             "patch_embed.norm.bias": r(c), "norm.weight": 1 + r(c), "norm.bias": r(c),
             "conv_after_body.weight": r(c, c, 3, 3), "conv_after_body.bias": r(c),
             "conv_last.weight": r(1, c, 3, 3), "conv_last.bias": r(1)}
    for i, depth in enumerate(DEPTHS):
        state[f"layers.{i}.conv.weight"], state[f"layers.{i}.conv.bias"] = r(c, c, 3, 3), r(c)
        for j in range(depth):
            p = f"layers.{i}.residual_group.blocks.{j}.RWKV."
            norms = ("ln0", "ln1", "ln2") if i == 0 else ("ln1", "ln2")
            state.update({f"{p}{n}.{t}": (1 + r(c) if t == "weight" else r(c)) for n in norms for t in ("weight", "bias")})
            state.update({f"{p}gamma1": 1 + r(c), f"{p}gamma2": 1 + r(c)})
            state.update({f"{p}att.{n}": r(c) for n in ("spatial_decay", "spatial_decay_2", "spatial_first",
                                                         "spatial_second", "conv_scale")})
            state.update({f"{p}att.{n}.weight": r(c, c) for n in ("key", "value", "receptance", "output")})
            state.update({f"{p}att.conv1a3.0.weight": r(c, c, 1, 1), f"{p}att.conv1a3.0.bias": r(c),
                          f"{p}att.conv33.0.weight": r(c, 1, 3, 3),
                          f"{p}att.conv1b3.0.weight": r(c, c, 1, 1), f"{p}att.conv1b3.0.bias": r(c)})
            state.update({f"{p}ffn.key.weight": r(h, c), f"{p}ffn.value.weight": r(c, h),
                          f"{p}ffn.receptance.weight": r(c, c), f"{p}ffn.conv1x1.weight": r(c, 1, 1, 1),
                          f"{p}ffn.conv3x3.weight": r(c, 1, 3, 3), f"{p}ffn.conv5x5.weight": r(c, 1, 5, 5),
                          f"{p}ffn.alpha": r(4)})
    return state


def bi_wkv_oracle(w, u, k, v):
    """y_t = [sum_{i != t} e^{-(|t-i|-1) w + k_i} v_i + e^{u + k_t} v_t] / [same with v = 1], O(T^2)."""
    t = k.shape[1]
    distance = (torch.arange(t)[:, None] - torch.arange(t)[None, :]).abs().double()
    logits = -(distance[None, :, :, None] - 1) * w + k[:, None, :, :]           # (B, t, i, C)
    diagonal = torch.eye(t, dtype=torch.bool)[None, :, :, None]
    logits = torch.where(diagonal, u + k[:, None, :, :], logits)
    weights = torch.exp(logits)
    return (weights * v[:, None]).sum(2) / weights.sum(2)


def authors_forward(s: dict, x: torch.Tensor) -> torch.Tensor:
    """The authors' forward (upsampler '', one channel: mean 0, img_range 1), key by key."""
    conv = lambda t, name, **kw: F.conv2d(t, s[f"{name}.weight"], s.get(f"{name}.bias"), **kw)   # noqa: E731
    ln = lambda t, name: F.layer_norm(t, (DIM,), s[f"{name}.weight"], s[f"{name}.bias"])        # noqa: E731
    b, _, height, width = x.shape
    first = conv(x, "conv_first", padding=1)
    tokens = ln(first.flatten(2).transpose(1, 2), "patch_embed.norm")                        # (B, T, C)
    to_image = lambda t: t.transpose(1, 2).reshape(b, DIM, height, width)                   # noqa: E731
    to_tokens = lambda t: t.flatten(2).transpose(1, 2)                                      # noqa: E731
    for i, depth in enumerate(DEPTHS):
        group_in = tokens
        for j in range(depth):
            p = f"layers.{i}.residual_group.blocks.{j}.RWKV."
            if i == 0:
                tokens = ln(tokens, p + "ln0")
            # spatial mix
            a = ln(tokens, p + "ln1")
            image = to_image(a)
            d = F.gelu(F.instance_norm(conv(image, p + "att.conv1a3.0")))
            d = F.silu(F.instance_norm(conv(d, p + "att.conv33.0", padding=1, groups=DIM)))
            d = F.gelu(F.instance_norm(conv(d, p + "att.conv1b3.0")))
            d = to_tokens(d) * s[p + "att.conv_scale"]
            a = a + d
            k, v = a @ s[p + "att.key.weight"].T, a @ s[p + "att.value.weight"].T
            gate = torch.sigmoid(a @ s[p + "att.receptance.weight"].T)
            n = height * width
            w, u = s[p + "att.spatial_decay"] / n, s[p + "att.spatial_first"] / n
            if i % 2 == 0:
                y = bi_wkv_oracle(w, u, k, v)
            else:                                                       # 'b (h w) c -> b (w h) c' and back
                col = lambda t: t.reshape(b, height, width, DIM).transpose(1, 2).reshape(b, n, DIM)   # noqa: E731
                y = bi_wkv_oracle(w, u, col(k), col(v)).reshape(b, width, height, DIM).transpose(1, 2).reshape(b, n, DIM)
            att = (gate * y + d) @ s[p + "att.output.weight"].T
            tokens = s[p + "gamma1"] * tokens + att
            # channel mix
            m = to_image(ln(tokens, p + "ln2"))
            alpha = s[p + "ffn.alpha"]
            m = (alpha[0] * m + alpha[1] * F.conv2d(m, s[p + "ffn.conv1x1.weight"], groups=DIM)
                 + alpha[2] * F.conv2d(m, s[p + "ffn.conv3x3.weight"], padding=1, groups=DIM)
                 + alpha[3] * F.conv2d(m, s[p + "ffn.conv5x5.weight"], padding=2, groups=DIM))
            m = to_tokens(m)
            kv = torch.relu(m @ s[p + "ffn.key.weight"].T) ** 2 @ s[p + "ffn.value.weight"].T
            tokens = s[p + "gamma2"] * tokens + torch.sigmoid(m @ s[p + "ffn.receptance.weight"].T) * kv
        tokens = to_tokens(conv(to_image(tokens), f"layers.{i}.conv", padding=1)) + group_in
    body = to_image(ln(tokens, "norm"))
    return x + conv(conv(body, "conv_after_body", padding=1) + first, "conv_last", padding=1)


@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_authors_weights_give_the_authors_output(backend):
    state = authors_state_dict()
    model = RWKVIR(embed_dim=DIM, depths=DEPTHS, hidden_rate=HIDDEN).double()
    model.load_state_dict(convert_official_state_dict({"params_ema": state}), strict=True)
    model.set_backends(wkv=backend).eval()
    x = torch.rand(2, 1, 5, 7, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), authors_forward(state, x), rtol=1e-9, atol=1e-9)
    assert model.used_backends() == {"wkv": [backend]}


def test_the_scan_order_alternates_between_groups():
    """Groups 1, 3, ... scan the tokens column-major, groups 0, 2, ... row-major (the authors'
    ``layer_id % 2``); the output test above covers both orders on a non-square image."""
    model = RWKVIR(embed_dim=DIM, depths=(1, 1, 1), hidden_rate=HIDDEN)
    assert [g.blocks[0].att.column_major for g in model.groups] == [False, True, False]


def test_checkpoints_of_other_configurations_are_refused():
    state = {"layers.0.residual_group.blocks.0.RWKV.att.spatial_mix_k": torch.zeros(1, 1, DIM)}
    with pytest.raises(ValueError, match="shift_pixel > 0"):
        convert_official_state_dict(state)


def test_sizes():
    """Ours = the authors' count minus their unused spatial_decay_2 / spatial_second (2 x 192 per block,
    36 blocks); the tiny preset follows the tiny-size rule (paper count / TINY_DIVISOR, +-30%)."""
    full = costs.count_params(models.create_model("rwkv_ir"))
    assert round(full * 1e6) == 19_963_153 and round(full * 1e6) + 2 * 192 * 36 == 19_976_977
    assert 0.7 <= costs.count_params(models.create_model("rwkv_ir_tiny")) / (full / models.TINY_DIVISOR) <= 1.3
    assert math.isclose(costs.count_params(models.create_model("rwkv_ir"), True), full)


def _saved_bytes(model, x):
    """Bytes of the tensors autograd keeps for the backward pass of ``model(x)``, and the output."""
    total = [0]

    def pack(t):
        total[0] += t.numel() * t.element_size()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    return total[0], out


def test_checkpointed_blocks_give_the_same_gradients_and_keep_a_fraction_of_the_activations():
    """The full preset checkpoints its blocks (36 at full resolution: 1.2 MB of activations per
    pixel otherwise). Checkpointed, autograd keeps each block's input (one (B, H, W, C) tensor) instead
    of its ~45 intermediate tensors, and recomputes the same ops: identical outputs and gradients
    (bit for bit, on a CPU) with over 10x fewer saved bytes (measured: 20x for the tiny preset)."""
    torch.manual_seed(0)
    plain = models.create_model("rwkv_ir_tiny")
    lean = models.create_model("rwkv_ir_tiny", checkpoint_blocks=True)
    lean.load_state_dict(plain.state_dict())
    x = torch.randn(2, 1, 24, 24)
    kept_plain, out_plain = _saved_bytes(plain, x)
    kept_lean, out_lean = _saved_bytes(lean, x)
    assert torch.equal(out_plain, out_lean)
    out_plain.abs().mean().backward()
    out_lean.abs().mean().backward()
    for (name, p), q in zip(plain.named_parameters(), lean.parameters()):
        assert torch.equal(p.grad, q.grad), name
    assert kept_lean * 10 < kept_plain
    assert models.create_model("rwkv_ir").groups[0].checkpoint_blocks                     # the full preset
    assert not models.create_model("rwkv_ir_tiny").groups[0].checkpoint_blocks
    with torch.no_grad():                                                   # inference never checkpoints
        assert torch.equal(lean(x), plain(x))
