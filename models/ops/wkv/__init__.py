"""WKV attention (one folder: ``reference.py`` the float64 oracle, ``cumsum.py`` the PyTorch path,
``cpu.py`` the CPU kernel's binding, ``triton_launch.py`` the Triton kernel, ``limits.py`` the
checks; dispatch here): linear time and memory, differentiable, on any device, with compiled kernels.

Backends (``backend=`` on each op, registered with ``backends.register_op``; a model passes its
layer's choice, set by ``RestorationModel.set_backends(wkv=...)``): ``"torch"`` is the pure-PyTorch
path (``cumsum.py``); ``"cpp"`` forces the compiled CPU kernel of ``csrc/``
and ``"triton"`` the chunk-parallel Triton kernel of ``triton_launch.py`` (CUDA tensors; CPU tensors
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

Valid range of the PyTorch path and the CPU kernel (checked, ``ValueError`` otherwise):
``|w| * (T - 1) <= 150`` in float32 and ``<= 1200`` in float64, so that ``e^{|w| T / 2} * T`` cannot
overflow. The Triton kernel sums in log space anchored at the heaviest token and has no limit; its
dispatch reads no tensor value on the host (no device synchronisation per call).
"""
from __future__ import annotations

import warnings

import torch

from .. import _extension, backends, precision
from .._extension import KernelUnavailable
from .._tracing import Switch, untraced
from .cumsum import bi_wkv_torch, uni_wkv_torch
from .limits import (CPU_FLOAT32_SPAN, accumulation_dtype, check_decay_span, check_inputs,  # noqa: F401
                     decay_span)

BACKENDS = ("auto", "torch", "cpp", "triton")
_KERNEL_OF_DEVICE = {"cpu": "cpp", "cuda": "triton"}   # what "auto" picks
_warned: set[str] = set()


def _run_kernel(op: str, backend: str, w, u, k, v, causal: bool, span: float, acc: torch.dtype) -> torch.Tensor:
    if backend == "triton":                                 # no range to check: anchored sums
        from . import triton_launch
        return triton_launch.wkv(w, u, k, v, causal, acc)
    from .cpu import wkv_cpu
    return wkv_cpu(op, w, u, k, v, causal, span)


def _kernel_available(backend: str, device_type: str) -> None:
    """Raise ``KernelUnavailable`` (with the reason and the fix) unless ``backend`` can run here."""
    if backend == "triton":
        from . import triton_launch
        reason = triton_launch.availability(device_type)
        if reason is not None:
            raise KernelUnavailable(reason)
    else:
        _extension.load("cpu")


def resolve_backend(backend: str | None, device: torch.device | str) -> str:
    """The backend a call with ``backend`` (None: ``"auto"``) on ``device`` runs: ``"torch"``, ``"cpp"`` or ``"triton"``.
    Forced kernels that cannot run raise ``KernelUnavailable``; ``"auto"`` falls back to
    ``"torch"`` with one warning per kernel and process."""
    if backend is None:
        backend = "auto"
    backend = backends.check_backend("wkv", backend)
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


_single_ops = Switch()


def as_single_ops():
    """Inside the block each ``bi_wkv`` / ``uni_wkv`` call is one node of a traced graph (the
    autograd Functions ``BiWKVOp`` / ``UniWKVOp``) whatever backend runs inside, so that op counters
    such as ``benchmark.measure.costs`` can count it. Forward only."""
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
    check_inputs(op, w, u, k, v)
    chosen = resolve_backend(backend, k.device)
    # only the CPU kernel needs w's span (read on the host: free there); the torch path checks its
    # own; the Triton path reads no value on the host (no device sync, capturable in CUDA graphs)
    span = decay_span(w, k.shape[1]) if chosen == "cpp" else None
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
    return _dispatch("bi_wkv", False, bi_wkv_torch, w, u, k, v, backend, record)


def uni_wkv(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str | None = None,
            record=None) -> torch.Tensor:
    """Causal WKV (RWKV). ``w, u: (C,)``; ``k, v: (B, T, C)`` -> ``(B, T, C)`` in ``v.dtype``. The
    PyTorch path computes in float64 whatever the input dtype (see the module docstring)."""
    return _dispatch("uni_wkv", True, uni_wkv_torch, w, u, k, v, backend, record)


backends.register_op("wkv", BACKENDS, resolve_backend)
