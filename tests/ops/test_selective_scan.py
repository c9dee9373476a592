"""The selective scan's CPU paths (PyTorch and the compiled kernel) against a float64 token-by-token
oracle (outputs and every gradient), and the backend dispatch."""
import functools

import pytest
import torch

import models
from models.ops import _extension, selective_scan as scan_module
from models.ops.selective_scan import resolve_backend, selective_scan, selective_scan_cpp, selective_scan_torch
from models.ops.selective_scan.reference import oracle
from tests.helpers import float64_spread, rounding_bound

# The compiled scan is tested like the CPU WKV kernel: where it cannot be built, these tests fail.
PATHS = {"torch": functools.partial(selective_scan_torch, chunk=8), "cpp": selective_scan_cpp}


def inputs(b=2, d=6, n=3, length=37, groups=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)          # noqa: E731
    A = -torch.exp(r(d, n))                                                  # negative, as in Mamba
    return [r(b, d, length), r(b, d, length), A, r(b, groups, n, length), r(b, groups, n, length), r(d), r(d)]


# (d, groups): one ragged tile per group (3 of 16 lanes), several tiles with a ragged last one (40 =
# 16 + 16 + 8 per group), a single group of exactly one tile of doubles (8)
SHAPES = [(6, 2), (80, 2), (8, 1)]


@pytest.mark.parametrize("path", ["cpp", "torch"])
@pytest.mark.parametrize("length", [1, 5, 16, 37, 300])
@pytest.mark.parametrize("d, groups", SHAPES)
def test_matches_the_sequential_oracle(path, length, d, groups):
    u, delta, A, B, C, D, bias = inputs(length=length, d=d, groups=groups)
    y = PATHS[path](u, delta, A, B, C, D, bias, delta_softplus=True)
    assert y.dtype == torch.float64
    torch.testing.assert_close(y, oracle(u, delta, A, B, C, D, bias), rtol=1e-10, atol=1e-10)


# 29 tokens: within one chunk of the kernel's backward; 200: four chunks of 64 with a ragged end
@pytest.mark.parametrize("path", ["cpp", "torch"])
@pytest.mark.parametrize("length, d, groups", [(29, 6, 2), (200, 40, 2), (200, 8, 1)])
def test_gradients_match_the_oracle(path, length, d, groups):
    leaves = [t.requires_grad_() for t in inputs(length=length, d=d, groups=groups, seed=1)]
    reference = [t.detach().clone().requires_grad_() for t in leaves]
    gy = torch.randn(2, d, length, dtype=torch.float64)
    (PATHS[path](*leaves, delta_softplus=True) * gy).sum().backward()
    (oracle(*reference) * gy).sum().backward()
    for name, a, b in zip(["u", "delta", "A", "B", "C", "D", "delta_bias"], leaves, reference):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-8, atol=1e-9, msg=f"gradient of {name}")


@pytest.mark.parametrize("path", ["cpp", "torch"])
def test_float32_long_sequence_and_strong_decay(path):
    u, delta, A, B, C, D, bias = inputs(length=1000, d=20, seed=2)
    A = A * 30                                                               # exp(delta A) far below 1
    y = PATHS[path](*(t.float() for t in (u, delta, A, B, C, D, bias)), delta_softplus=True)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    expected = oracle(u, delta, A, B, C, D, bias)
    # a recurrence over 1,000 tokens plus the exp, softplus and the C-B contraction per token
    atol = rounding_bound(torch.float32, 1000 + 16 + B.shape[-2], expected.abs().max())
    torch.testing.assert_close(y.double(), expected, rtol=0, atol=atol)


def test_float32_gradients_of_the_kernel():
    """float32 through the kernel: every gradient within the float32 rounding bound of a forward and
    a backward recurrence over 1,000 tokens (relative to its scale) of the float64 oracle (gA, a sum
    over all tokens, accumulates in double)."""
    leaves64 = inputs(length=1000, d=40, seed=3)
    leaves = [t.float().requires_grad_() for t in leaves64]
    reference = [t.clone().requires_grad_() for t in leaves64]
    gy = torch.randn(2, 40, 1000, dtype=torch.float64)
    (selective_scan_cpp(*leaves, delta_softplus=True) * gy.float()).sum().backward()
    (oracle(*reference) * gy).sum().backward()
    for name, a, b in zip(["u", "delta", "A", "B", "C", "D", "delta_bias"], leaves, reference):
        atol = rounding_bound(torch.float32, 2 * 1000 + 16 + leaves64[3].shape[-2], b.grad.abs().max())
        assert a.grad.dtype == torch.float32
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=0, atol=atol, msg=f"gradient of {name}")


def test_the_kernel_is_deterministic_and_thread_count_free():
    leaves = [t.float() for t in inputs(length=300, d=40, seed=4)]
    gy = torch.randn(2, 40, 300)
    grads = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            xs = [t.clone().requires_grad_() for t in leaves]
            (selective_scan_cpp(*xs, delta_softplus=True) * gy).sum().backward()
            grads.append([x.grad for x in xs])
    finally:
        torch.set_num_threads(threads)
    for a, b in zip(*grads):
        assert torch.equal(a, b)


def test_shapes_are_checked():
    u, delta, A, B, C, D, bias = inputs(d=6, groups=4)
    for path in (selective_scan_torch, selective_scan_cpp):
        with pytest.raises(ValueError, match="split into the 4 groups"):
            path(u, delta, A, B, C, D, bias)


def test_backends_dispatch_and_are_recorded():
    u, delta, A, B, C, D, bias = inputs(length=20)
    with pytest.raises(ValueError, match="unknown scan backend 'fast'; expected one of auto, torch, cpp"):
        selective_scan(u, delta, A, B, C, D, bias, backend="fast")
    with pytest.raises(ValueError, match="'mamba' needs CUDA tensors"):
        resolve_backend("mamba", "cpu")
    ran = set()
    y = selective_scan(u, delta, A, B, C, D, bias, delta_softplus=True, backend="torch", record=ran)
    assert ran == {"torch"}
    torch.testing.assert_close(y, oracle(u, delta, A, B, C, D, bias), rtol=1e-10, atol=1e-10)
    assert resolve_backend("auto", "cpu") == "cpp"
    selective_scan(u, delta, A, B, C, D, bias, delta_softplus=True, record=ran)      # None: auto, the kernel
    assert ran == {"torch", "cpp"}


def test_each_model_records_its_own_scan_backends():
    """set_backends chooses per model; used_backends reports that model's calls only."""
    first, second = (torch.manual_seed(0) and models.create_model("mambair_tiny") for _ in range(2))
    first.set_backends(scan="torch")
    x = torch.rand(1, 1, 16, 16)
    atol = float64_spread(first, x)                                 # this model's float32 error, here
    first.used_backends(reset=True)
    with torch.no_grad():
        torch.testing.assert_close(first(x), second.set_backends(scan="cpp")(x), rtol=0, atol=atol)
    assert first.used_backends() == {"scan": ["torch"]} and second.used_backends(reset=True) == {"scan": ["cpp"]}
    assert second.used_backends() == {} and models.create_model("srcnn_tiny").used_backends() == {}
    with pytest.raises(ValueError, match="unknown scan backend 'fast'; expected one of auto, torch, cpp"):
        first.set_backends(scan="fast")


def test_auto_falls_back_to_pytorch_with_one_warning(monkeypatch):
    def broken(kind):
        raise _extension.KernelUnavailable("no compiler here")
    monkeypatch.setattr(_extension, "load", broken)
    monkeypatch.setattr(scan_module, "_warned", set())
    with pytest.warns(RuntimeWarning, match="CPU kernel is unavailable, using the PyTorch path: no compiler"):
        assert resolve_backend("auto", "cpu") == "torch"
    assert resolve_backend("auto", "cpu") == "torch"                     # warned once
    with pytest.raises(_extension.KernelUnavailable, match="no compiler here"):
        resolve_backend("cpp", "cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or scan_module.mamba_kernel() is None,
                    reason="needs a CUDA device and mamba_ssm")
def test_mamba_ssm_on_the_gpu_matches_the_oracle():
    """The dispatch's GPU path (mamba_ssm's kernel) against the same float64 oracle, float32 inputs."""
    leaves64 = inputs(length=300, d=40, seed=5)
    leaves = [t.float().cuda().requires_grad_() for t in leaves64]
    reference = [t.clone().requires_grad_() for t in leaves64]
    gy = torch.randn(2, 40, 300, dtype=torch.float64)
    y = selective_scan(*leaves, delta_softplus=True, backend="mamba")
    (y * gy.float().cuda()).sum().backward()
    (oracle(*reference) * gy).sum().backward()
    torch.testing.assert_close(y.detach().cpu().double(), oracle(*leaves64), rtol=1e-4, atol=1e-4)
    for name, a, b in zip(["u", "delta", "A", "B", "C", "D", "delta_bias"], leaves, reference):
        scale = b.grad.abs().max().item()
        torch.testing.assert_close(a.grad.cpu().double(), b.grad, rtol=1e-3, atol=1e-3 * scale, msg=f"gradient of {name}")
