"""Compiled WKV kernels: each backend against the float64 oracle and the PyTorch path (the CPU
kernel here; the Triton kernel compiled, on a GPU, and in tests/ops/test_wkv_triton.py under Triton's
interpreter), backend selection and fallback, and the lazy build (name, cache, timeout)."""
import warnings

import pytest
import torch

import models
from models.ops import _extension, wkv
from models.ops.wkv import bi_wkv, uni_wkv
from models.ops.wkv.reference import oracle, oracle_with_grad
from tests.helpers import random_inputs
from tests.helpers import eps, float64_spread, rounding_bound, wkv_depth

HAS_CUDA = torch.cuda.is_available()
BACKENDS = ["cpp", pytest.param("triton", marks=[pytest.mark.gpu,
                                                 pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device")])]
OPS = [(bi_wkv, False), (uni_wkv, True)]


def device_of(backend):
    return "cuda" if backend == "triton" else "cpu"


def on(device, tensors):
    return [t.to(device) for t in tensors]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op,causal", OPS, ids=["bi", "uni"])
@pytest.mark.parametrize("T,C", [(1, 1), (2, 3), (37, 5), (300, 17)])
def test_kernel_forward_matches_oracle(backend, op, causal, T, C):
    device = device_of(backend)
    w, u, k, v = random_inputs(2, T, C, k_scale=30.0, seed=T + C)
    y = op(*on(device, (w, u, k, v)), backend=backend)
    assert y.dtype == torch.float32 and y.device.type == device
    torch.testing.assert_close(y.cpu().double(), oracle(w, u, k, v, causal), rtol=0,
                               atol=rounding_bound(torch.float32, wkv_depth(w, k, T), v.abs().max()))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op,causal", OPS, ids=["bi", "uni"])
def test_kernel_extreme_inputs(backend, op, causal):
    device = device_of(backend)
    T, C = 256, 6
    k = torch.full((1, T, C), -60.0)
    k[:, T // 2:] = 60.0
    v = torch.randn(1, T, C)
    for span in (-20.0, 20.0):
        w, u = torch.full((C,), span / T), torch.full((C,), -span / T)
        y = op(*on(device, (w, u, k, v)), backend=backend).cpu()
        assert torch.isfinite(y).all()
        torch.testing.assert_close(y.double(), oracle(w, u, k, v, causal), rtol=0,
                                   atol=rounding_bound(torch.float32, wkv_depth(w, k, T), v.abs().max()))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op,causal", OPS, ids=["bi", "uni"])
def test_kernel_rescales_across_chunks(backend, op, causal):
    """k jumps by up to 120 at positions that are no multiple of any chunk size, in both directions,
    so the maximum of k changes between and inside the kernels' chunks; outputs and gradients."""
    device = device_of(backend)
    T, C = 333, 3
    gen = torch.Generator().manual_seed(7)
    k = torch.randn(2, T, C, generator=gen, dtype=torch.float64)
    k[:, 50:61] += 40.0
    k[:, 200:] -= 60.0
    k[1, 290] += 120.0
    v = torch.randn(2, T, C, generator=gen, dtype=torch.float64)
    w = torch.tensor([5.0, -5.0, 0.3], dtype=torch.float64) / T
    u = torch.tensor([1.0, -2.0, 0.0], dtype=torch.float64) / T
    ours = [t.clone().to(device).requires_grad_() for t in (w, u, k, v)]
    ref = [t.clone().requires_grad_() for t in (w, u, k, v)]
    gy = torch.randn(2, T, C, generator=gen, dtype=torch.float64)
    y = op(*ours, backend=backend)
    expected = oracle_with_grad(*ref, causal)
    torch.testing.assert_close(y.detach().cpu(), expected.detach(), rtol=1e-10, atol=1e-12)
    (y * gy.to(device)).sum().backward()
    (expected * gy).sum().backward()
    for name, a, b in zip("wukv", ours, ref):
        torch.testing.assert_close(a.grad.cpu(), b.grad, rtol=1e-8, atol=1e-10, msg=f"gradient of {name}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op,causal", OPS, ids=["bi", "uni"])
def test_kernel_gradients_match_oracle(backend, op, causal):
    device = device_of(backend)
    inputs = random_inputs(3, 41, 7, k_scale=20.0, dtype=torch.float64, seed=5)
    ours = [t.clone().to(device).requires_grad_() for t in inputs]
    ref = [t.clone().requires_grad_() for t in inputs]
    gy = torch.randn(3, 41, 7, dtype=torch.float64)
    (op(*ours, backend=backend) * gy.to(device)).sum().backward()
    (oracle_with_grad(*ref, causal) * gy).sum().backward()
    for name, a, b in zip("wukv", ours, ref):
        torch.testing.assert_close(a.grad.cpu(), b.grad, rtol=1e-9, atol=1e-11, msg=f"gradient of {name}")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", [bi_wkv, uni_wkv], ids=["bi", "uni"])
@pytest.mark.parametrize("C", [1, 48, 384])
def test_kernel_matches_torch_path_on_long_sequences(backend, op, C):
    """T = 4097 (not a multiple of any block size), B = 2: outputs and all four gradients."""
    device = device_of(backend)
    inputs = random_inputs(2, 4097, C, k_scale=5.0, seed=C)
    gy = torch.randn(2, 4097, C)
    results = {}
    for name in ("torch", backend):
        leaves = [t.clone().to(device).requires_grad_() for t in inputs]
        y = op(*leaves, backend=name)
        (y * gy.to(device)).sum().backward()
        results[name] = [y.detach().cpu()] + [t.grad.cpu() for t in leaves]
    # two float32 computations of one quantity: each within its rounding bound of the exact value
    depth = 2 * wkv_depth(inputs[0], inputs[2], 4097, gradient=True)
    for label, a, b in zip(["y", "gw", "gu", "gk", "gv"], results[backend], results["torch"]):
        torch.testing.assert_close(a, b, rtol=0, atol=rounding_bound(torch.float32, depth, b.abs().max()), msg=label)


@pytest.mark.parametrize("span,accumulation", [(20.0, torch.float32), (60.0, torch.float64)])
def test_cpu_kernel_float32_accumulation_follows_the_decay_span(span, accumulation):
    """float32 bi_wkv accumulates in float32 within chunks only where |w| (T - 1) <= 20 (the chunk
    state's dtype says which); uni_wkv always in float64. Both paths agree with the oracle, outputs and
    gradients, across several chunks and with k spread over +-30."""
    kernel = _extension.load("cpu")
    T, C = 300, 17
    w, u, k, v = random_inputs(2, T, C, k_scale=30.0, decay_span=span * T / (T - 1), seed=3)
    gy = torch.randn(2, T, C, generator=torch.Generator().manual_seed(4))
    for op, causal, expected in ((bi_wkv, False, accumulation), (uni_wkv, True, torch.float64)):
        y, E, state = kernel.forward(w, u, k, v, causal)
        assert state.dtype == expected
        ours = [t.clone().requires_grad_() for t in (w, u, k, v)]
        ref = [t.clone().double().requires_grad_() for t in (w, u, k, v)]
        out = op(*ours, backend="cpp")
        torch.testing.assert_close(out.double(), oracle(w, u, k, v, causal), rtol=0,
                                   atol=rounding_bound(torch.float32, wkv_depth(w, k, T), v.abs().max()))
        (out * gy).sum().backward()
        (oracle_with_grad(*ref, causal) * gy.double()).sum().backward()
        for name, a, b in zip("wukv", ours, ref):
            atol = rounding_bound(torch.float32, wkv_depth(w, k, T, gradient=True), b.grad.abs().max())
            torch.testing.assert_close(a.grad.double(), b.grad, rtol=0, atol=atol, msg=f"{op.__name__}: gradient of {name}")


@pytest.mark.parametrize("op", [bi_wkv, uni_wkv], ids=["bi", "uni"])
def test_cpu_kernel_gradcheck(op):
    inputs = [t.requires_grad_() for t in random_inputs(2, 7, 3, k_scale=3.0, dtype=torch.float64, seed=2)]
    assert torch.autograd.gradcheck(lambda *a: op(*a, backend="cpp"), inputs)


def test_cpu_kernel_is_causal_for_uni():
    T = 13
    w, u, k, v = (t.requires_grad_() for t in random_inputs(1, T, 4, k_scale=10.0))
    y = uni_wkv(w, u, k, v, backend="cpp")
    for t in range(T):
        gk, gv = torch.autograd.grad(y[0, t].sum(), (k, v), retain_graph=True)
        assert torch.all(gk[0, t + 1:] == 0) and torch.all(gv[0, t + 1:] == 0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cpu_kernel_accepts_half_types(dtype):
    w, u, k, v = random_inputs(2, 50, 4, k_scale=3.0, dtype=dtype)
    y = bi_wkv(w, u, k, v, backend="cpp")
    assert y.dtype == dtype
    # both round a float32 result to the half type: at most an ulp of it apart on values up to max |v|
    atol = (eps(dtype) + 2 * rounding_bound(torch.float32, wkv_depth(w.float(), k.float(), 50), 1)) * float(v.abs().max())
    torch.testing.assert_close(y.float(), bi_wkv(w, u, k, v, backend="torch").float(), rtol=0, atol=atol)


def test_model_outputs_agree_across_backends():
    torch.manual_seed(0)
    model = models.create_model("restore_rwkv_tiny", num_blocks=(1, 2, 1, 1))
    x = torch.randn(2, 1, 24, 40)
    atol = float64_spread(model.set_backends(wkv="torch"), x)      # the float32 error of this model here
    model.used_backends(reset=True)
    with torch.no_grad():
        reference = model.set_backends(wkv="torch")(x)
        assert model.used_backends(reset=True) == {"wkv": ["torch"]}
        compiled = model.set_backends(wkv="cpp")(x)
    torch.testing.assert_close(compiled, reference, rtol=0, atol=atol)
    assert model.used_backends() == {"wkv": ["cpp"]}
    with pytest.raises(ValueError, match="unknown wkv backend 'gpu'"):
        model.set_backends(wkv="gpu")
    with pytest.raises(ValueError, match="unknown kernel kind 'attention'"):
        model.set_backends(attention="torch")


# --- selection and fallback ----------------------------------------------------------------------

def test_resolve_backend():
    assert wkv.resolve_backend("torch", "cpu") == "torch"
    assert wkv.resolve_backend("cpp", "cpu") == "cpp"
    assert wkv.resolve_backend("auto", "cpu") == "cpp"
    assert wkv.resolve_backend("auto", "meta") == "torch"
    with pytest.raises(ValueError, match="unknown wkv backend 'gpu'; expected one of auto, torch, cpp, triton"):
        wkv.resolve_backend("gpu", "cpu")
    with pytest.raises(ValueError, match="unknown wkv backend 'cuda'"):   # retired: Triton replaced it
        wkv.resolve_backend("cuda", "cpu")
    with pytest.raises(ValueError, match="'cpp' runs on cpu tensors; got cuda tensors"):
        wkv.resolve_backend("cpp", "cuda")


def test_auto_falls_back_with_one_warning(monkeypatch):
    def broken(kind):
        raise _extension.KernelUnavailable(f"no compiler for {kind}")
    monkeypatch.setattr(_extension, "load", broken)
    monkeypatch.setattr(wkv, "_warned", set())
    w, u, k, v = random_inputs(1, 5, 2)
    with pytest.warns(RuntimeWarning, match="cpp kernel is unavailable, using the PyTorch path: no compiler"):
        y = bi_wkv(w, u, k, v)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # a second call does not warn again
        torch.testing.assert_close(bi_wkv(w, u, k, v), y)
    with pytest.raises(_extension.KernelUnavailable, match="no compiler for cpu"):
        bi_wkv(w, u, k, v, backend="cpp")                   # forcing a kernel never falls back


def test_one_vocabulary_and_one_mechanism_choose_a_backend():
    """Every op registers its backends once; a call's ``backend=`` (a model's layer passes its
    ``KernelChoice``) is the only way to choose one: None means "auto", nothing process-wide."""
    from models.ops import backends
    assert backends.OPS["wkv"] == wkv.BACKENDS == ("auto", "torch", "cpp", "triton")
    assert wkv.resolve_backend(None, "cpu") == wkv.resolve_backend("auto", "cpu")
    assert not hasattr(wkv, "use_backend")
    with pytest.raises(ValueError, match="unknown wkv backend 'fast'; expected one of auto, torch, cpp, triton"):
        wkv.resolve_backend("fast", "cpu")


# --- the build -------------------------------------------------------------------------------------

def test_extension_name_carries_what_changes_the_binary(monkeypatch):
    cpu = _extension.build_spec("cpu")
    assert cpu["name"].startswith("medir_wkv_cpu_") and cpu["name"].isidentifier()
    assert cpu["build_directory"].startswith(str(_extension.build_dir()))
    monkeypatch.setattr(_extension, "_cpu_flags", lambda: (["-O2"], []))
    assert _extension.build_spec("cpu")["name"] != cpu["name"]
    with pytest.raises(ValueError, match="unknown kernel kind 'tpu'"):
        _extension.build_spec("tpu")


def test_build_times_out_with_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDIR_BENCH_BUILD_DIR", str(tmp_path))
    monkeypatch.setenv("MEDIR_BENCH_BUILD_TIMEOUT", "0.01")
    with pytest.raises(_extension.KernelUnavailable, match="took longer than 0.01 s"):
        _extension.build("cpu")


def test_missing_sources_say_how_to_fix(monkeypatch, tmp_path):
    monkeypatch.setattr(_extension, "sources_dir", lambda: tmp_path)
    with pytest.raises(_extension.KernelUnavailable, match=r"pip install -e \."):
        _extension.build_spec("cpu")


def test_a_failed_build_reports_the_compilers_first_error_and_its_log():
    log = ("[1/2] c++ -MMD -MF wkv_cpu.o.d ... -c csrc/wkv_cpu.cpp -o wkv_cpu.o\n"
           "FAILED: wkv_cpu.o\n"
           "csrc/wkv_cpu.cpp: In member function 'std::vector<at::Tensor> Backward::operator()':\n"
           "csrc/wkv_cpu.cpp:716:47: error: call of overloaded 'sum(<brace-enclosed initializer list>)' is ambiguous\n"
           "  716 |     return {shares.select(2, kGradW).sum({0, 1}), ...\n"
           "csrc/wkv_cpu.cpp:720:1: error: expected '}' at end of input\n"
           "ninja: build stopped: subcommand failed.\n")
    assert _extension.first_error(log) == ("csrc/wkv_cpu.cpp:716:47: error: call of overloaded 'sum(<brace-enclosed "
                                           "initializer list>)' is ambiguous")
    assert _extension.first_error("ImportError: no module named torch\n") == "ImportError: no module named torch"


def test_missing_build_tools_are_named_not_guessed(monkeypatch, tmp_path):
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("MEDIR_BENCH_BUILD_DIR", str(tmp_path / "build"))
    monkeypatch.setattr(_extension, "_loaded", {})
    assert any("no-such-compiler is not on PATH" in m for m in _extension.missing_tools())
    with pytest.raises(_extension.KernelUnavailable, match=r"cannot be built: no C\+\+17 compiler \(.*no-such-compiler is not on PATH"):
        _extension.load("cpu")
