"""The Triton WKV kernel against the float64 O(T^2) oracle: on CPU tensors in Triton's interpreter
(``TRITON_INTERPRET=1``, so CI checks the kernel's logic without a GPU) and, with the ``gpu``
marker, compiled on CUDA tensors. Outputs and all four gradients; float32, bfloat16 and float64
inputs; T of one token, two, a partial chunk and many chunks with a ragged end; a boundary scan of
several levels; |k| up to 60 and |w T|, |u T| up to 20, and keys spread over 400 with spans up to 700."""
import json
import os
import subprocess
import sys

import pytest
import torch
import triton
import triton.language as tl

import models
from models.ops import wkv
from models.ops.wkv import triton_launch as wkv_triton, triton_kernels
from models.ops._extension import KernelUnavailable
from models.ops.wkv import bi_wkv, uni_wkv
from models.ops.wkv.reference import oracle, oracle_with_grad
from tests.helpers import random_inputs
from tests.helpers import float64_spread, rounding_bound, wkv_depth

HAS_CUDA = torch.cuda.is_available()
# Without a GPU, tests/conftest.py turns Triton's interpreter on; with one, the compiled variants run.
NO_INTERPRETER = wkv_triton.availability("cpu")
DEVICES = [pytest.param("cpu", marks=pytest.mark.skipif(NO_INTERPRETER is not None, reason=str(NO_INTERPRETER))),
           pytest.param("cuda", marks=[pytest.mark.gpu,
                                               pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")])]
OPS = [(bi_wkv, False), (uni_wkv, True)]
# bfloat16: one unit in the 8th bit (measured up to 1.3e-3 for y, 2.9e-3 for gv: the results are
# rounded to bfloat16 and g arrives rounded), whatever the sums' rounding.
BFLOAT16_TOLERANCE = 2 ** -8
MANY_CHUNKS = 150                      # 2 full chunks of 64 tokens and a ragged one of 22


def tolerances(inputs, dtype) -> tuple[float, float]:
    """Worst error over its scale (see check_against_oracle) allowed for the output and for a
    gradient: the rounding bound of the computation's depth (tests/helpers.py: the terms summed, the
    exponents' size) in the inputs' dtype; bfloat16's own rounding where that is larger."""
    w, _, k, _ = inputs
    half = dtype == torch.bfloat16                          # computed in float32
    floor = BFLOAT16_TOLERANCE if half else 0.0
    depths = (wkv_depth(w, k, k.shape[1], gradient=g) for g in (False, True))
    return tuple(max(floor, rounding_bound(torch.float32 if half else dtype, depth, 1.0)) for depth in depths)


def check_against_oracle(op, causal, inputs, device, dtype, seed=0):
    """Run ``op`` on the triton backend; compare output and gradients with the oracle evaluated in
    float64 at the same (dtype-rounded) inputs; returns the worst errors relative to their scale."""
    ours = [t.to(device=device, dtype=dtype).clone().requires_grad_() for t in inputs]
    ref = [t.to(dtype).double().clone().requires_grad_() for t in inputs]      # leaves of their own
    y = op(*ours, backend="triton")
    assert y.dtype == dtype and y.device.type == device and torch.isfinite(y).all()
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)
    (y * gy.to(device)).sum().backward()
    gy = gy.double()
    expected = oracle_with_grad(*ref, causal)
    (expected * gy).sum().backward()
    tol_y, tol_grad = tolerances(inputs, dtype)
    errors = {}
    # y is a convex combination of v; a gradient's natural scale is at least max |g| max |v| (some are
    # exactly 0 and come out as a difference of terms of that size, e.g. gk at T = 1).
    v_max = float(ref[3].detach().abs().max())
    for name, a, b, tol in [("y", y, expected, tol_y)] + [(f"g{n}", o.grad, r.grad, tol_grad)
                                                          for n, o, r in zip("wukv", ours, ref)]:
        floor = v_max if name == "y" else v_max * float(gy.abs().max())
        scale = max(float(b.detach().abs().max()), floor)
        errors[name] = float((a.detach().cpu().double() - b.detach()).abs().max()) / scale
        assert a.dtype == dtype and errors[name] <= tol, f"{op.__name__} {dtype} T={a.shape}: {name} {errors}"
    return errors


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("op,causal", OPS, ids=["bi", "uni"])
@pytest.mark.parametrize("T", [1, 2, 37, MANY_CHUNKS])
def test_triton_matches_oracle(device, dtype, op, causal, T):
    assert T < 2 or T < wkv_triton.BLOCK_T or T % wkv_triton.BLOCK_T  # no T fills its last chunk
    inputs = random_inputs(2, T, 3, k_scale=60.0, decay_span=20.0, dtype=torch.float64, seed=T)
    check_against_oracle(op, causal, inputs, device, dtype, seed=T)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op,causal", OPS, ids=["bi", "uni"])
@pytest.mark.parametrize("span", [-20.0, 20.0])
def test_triton_extreme_inputs(device, op, causal, span):
    """k jumps from -60 to +60 inside a chunk (the maximum lies in the first half's future), with the
    largest decay and growth of the spec: finite and exact to float32 rounding."""
    T, C = 100, 2
    k = torch.full((1, T, C), -60.0, dtype=torch.float64)
    k[:, 57:] = 60.0
    v = torch.randn(1, T, C, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w, u = torch.full((C,), span / T, dtype=torch.float64), torch.full((C,), -span / T, dtype=torch.float64)
    check_against_oracle(op, causal, [w, u, k, v], device, torch.float32)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op,causal", OPS, ids=["bi", "uni"])
def test_triton_float64_inputs_are_exact(device, op, causal):
    inputs = random_inputs(2, 41, 5, k_scale=20.0, dtype=torch.float64, seed=5)
    check_against_oracle(op, causal, inputs, device, torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("op,causal", OPS, ids=["bi", "uni"])
def test_triton_scan_of_several_levels(monkeypatch, device, dtype, op, causal):
    """The boundary scan merges GROUP chunk states per program and level: with chunks of 16 tokens
    and groups of 2, 100 tokens (7 chunks, the last ragged) take three levels up and down, as
    64 x 16^2 + 1 tokens would at the defaults (slow in Triton's interpreter: the slow test below)."""
    monkeypatch.setattr(wkv_triton, "BLOCK_T", 16)
    monkeypatch.setattr(wkv_triton, "GROUP", 2)
    levels = []
    scan = wkv_triton._scan
    monkeypatch.setattr(wkv_triton, "_scan",
                        lambda state, w, items, *a: levels.append(items) or scan(state, w, items, *a))
    inputs = random_inputs(2, 100, 3, k_scale=60.0, decay_span=20.0, dtype=torch.float64, seed=9)
    check_against_oracle(op, causal, inputs, device, dtype, seed=9)
    assert levels == [7, 4, 2] * 2                        # forward, then backward: 3 levels each


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op,causal", OPS, ids=["bi", "uni"])
def test_triton_scan_of_several_levels_at_its_default_group(device, op, causal):
    """64 x 16^2 + 4 tokens: 257 chunks, three levels of groups of 16 (minutes in the interpreter)."""
    assert wkv_triton.BLOCK_T == 64 and wkv_triton.GROUP == 16
    inputs = random_inputs(1, 64 * 16 ** 2 + 4, 2, k_scale=60.0, decay_span=20.0, dtype=torch.float64, seed=4)
    check_against_oracle(op, causal, inputs, device, torch.float32, seed=4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op,causal", OPS, ids=["bi", "uni"])
@pytest.mark.parametrize("span,dtype", [(20.0, torch.float32), (60.0, torch.float32), (700.0, torch.float32),
                                        (700.0, torch.float64)],
                         ids=["span20-fp32", "span60-fp32", "span700-fp32", "span700-fp64"])
def test_triton_keys_spread_over_400(device, op, causal, span, dtype):
    """Keys in [-200, 200] with decay spans up to 700, float32 sums for float32 inputs at every span:
    the output within 3e-7 of the float64 oracle (float32; 1e-12 for float64) and every gradient
    within the rounding bound of its depth (the exponents' size included). The sums are anchored in
    log space (no global maximum), so nothing overflows at any span; the references are evaluated in
    log space too (plain float64 exponentials overflow at span 700)."""
    T = 50
    w, u, k, v = random_inputs(2, T, 3, k_scale=200.0, decay_span=span * T / (T - 1), dtype=torch.float64, seed=1)
    leaves = [t.to(device=device, dtype=dtype).clone().requires_grad_() for t in (w, u, k, v)]
    y = op(*leaves, backend="triton")
    ref = [t.detach().cpu().double().requires_grad_() for t in leaves]
    expected = oracle(*ref, causal, differentiable=True)
    scale = float(v.abs().max())
    error = float((y.detach().cpu().double() - expected.detach()).abs().max()) / scale
    assert error <= (3e-7 if dtype == torch.float32 else 1e-12), error
    gy = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    (y * gy.to(device=device, dtype=dtype)).sum().backward()
    (expected * gy).sum().backward()
    tol_grad = rounding_bound(dtype, wkv_depth(w, k, T, gradient=True), 1.0)
    for name, ours, theirs in zip("wukv", leaves, ref):
        grad_scale = max(float(theirs.grad.abs().max()), scale * float(gy.abs().max()))
        grad_error = float((ours.grad.cpu().double() - theirs.grad).abs().max()) / grad_scale
        assert grad_error <= tol_grad, (name, grad_error, tol_grad)


def bfloat16_rounding_cases() -> torch.Tensor:
    """float32 bit patterns of every class the bfloat16 rounding must get right: in the neighbourhood
    of bfloat16 values across the range (the smallest subnormals, ordinary, the largest finite), the
    value itself, just below, at and just above the tie (with an even and an odd upper half), the top of
    the neighbourhood; +-0, +-Inf; NaNs with any payload and sign (quiet, signalling, all ones)."""
    uppers = [0x0000, 0x0001, 0x0002, 0x007F, 0x0080, 0x3F80, 0x3F81, 0x4049, 0x7F7E, 0x7F7F]
    uppers += [u | 0x8000 for u in uppers]
    lows = [0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF]
    special = [0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7FFFFFFF, 0xFFFFFFFF, 0x7F800001,
               0xFF800001, 0x7FBFFFFF, 0x7F808000, 0x7FFF8000, 0x00000000, 0x80000000]
    patterns = [(u << 16) | lo for u in uppers for lo in lows] + special
    return torch.tensor(patterns, dtype=torch.int64).to(torch.int32).view(torch.float32)


@triton.jit
def _narrowed_to_float32(X, Y, N, BLOCK: tl.constexpr):
    """The kernel's bfloat16 rounding (``triton_kernels._narrowed``), its float32 result stored as it is."""
    i = tl.arange(0, BLOCK)
    x = tl.load(X + i, mask=i < N)
    tl.store(Y + i, triton_kernels._narrowed(x, 2), mask=i < N)


@pytest.mark.parametrize("device", DEVICES)
def test_bfloat16_rounding_is_nearest_even_and_keeps_nan_and_inf(device):
    """Bit for bit against PyTorch's round-to-nearest-even conversion, on the kernel's own integer
    arithmetic (uint32, as compiled code computes it; NumPy's uint32 in Triton's interpreter): every
    finite pattern and +-Inf to the same bfloat16, every NaN to a NaN of the same sign."""
    x = bfloat16_rounding_cases().to(device)
    y = torch.empty_like(x)
    _narrowed_to_float32[(1,)](x, y, x.numel(), BLOCK=triton.next_power_of_2(x.numel()))
    x, y = x.cpu(), y.cpu()
    bits = y.view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    assert (bits & 0xFFFF == 0).all()                       # the store to bfloat16 drops only zero bits
    expected = x.to(torch.bfloat16).float()
    nan = torch.isnan(x)
    assert torch.isnan(y[nan]).all() and (torch.signbit(y[nan]) == torch.signbit(x[nan])).all()
    assert torch.equal(y[~nan].view(torch.int32), expected[~nan].view(torch.int32))
    assert torch.isinf(y[torch.isinf(x)]).all() and (y[x.view(torch.int32) == 0x7F7FFFFF] == float("inf")).all()


@pytest.mark.skipif(NO_INTERPRETER is not None, reason=str(NO_INTERPRETER))
def test_accumulation_is_float32_at_any_span(monkeypatch):
    """float32 sums for both ops at any span (nothing is read from w to choose), float64 for float64 inputs."""
    chosen = []
    original = wkv_triton.wkv
    monkeypatch.setattr(wkv_triton, "wkv", lambda *a: chosen.append(a[-1]) or original(*a))
    T = 20
    for span, dtype in ((20.0, torch.float32), (400.0, torch.float32), (400.0, torch.float64)):
        _, _, k, v = random_inputs(1, T, 2, seed=2, dtype=dtype)
        w, u = torch.tensor([span, -1.0], dtype=dtype) / (T - 1), torch.zeros(2, dtype=dtype)
        bi_wkv(w, u, k, v, backend="triton")
        uni_wkv(w, u, k, v, backend="triton")
    assert chosen == [torch.float32] * 4 + [torch.float64] * 2


class NoHostRead(torch.Tensor):
    """A tensor whose values cannot reach the host: what would synchronise with a GPU raises."""

    def _refuse(self, *args, **kwargs):
        raise AssertionError("a tensor value was read on the host")

    item = tolist = cpu = numpy = __bool__ = __float__ = __int__ = __index__ = _refuse


@pytest.mark.skipif(NO_INTERPRETER is not None, reason=str(NO_INTERPRETER))
@pytest.mark.parametrize("op", [bi_wkv, uni_wkv], ids=["bi", "uni"])
def test_the_triton_call_reads_no_value_on_the_host(monkeypatch, op):
    """Dispatch, launcher and autograd of a Triton call, forward and backward, on tensors whose
    item / bool / float / int / tolist / cpu / numpy raise: no device synchronisation per call (the
    kernels themselves are recorded, not run: Triton's interpreter reads its tensors on the host)."""
    launched = []
    sweep, scan = wkv_triton._kernels()
    monkeypatch.setattr(wkv_triton, "_kernels",
                        lambda: (wkv_triton._Recorder(sweep, launched), wkv_triton._Recorder(scan, launched)))
    w, u, k, v = random_inputs(2, 150, 3, k_scale=60.0, decay_span=400.0, seed=3)
    guarded = [t.as_subclass(NoHostRead).requires_grad_() for t in (w, u, k, v)]
    with pytest.raises(AssertionError, match="read on the host"):
        float(guarded[0].abs().max())                       # the guard works
    y = op(*guarded, backend="triton")
    y.sum().backward()
    assert all(t.grad is not None for t in guarded)
    assert len(launched) >= 6                               # summaries, scan, finish; forward and backward


def test_triton_on_cpu_needs_the_interpreter(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    w, u, k, v = random_inputs(1, 5, 2)
    with pytest.raises(KernelUnavailable, match="needs a GPU .*TRITON_INTERPRET=1"):
        bi_wkv(w, u, k, v, backend="triton")
    assert wkv.resolve_backend("auto", "cpu") in ("cpp", "torch")        # auto never interprets
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    if wkv_triton.availability("cpu") is None:              # the interpreter is on (no GPU here)
        assert wkv.resolve_backend("triton", "cpu") == "triton"
        assert wkv.resolve_backend("auto", "cpu") in ("cpp", "torch")
    else:
        assert "set after Triton was imported" in wkv_triton.availability("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")
def test_auto_runs_triton_on_cuda_and_a_model_agrees():
    assert wkv.resolve_backend("auto", "cuda") == "triton"
    torch.manual_seed(0)
    model = models.create_model("restore_rwkv_tiny").cuda()
    x = torch.randn(2, 1, 40, 56, device="cuda")
    atol = float64_spread(model.set_backends(wkv="torch"), x)       # its float32 error on this GPU (TF32 too)
    model.used_backends(reset=True)
    with torch.no_grad():
        reference = model.set_backends(wkv="torch")(x)
        ours = model.set_backends(wkv="auto")(x)
    assert model.used_backends() == {"wkv": ["torch", "triton"]}
    torch.testing.assert_close(ours, reference, rtol=0, atol=atol)


@pytest.mark.parametrize("capability", [80, 90], ids=["sm80", "sm90"])
def test_triton_kernels_compile_for_gpus_without_one(capability):
    """Every variant the launcher launches (float32, bfloat16 and float64 inputs; one row or several),
    with its specialisation, through Triton's compiler down to a cubin (its bundled ptxas) for A100
    (sm80) and H100/H200 (sm90): a kernel that would not build on a GPU fails here. In a child process
    without the interpreter, which replaces the language's jit functions."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = f"import json; from models.ops.wkv import triton_launch as wkv_triton; print(json.dumps(wkv_triton.compile_ahead({capability})))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600,
                          cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert done.returncode == 0, done.stderr[-3000:]
    built = json.loads(done.stdout.strip().splitlines()[-1])
    # each data dtype: the sweep of each pass, summaries and finish, with R = 1 a constant and not
    for data, half in (("fp32", 0), ("bf16", 2), ("fp64", 0)):
        for backward, causal in wkv_triton.PASSES:
            for finish in (False, True):
                flags = f"finish={finish}, backward={backward}, causal={causal}, half={half}"
                assert f"sweep[{data}, {flags}, r=1]" in built and f"sweep[{data}, {flags}]" in built, flags
    # the scan of float32 and float64 states: up, and down with and without a level above, per side,
    # with and without moments
    for states in ("fp32", "fp64"):
        for down, has_up in ((False, False), (True, False), (True, True)):
            for side in (0, 1):
                for moment in (False, True):
                    flags = f"down={down}, has_up={has_up}, side={side}, moment={moment}"
                    assert any(b.startswith(f"scan[{states}, {flags}") for b in built), flags
