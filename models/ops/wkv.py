"""WKV attention: linear time and memory, differentiable, on any device, with compiled kernels.

Backends (``backend=`` on each op; the default comes from ``use_backend`` or ``MEDIR_WKV_BACKEND``):
``"torch"`` is the pure-PyTorch path below; ``"cpp"`` (CPU) and ``"cuda"`` force the compiled
kernel of ``csrc/`` and raise ``KernelUnavailable`` with the fix if it cannot be built; ``"auto"``
(the default) picks the kernel for the tensors' device and, if its build fails, warns once and
falls back to ``"torch"``. ``resolve_backend`` says what a call would run; ``record=`` (a set) on
each op collects what ran: the models pass their layer's ``backends.KernelChoice``, so that a run
records the backends of its own model (``RestorationModel.used_backends()``).

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

from . import _extension
from ._extension import KernelUnavailable
from ._tracing import Switch, untraced

BACKENDS = ("auto", "torch", "cpp", "cuda")
_DEVICE_OF_KERNEL = {"cpp": "cpu", "cuda": "cuda"}  # also the kernel's build kind in _extension
_default_backend: str | None = None       # use_backend's; else MEDIR_WKV_BACKEND, else auto
_warned: set[str] = set()

# |w| * (T - 1) beyond which the sums could overflow: the centred cumsum in float32 / float64, the
# kernels' recurrences in their accumulation type (float32 only for bi_wkv: on CUDA always, on the CPU
# within |w| (T - 1) <= 20).
_MAX_DECAY_SPAN = {torch.float32: 150.0, torch.float64: 1200.0}
_MAX_DECAY_SPAN_KERNEL = {torch.float32: 80.0, torch.float64: 1200.0}


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


def _check_decay_span(op: str, w: torch.Tensor, tokens: int, dtype: torch.dtype, kernel: bool = False) -> None:
    span = float(w.detach().abs().max()) * (tokens - 1)
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
    compute = torch.float64 if v.dtype == torch.float64 else torch.float32
    _check_decay_span("bi_wkv", w, k.shape[1], compute)
    w, u, k, v_c = (t.to(compute) for t in (w, u, k, v))
    x, now = _weighted_terms(u, k, v_c)
    past = _decayed_past_sum(w, x)
    future = _decayed_past_sum(w, x.flip(-1)).flip(-1)                           # sum over i > t
    return _ratio(past + future + now, v.dtype)


def _uni_wkv_torch(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    compute = torch.float64
    _check_decay_span("uni_wkv", w, k.shape[1], compute)
    w, u, k, v_c = (t.to(compute) for t in (w, u, k, v))
    x, now = _weighted_terms(u, k, v_c)
    return _ratio(_decayed_past_sum(w, x) + now, v.dtype)


# --- compiled kernels ------------------------------------------------------------------------------

class _KernelWKV(torch.autograd.Function):
    """Forward and backward of a compiled kernel; inputs already in the kernel's dtypes. A kernel's
    ``forward`` returns ``[y, *saved]`` (what its backward needs besides w, u, v, y: for the CPU
    kernel the exponentials it computed, for CUDA k)."""

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


def _run_kernel(op: str, backend: str, w, u, k, v, causal: bool) -> torch.Tensor:
    kernel = _extension.load(_DEVICE_OF_KERNEL[backend])
    if backend == "cpp":   # float32 or float64 throughout; half types computed in float32
        dtype = torch.float64 if torch.float64 in (k.dtype, v.dtype) else torch.float32
        acc = dtype
    else:                  # CUDA takes half types as they are; w, u in the accumulation type
        dtype = torch.float64 if torch.float64 in (k.dtype, v.dtype) else torch.promote_types(k.dtype, v.dtype)
        acc = torch.float64 if (causal or dtype == torch.float64) else torch.float32
    _check_decay_span(op, w, k.shape[1], acc, kernel=True)
    args = [w.to(acc).contiguous(), u.to(acc).contiguous(), k.to(dtype).contiguous(), v.to(dtype).contiguous()]
    return _KernelWKV.apply(*args, causal, kernel).to(v.dtype)


def _check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown WKV backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    return backend


def resolve_backend(backend: str | None, device: torch.device | str) -> str:
    """The backend a call with ``backend`` on ``device`` runs: ``"torch"``, ``"cpp"`` or ``"cuda"``.
    Forced kernels that cannot be built raise ``KernelUnavailable``; ``"auto"`` falls back to
    ``"torch"`` with one warning per kernel and process."""
    if backend is None:
        backend = _default_backend or os.environ.get("MEDIR_WKV_BACKEND", "auto")
    backend = _check_backend(backend)
    device_type = torch.device(device).type
    if backend == "torch":
        return "torch"
    if backend != "auto":
        if device_type != _DEVICE_OF_KERNEL[backend]:
            raise ValueError(f"WKV backend {backend!r} runs on {_DEVICE_OF_KERNEL[backend]} tensors; "
                             f"got {device_type} tensors")
        _extension.load(_DEVICE_OF_KERNEL[backend])
        return backend
    candidate = next((b for b, d in _DEVICE_OF_KERNEL.items() if d == device_type), None)
    if candidate is None:
        return "torch"
    try:
        _extension.load(device_type)
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
    such as ``benchmark.profile`` can count it. Forward only."""
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


def _dispatch(op: str, causal: bool, torch_path, w, u, k, v, backend: str | None,
              record: set | None) -> torch.Tensor:
    if _single_ops.on:
        with _single_ops.set(False):                       # the op's body is the normal call
            return (UniWKVOp if causal else BiWKVOp).apply(w, u, k, v, backend)
    _check_inputs(op, w, u, k, v)
    chosen = resolve_backend(backend, k.device)
    if record is not None:
        record.add(chosen)
    if chosen == "torch":
        return torch_path(w, u, k, v)
    return _run_kernel(op, chosen, w, u, k, v, causal)


def bi_wkv(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str | None = None,
           record: set | None = None) -> torch.Tensor:
    """Bidirectional WKV (Restore-RWKV Eq. 8). ``w, u: (C,)``; ``k, v: (B, T, C)`` -> ``(B, T, C)``
    in ``v.dtype``. The PyTorch path computes half types in float32, float64 in float64."""
    return _dispatch("bi_wkv", False, _bi_wkv_torch, w, u, k, v, backend, record)


def uni_wkv(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str | None = None,
            record: set | None = None) -> torch.Tensor:
    """Causal WKV (RWKV). ``w, u: (C,)``; ``k, v: (B, T, C)`` -> ``(B, T, C)`` in ``v.dtype``. The
    PyTorch path computes in float64 whatever the input dtype (see the module docstring)."""
    return _dispatch("uni_wkv", True, _uni_wkv_torch, w, u, k, v, backend, record)
