"""WKV ops against a float64 O(T^2) oracle that evaluates Eq. 8 / RWKV's formula literally."""
import pytest
import torch

from models.ops.wkv import bi_wkv, uni_wkv
from models.ops.wkv.reference import oracle, oracle_with_grad

from tests.helpers import eps, random_inputs, rounding_bound, wkv_depth


OPS = [(bi_wkv, False), (uni_wkv, True)]


@pytest.mark.parametrize("op,causal", OPS, ids=["bi", "uni"])
@pytest.mark.parametrize("T", [1, 2, 37, 300])
@pytest.mark.parametrize("k_scale", [1.0, 60.0], ids=["k1", "k60"])
def test_forward_matches_oracle_float32(op, causal, T, k_scale):
    w, u, k, v = random_inputs(2, T, 5, k_scale=k_scale, seed=T)
    y = op(w, u, k, v)
    assert y.dtype == torch.float32 and y.shape == (2, T, 5)
    assert torch.isfinite(y).all()
    expected = oracle(w, u, k, v, causal)
    # float32 inputs: the output is a convex combination of v, so the error scales with max |v|.
    atol = rounding_bound(torch.float32, wkv_depth(w, k, T), v.abs().max())
    torch.testing.assert_close(y.double(), expected, rtol=0, atol=atol)


@pytest.mark.parametrize("op,causal", OPS, ids=["bi", "uni"])
def test_forward_matches_oracle_float64(op, causal):
    w, u, k, v = random_inputs(3, 129, 4, k_scale=60.0, dtype=torch.float64)
    torch.testing.assert_close(op(w, u, k, v), oracle(w, u, k, v, causal), rtol=0, atol=1e-12)


@pytest.mark.parametrize("op,causal", OPS, ids=["bi", "uni"])
def test_extreme_inputs_stay_finite(op, causal):
    """|k| = 60 everywhere, signs arranged so that the maximum sits late (the causal worst case)."""
    T, C = 256, 6
    k = torch.full((1, T, C), -60.0)
    k[:, T // 2:] = 60.0
    v = torch.randn(1, T, C)
    for span in (-20.0, 20.0):
        w = torch.full((C,), span / T)
        u = torch.full((C,), -span / T)
        y = op(w, u, k, v)
        assert torch.isfinite(y).all()
        atol = rounding_bound(torch.float32, wkv_depth(w, k, T), v.abs().max())
        torch.testing.assert_close(y.double(), oracle(w, u, k, v, causal), rtol=0, atol=atol)


@pytest.mark.parametrize("op,causal", OPS, ids=["bi", "uni"])
@pytest.mark.parametrize("k_scale", [1.0, 30.0], ids=["k1", "k30"])
def test_gradients_match_oracle(op, causal, k_scale):
    inputs = random_inputs(2, 23, 3, k_scale=k_scale, dtype=torch.float64, seed=7)
    ours = [t.clone().requires_grad_() for t in inputs]
    ref = [t.clone().requires_grad_() for t in inputs]
    gy = torch.randn(2, 23, 3, dtype=torch.float64)
    (op(*ours) * gy).sum().backward()
    (oracle_with_grad(*ref, causal) * gy).sum().backward()
    for name, a, b in zip("wukv", ours, ref):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=1e-11, msg=f"gradient of {name}")


@pytest.mark.parametrize("op,causal", OPS, ids=["bi", "uni"])
def test_float32_gradients_close_to_oracle(op, causal):
    inputs = random_inputs(2, 300, 4, k_scale=5.0, seed=3)
    ours = [t.clone().requires_grad_() for t in inputs]
    ref = [t.double().requires_grad_() for t in inputs]
    gy = torch.randn(2, 300, 4)
    (op(*ours) * gy).sum().backward()
    (oracle_with_grad(*ref, causal) * gy.double()).sum().backward()
    depth = wkv_depth(inputs[0], inputs[2], 300, gradient=True)
    for name, a, b in zip("wukv", ours, ref):
        atol = rounding_bound(torch.float32, depth, b.grad.abs().max())
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=0, atol=atol, msg=f"gradient of {name}")


def test_uni_wkv_is_causal():
    """d y_t / d k_i and d y_t / d v_i are exactly zero for every i > t."""
    T = 17
    w, u, k, v = (t.requires_grad_() for t in random_inputs(1, T, 3, k_scale=10.0))
    y = uni_wkv(w, u, k, v)
    for t in range(T):
        gk, gv = torch.autograd.grad(y[0, t].sum(), (k, v), retain_graph=True)
        assert torch.all(gk[0, t + 1:] == 0) and torch.all(gv[0, t + 1:] == 0), f"token {t} sees the future"
        assert gv[0, : t + 1].abs().sum() > 0


def test_bi_wkv_is_not_causal():
    w, u, k, v = (t.requires_grad_() for t in random_inputs(1, 9, 2))
    (gv,) = torch.autograd.grad(bi_wkv(w, u, k, v)[0, 0].sum(), (v,))
    assert torch.all(gv[0, 1:].abs() > 0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("op,causal", OPS, ids=["bi", "uni"])
def test_half_types_computed_in_float32(op, causal, dtype):
    w, u, k, v = random_inputs(2, 50, 4, k_scale=3.0, dtype=dtype)
    y = op(w, u, k, v)
    assert y.dtype == dtype
    expected = oracle(w, u, k, v, causal)      # oracle of the same (rounded) half inputs
    # computed in float32, then rounded to the half type (half an ulp of it), on values up to max |v|
    atol = (eps(dtype) / 2 + rounding_bound(torch.float32, wkv_depth(w.float(), k.float(), 50), 1)) * float(v.abs().max())
    torch.testing.assert_close(y.double(), expected, rtol=0, atol=atol)


def test_long_sequence_matches_chunked_oracle():
    """T = 65,536 (a 256 x 256 image): far too long for a T x T table, compared on sampled tokens."""
    T, C = 65536, 2
    w, u, k, v = random_inputs(1, T, C, k_scale=3.0, seed=11)
    y = bi_wkv(w, u, k, v)
    picks = torch.tensor([0, 1, 4097, T // 2, T - 2, T - 1])
    pos = torch.arange(T, dtype=torch.float64)
    for t in picks.tolist():
        dist = (pos - t).abs() - 1
        logw = -dist[:, None] * w.double() + k[0].double()
        logw[t] = u.double() + k[0, t].double()
        expected = (torch.softmax(logw, 0) * v[0].double()).sum(0)
        atol = rounding_bound(torch.float32, wkv_depth(w, k, T), v.abs().max())
        torch.testing.assert_close(y[0, t].double(), expected, rtol=0, atol=atol)


@pytest.mark.parametrize("op", [bi_wkv, uni_wkv])
def test_bad_inputs_name_the_problem(op):
    w, u, k, v = random_inputs(1, 4, 3)
    with pytest.raises(ValueError, match=r"k and v must both have shape \(B, T, C\)"):
        op(w, u, k[0], v[0])
    with pytest.raises(ValueError, match=r"w must have shape \(C,\) = \(3,\)"):
        op(w[:2], u, k, v)
    with pytest.raises(ValueError, match="floating-point"):
        op(w, u, k.long(), v)
    with pytest.raises(ValueError, match="exceeds"):
        op(w * 1e4, u, k, v)
    with pytest.raises(ValueError, match="exceeds"):
        op(torch.full_like(w, float("nan")), u, k, v)
