"""The pure-PyTorch selective scan against a float64 sequential oracle (outputs and gradients)."""
import pytest
import torch
import torch.nn.functional as F

from models.ops.selective_scan import selective_scan_torch


def oracle(u, delta, A, B, C, D, delta_bias):
    """Token by token, in float64: h_t = exp(delta_t A) h_{t-1} + delta_t B_t u_t, y_t = C_t h_t + D u_t."""
    b, d, length = u.shape
    groups = B.shape[1]
    delta = F.softplus(delta + delta_bias[:, None])
    h = torch.zeros(b, d, A.shape[1], dtype=torch.float64)
    Bd = B.repeat_interleave(d // groups, 1)                                 # (b, d, n, l)
    Cd = C.repeat_interleave(d // groups, 1)
    ys = []
    for t in range(length):
        h = torch.exp(delta[:, :, t, None] * A) * h + (delta[:, :, t] * u[:, :, t])[..., None] * Bd[..., t]
        ys.append((h * Cd[..., t]).sum(-1) + D * u[:, :, t])
    return torch.stack(ys, -1)


def inputs(b=2, d=6, n=3, length=37, groups=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)          # noqa: E731
    A = -torch.exp(r(d, n))                                                  # negative, as in Mamba
    return [r(b, d, length), r(b, d, length), A, r(b, groups, n, length), r(b, groups, n, length), r(d), r(d)]


@pytest.mark.parametrize("length", [1, 5, 16, 37, 300])
def test_matches_the_sequential_oracle(length):
    u, delta, A, B, C, D, bias = inputs(length=length)
    y = selective_scan_torch(u, delta, A, B, C, D, bias, delta_softplus=True, chunk=8)
    torch.testing.assert_close(y, oracle(u, delta, A, B, C, D, bias), rtol=1e-10, atol=1e-10)


def test_gradients_match_the_oracle():
    leaves = [t.requires_grad_() for t in inputs(length=29, seed=1)]
    reference = [t.detach().clone().requires_grad_() for t in leaves]
    gy = torch.randn(2, 6, 29, dtype=torch.float64)
    (selective_scan_torch(*leaves, delta_softplus=True, chunk=4) * gy).sum().backward()
    (oracle(*reference) * gy).sum().backward()
    for name, a, b in zip(["u", "delta", "A", "B", "C", "D", "delta_bias"], leaves, reference):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-9, msg=f"gradient of {name}")


def test_float32_long_sequence_and_strong_decay():
    u, delta, A, B, C, D, bias = inputs(length=1000, seed=2)
    A = A * 30                                                               # exp(delta A) far below 1
    y = selective_scan_torch(*(t.float() for t in (u, delta, A, B, C, D, bias)), delta_softplus=True)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    torch.testing.assert_close(y.double(), oracle(u, delta, A, B, C, D, bias), rtol=1e-4, atol=1e-4)


def test_shapes_are_checked():
    u, delta, A, B, C, D, bias = inputs(d=6, groups=4)
    with pytest.raises(ValueError, match="split into the 4 groups"):
        selective_scan_torch(u, delta, A, B, C, D, bias)
