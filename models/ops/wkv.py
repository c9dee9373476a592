"""WKV attention: linear time and memory, differentiable, on any device, with compiled kernels.

Backends (``backend=`` on each op; the default comes from ``use_backend`` or ``MEDIR_WKV_BACKEND``):
``"torch"`` is the pure-PyTorch path below; ``"cpp"`` forces the compiled CPU kernel of ``csrc/``
and ``"triton"`` the chunk-parallel Triton kernel of ``wkv_triton.py`` (CUDA tensors; CPU tensors
only under ``TRITON_INTERPRET=1``, for verification); both raise ``KernelUnavailable`` with the
fix if they cannot run. ``"auto"`` (the default) picks ``cpp`` for CPU tensors and ``triton`` for
CUDA tensors and, if that kernel is unavailable, warns once and falls back to ``"torch"``.
``resolve_backend`` says what a call would run; ``record=`` on each op collects what ran: the
models pass their layer's ``backends.KernelChoice`` (backend and compute dtype), so that a run
records those of its own model (``RestorationModel.used_backends()``, ``kernel_dtypes()``); a plain
set collects backend names. Precision follows ``precision.py``.

Shapes (both ops): ``w, u: (C,)``; ``k, v: (B, T, C)``; output ``(B, T, C)`` in the dtype of ``v``.
``w`` and ``u`` are used as given: Restore-RWKV divides them by T before the call (Eq. 8).

``bi_wkv`` (Vision-RWKV, Restore-RWKV Eq. 8)::

    y_t = [sum_{i != t} e^{-(|t-i|-1) w + k_i} v_i + e^{u + k_t} v_t] / [same with v = 1]

``uni_wkv`` (RWKV's causal WKV)::

    y_t = [sum_{i < t} e^{-(t-1-i) w + k_i} v_i + e^{u + k_t} v_t] / [same with v = 1]

How it stays O(T*C) and finite
------------------------------
The decayed sum over the past, ``A_t = sum_{i<t} e^{-(t-1-i) w} x_i``, factorises as
``e^{-(t-1-c) w} * sum_{i<t} e^{(i-c) w} x_i``: one cumulative sum per channel. Centring the
positions at ``c = (T-1)/2`` keeps every factor within ``e^{+-|w| T / 2}``. The sum over the future
is the same computation on the flipped sequence (a reverse cumsum; subtracting prefix sums from the
total would cancel catastrophically when ``w > 0``).

``k`` is shifted by its per-(batch, channel) maximum over the sequence, which changes nothing
mathematically (numerator and denominator share the factor). For ``bi_wkv`` every token sees the
maximum token with weight at least ``e^{-|w|T - |u|}``, so after the shift the denominator stays
above ``e^{-20}`` or so for the spec range (``|k| <= 60``, ``|w T|, |u T| <= 20``) and float32 is
enough. For ``uni_wkv`` the maximum may lie in a token's future, where float32's ``e^{-88}``
underflow would turn ``0/0``; it therefore computes in float64 (range ``e^{+-708}``).

Valid range (checked, ``ValueError`` otherwise): ``|w| * (T - 1) <= 150`` in float32 and ``<= 1200``
in float64, so that ``e^{|w| T / 2} * T`` cannot overflow.
"""
from __future__ import annotations

import contextlib
import os
import warnings

import torch

from . import _extension, backends, precision
from ._extension import KernelUnavailable
from ._tracing import Switch, untraced

BACKENDS = ("auto", "torch", "cpp", "triton")
_KERNEL_OF_DEVICE = {"cpu": "cpp", "cuda": "triton"}   # what "auto" picks
_default_backend: str | None = None       # use_backend's; else MEDIR_WKV_BACKEND, else auto
_warned: set[str] = set()

# |w| * (T - 1) beyond which the sums could overflow: the centred cumsum in float32 / float64, the
# kernels' recurrences in their accumulation type (float32 only for bi_wkv: on the CPU within
# |w| (T - 1) <= 20, in Triton within TRITON_FLOAT32_SPAN, float64 beyond).
_MAX_DECAY_SPAN = {torch.float32: 150.0, torch.float64: 1200.0}
_MAX_DECAY_SPAN_KERNEL = {torch.float32: 80.0, torch.float64: 1200.0}
# The Triton backward's sums of g / den reach e^{2 |w| T} * T: float32 up to |w| (T - 1) = 30.
TRITON_FLOAT32_SPAN = 30.0
CPU_FLOAT32_SPAN = 20.0     # csrc/wkv_cpu.cpp's chunk states are float64 beyond


def _check_inputs(op: str, w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    if k.dim() != 3 or k.shape != v.shape:
        raise ValueError(f"{op}: k and v must both have shape (B, T, C); got k {tuple(k.shape)}, v {tuple(v.shape)}")
    channels = k.shape[2]
    for name, t in (("w", w), ("u", u)):
        if t.shape != (channels,):
            raise ValueError(f"{op}: {name} must have shape (C,) = ({channels},); got {tuple(t.shape)}")
    for name, t in (("w", w), ("u", u), ("k", k), ("v", v)):
        if not t.is_floating_point():
            raise ValueError(f"{op}: {name} must be a floating-point tensor; got {t.dtype}")
        if t.device != k.device:
            raise ValueError(f"{op}: all inputs must be on one device; {name} is on {t.device}, k on {k.device}")
    if k.shape[1] == 0:
        raise ValueError(f"{op}: the sequence is empty (T = 0)")


def decay_span(w: torch.Tensor, tokens: int) -> float:
    """``|w| * (T - 1)``: the largest exponent the sums' decay factors reach (one device sync)."""
    return float(w.detach().abs().max()) * (tokens - 1)


def _check_decay_span(op: str, span: float, dtype: torch.dtype, kernel: bool = False) -> None:
    limit = (_MAX_DECAY_SPAN_KERNEL if kernel else _MAX_DECAY_SPAN)[dtype]
    if not span <= limit:  # also catches NaN
        raise ValueError(
            f"{op}: |w| * (T - 1) = {span:.4g} exceeds {limit:g}, the range this formulation supports in "
            f"{str(dtype).removeprefix('torch.')}; w is expected already divided by T (Restore-RWKV Eq. 8)")


def _decayed_past_sum(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``A_t = sum_{i<t} exp(-(t-1-i) w) x_i`` along the last dim of ``x: (..., C, T)``, for every t."""
    tokens = x.shape[-1]
    position = torch.arange(tokens, device=x.device, dtype=x.dtype) - (tokens - 1) / 2  # (T,): i - c
    grow = torch.exp(w[:, None] * position)                                      # (C, T): e^{(i-c) w}
    scaled = x * grow
    # Exclusive prefix sum by shifting one token (cumsum minus the current term would cancel
    # catastrophically when e^{w} is large, i.e. for short sequences).
    past = torch.nn.functional.pad(torch.cumsum(scaled[..., :-1], dim=-1), (1, 0))
    return past * (torch.exp(w)[:, None] / grow)                                 # e^{-(t-1-c) w}


def _weighted_terms(u: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
    """From ``k, v: (B, T, C)``: the shifted weights ``x = (e^{k - max k} v, e^{k - max k})`` as
    (B, 2, C, T), tokens last (a cumsum over a strided middle dim is several times slower), and the
    bonus terms ``e^{u + k_t} x``."""
    k, v = k.transpose(1, 2).contiguous(), v.transpose(1, 2).contiguous()        # (B, C, T)
    # The shift cancels in the ratio; detaching it keeps gradients exact (no y-to-max path).
    weight = torch.exp(k - k.detach().amax(dim=-1, keepdim=True))               # (B, C, T) in (0, 1]
    x = torch.stack((weight * v, weight), dim=1)                                 # (B, 2, C, T)
    return x, torch.exp(u)[:, None] * x


def _ratio(terms: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, 2, C, T) numerator and denominator -> (B, T, C) output."""
    return (terms[:, 0] / terms[:, 1]).transpose(1, 2).contiguous().to(dtype)


def _bi_wkv_torch(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    compute = precision.compute_dtype(k, v)
    _check_decay_span("bi_wkv", decay_span(w, k.shape[1]), compute)
    w, u, k, v_c = (t.to(compute) for t in (w, u, k, v))
    x, now = _weighted_terms(u, k, v_c)
    past = _decayed_past_sum(w, x)
    future = _decayed_past_sum(w, x.flip(-1)).flip(-1)                           # sum over i > t
    return _ratio(past + future + now, v.dtype)


def _uni_wkv_torch(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    compute = torch.float64
    _check_decay_span("uni_wkv", decay_span(w, k.shape[1]), compute)
    w, u, k, v_c = (t.to(compute) for t in (w, u, k, v))
    x, now = _weighted_terms(u, k, v_c)
    return _ratio(_decayed_past_sum(w, x) + now, v.dtype)


# --- compiled kernels ------------------------------------------------------------------------------

class _KernelWKV(torch.autograd.Function):
    """Forward and backward of the compiled CPU kernel; inputs already in its dtypes. Its ``forward``
    returns ``[y, *saved]`` (what its backward needs besides w, u, v, y: the exponentials it computed)."""

    @staticmethod
    def forward(ctx, w, u, k, v, causal: bool, kernel):
        y, *saved = kernel.forward(w, u, k, v, causal)
        ctx.save_for_backward(w, u, v, y, *saved)
        ctx.causal, ctx.kernel = causal, kernel
        return y

    @staticmethod
    def backward(ctx, gy):
        w, u, v, y, *saved = ctx.saved_tensors
        gw, gu, gk, gv = ctx.kernel.backward(w, u, v, y, gy.to(y.dtype).contiguous(), saved, ctx.causal)
        return gw.to(w.dtype), gu.to(u.dtype), gk, gv, None, None


def accumulation_dtype(backend: str, causal: bool, span: float | None, k: torch.Tensor,
                       v: torch.Tensor) -> torch.dtype:
    """The dtype a call's sums accumulate in (``precision.py``): float64 for uni_wkv, for float64
    inputs, and for a kernel's bi_wkv beyond its float32 ``span``; float32 otherwise."""
    if causal:
        return torch.float64
    if backend == "torch":                   # the centred cumsum: float32 within its checked range
        return precision.compute_dtype(k, v)
    float32_span = CPU_FLOAT32_SPAN if backend == "cpp" else TRITON_FLOAT32_SPAN
    return precision.compute_dtype(k, v, needs_float64=not span <= float32_span)


def _run_kernel(op: str, backend: str, w, u, k, v, causal: bool, span: float, acc: torch.dtype) -> torch.Tensor:
    if backend == "triton":
        _check_decay_span(op, span, torch.float64, kernel=True)
        from . import wkv_triton
        return wkv_triton.wkv(w, u, k, v, causal, acc)
    kernel = _extension.load("cpu")   # inputs float32 or float64; it widens its own sums (acc)
    dtype = precision.compute_dtype(k, v)
    _check_decay_span(op, span, dtype, kernel=True)
    args = [t.to(dtype).contiguous() for t in (w, u, k, v)]
    return _KernelWKV.apply(*args, causal, kernel).to(v.dtype)


def _kernel_available(backend: str, device_type: str) -> None:
    """Raise ``KernelUnavailable`` (with the reason and the fix) unless ``backend`` can run here."""
    if backend == "triton":
        from . import wkv_triton
        reason = wkv_triton.availability(device_type)
        if reason is not None:
            raise KernelUnavailable(reason)
    else:
        _extension.load("cpu")


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown WKV backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    return backend


def resolve_backend(backend: str | None, device: torch.device | str) -> str:
    """The backend a call with ``backend`` on ``device`` runs: ``"torch"``, ``"cpp"`` or ``"triton"``.
    Forced kernels that cannot run raise ``KernelUnavailable``; ``"auto"`` falls back to
    ``"torch"`` with one warning per kernel and process."""
    if backend is None:
        backend = _default_backend or os.environ.get("MEDIR_WKV_BACKEND", "auto")
    backend = _check_backend(backend)
    device_type = torch.device(device).type
    if backend == "torch":
        return "torch"
    if backend != "auto":
        if backend == "cpp" and device_type != "cpu":
            raise ValueError(f"WKV backend 'cpp' runs on cpu tensors; got {device_type} tensors")
        _kernel_available(backend, device_type)
        return backend
    candidate = _KERNEL_OF_DEVICE.get(device_type)
    if candidate is None:
        return "torch"
    try:
        _kernel_available(candidate, device_type)
        return candidate
    except KernelUnavailable as err:
        if candidate not in _warned:
            _warned.add(candidate)
            warnings.warn(f"WKV: the {candidate} kernel is unavailable, using the PyTorch path: {err}",
                          RuntimeWarning, stacklevel=3)
        return "torch"


@contextlib.contextmanager
def use_backend(backend: str):
    """Set the default backend of ``bi_wkv`` / ``uni_wkv`` (and so of the models) inside a block."""
    global _default_backend
    previous, _default_backend = _default_backend, _check_backend(backend)
    try:
        yield
    finally:
        _default_backend = previous


_single_ops = Switch()


def as_single_ops():
    """Inside the block each ``bi_wkv`` / ``uni_wkv`` call is one node of a traced graph (the
    autograd Functions ``BiWKVOp`` / ``UniWKVOp``) whatever backend runs inside, so that op counters
    such as ``benchmark.measure.profile`` can count it. Forward only."""
    return _single_ops.set(True)


class _SingleOp(torch.autograd.Function):
    @staticmethod
    def backward(ctx, gy):
        raise RuntimeError("WKV ops inside as_single_ops() are for counting; they have no backward")


class BiWKVOp(_SingleOp):
    @staticmethod
    def forward(ctx, w, u, k, v, backend):
        with untraced():
            return bi_wkv(w, u, k, v, backend=backend)


class UniWKVOp(_SingleOp):
    @staticmethod
    def forward(ctx, w, u, k, v, backend):
        with untraced():
            return uni_wkv(w, u, k, v, backend=backend)


def _dispatch(op: str, causal: bool, torch_path, w, u, k, v, backend: str | None, record) -> torch.Tensor:
    if _single_ops.on:
        with _single_ops.set(False):                       # the op's body is the normal call
            return (UniWKVOp if causal else BiWKVOp).apply(w, u, k, v, backend)
    _check_inputs(op, w, u, k, v)
    chosen = resolve_backend(backend, k.device)
    span = None if chosen == "torch" else decay_span(w, k.shape[1])      # the torch path checks its own
    acc = accumulation_dtype(chosen, causal, span, k, v)
    backends.note(record, chosen, acc)
    with precision.full_precision(k.device):               # autocast off: the policy of precision.py
        if chosen == "torch":
            return torch_path(w, u, k, v)
        return _run_kernel(op, chosen, w, u, k, v, causal, span, acc)


def bi_wkv(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str | None = None,
           record=None) -> torch.Tensor:
    """Bidirectional WKV (Restore-RWKV Eq. 8). ``w, u: (C,)``; ``k, v: (B, T, C)`` -> ``(B, T, C)``
    in ``v.dtype``. The PyTorch path computes half types in float32, float64 in float64."""
    return _dispatch("bi_wkv", False, _bi_wkv_torch, w, u, k, v, backend, record)


def uni_wkv(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str | None = None,
            record=None) -> torch.Tensor:
    """Causal WKV (RWKV). ``w, u: (C,)``; ``k, v: (B, T, C)`` -> ``(B, T, C)`` in ``v.dtype``. The
    PyTorch path computes in float64 whatever the input dtype (see the module docstring)."""
    return _dispatch("uni_wkv", True, _uni_wkv_torch, w, u, k, v, backend, record)
