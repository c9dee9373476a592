"""Mamba's selective scan (S6) (one folder: ``reference.py`` the token-by-token float64 oracle,
``chunked.py`` the PyTorch path, ``cpu.py`` the CPU kernel's binding, ``mamba.py`` mamba_ssm's CUDA
kernel; dispatch here), same signature as ``mamba_ssm``'s ``selective_scan_fn`` without ``z``
and the last state.

Backends (``backend=``, registered with ``backends.register_op``; a model passes its layer's choice,
set by ``RestorationModel.set_backends(scan=...)``): ``"cpp"``, the compiled CPU kernel of ``csrc/selective_scan_cpu.cpp``
(built on first use like the WKV kernels, float32 or float64); ``"mamba"``, ``mamba_ssm``'s CUDA
kernel; ``"torch"``, the pure-PyTorch chunked scan below; ``"auto"`` (the default), the kernel for
the tensors' device (``cpp`` on CPU, ``mamba`` on CUDA when it is installed) and the PyTorch path
where there is none (one warning per process when the CPU kernel fails to build).
``record=`` collects what ran: MambaIR passes its layer's ``backends.KernelChoice`` (backend and
compute dtype), so a run records its own model's (``RestorationModel.used_backends()``,
``kernel_dtypes()``); a plain set collects backend names. Precision follows ``precision.py``: float32
(float64 for float64 inputs) with autocast off inside, the PyTorch path's chunk sums in float64.

For every batch b, channel d and state n, with delta = softplus(delta + delta_bias) if asked::

    h_t = exp(delta_t A_dn) h_{t-1} + delta_t B_nt u_t,      y_t = sum_n C_nt h_t + D_d u_t

Shapes: ``u, delta: (b, d, l)``; ``A: (d, n)``; ``B, C: (b, g, n, l)`` with the d channels in g equal
groups (or ``(b, n, l)``, one group); ``D, delta_bias: (d,)``. Returns ``y: (b, d, l)``.

The PyTorch path is linear in l: chunks of ``chunk`` (<= 8) tokens are solved in parallel from the
within-chunk cumulative sums S of a = delta A <= 0, as h_t = exp(S_t) * cumsum_s(exp(-S_s) delta_s
B_s u_s) in float64 (a floored at -80 per step, so exp(-S) <= e^640), and the states entering the
chunks follow the same recurrence over the chunk ends, solved the same way (recursively). Channels
are processed in blocks to bound the temporaries.
"""
from __future__ import annotations

import contextlib
import warnings

import torch

from .. import _extension, backends, precision
from .._tracing import Switch, untraced
from .chunked import MAX_DECAY, selective_scan_torch  # noqa: F401
from .cpu import selective_scan_cpp
from .mamba import mamba_kernel

BACKENDS = ("auto", "torch", "cpp", "mamba")
_warned: set[str] = set()


_single_op = Switch()
_recorders: list[list] = []


@contextlib.contextmanager
def recording_calls():
    """Inside the block every call's inputs' shapes are appended to the yielded list as
    ``(b, d, l, n, groups)``: what the scan benchmark times, for any model that calls the scan."""
    calls: list[tuple[int, ...]] = []
    _recorders.append(calls)
    try:
        yield calls
    finally:
        _recorders.remove(calls)


def as_single_op():
    """Inside the block every ``selective_scan`` call is one node (``SelectiveScanOp``) of a traced
    graph, so that op counters can count it. Forward only."""
    return _single_op.set(True)


class SelectiveScanOp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, delta_bias, delta_softplus):
        with untraced():
            return _dispatch(u, delta, A, B, C, D, delta_bias, delta_softplus)

    @staticmethod
    def backward(ctx, gy):
        raise RuntimeError("selective_scan inside as_single_op() is for counting; it has no backward")


def resolve_backend(backend: str | None, device: torch.device | str) -> str:
    """The backend a call with ``backend`` (None: ``"auto"``) on ``device`` runs: ``"torch"``, ``"cpp"`` or ``"mamba"``.
    Forced backends that cannot run raise (``KernelUnavailable`` / ``ValueError``) with the reason."""
    backend = backends.check_backend("scan", "auto" if backend is None else backend)
    device_type = torch.device(device).type
    if backend == "torch":
        return backend
    if backend == "mamba":
        if device_type != "cuda" or mamba_kernel() is None:
            raise ValueError(f"selective-scan backend 'mamba' needs CUDA tensors and mamba_ssm installed "
                             f"(got {device_type} tensors, mamba_ssm {'found' if mamba_kernel() else 'not installed'})")
        return backend
    if backend == "cpp":
        if device_type != "cpu":
            raise ValueError(f"selective-scan backend 'cpp' runs on cpu tensors; got {device_type} tensors")
        _extension.load("scan_cpu")
        return backend
    if device_type == "cuda":
        return "mamba" if mamba_kernel() is not None else "torch"
    if device_type != "cpu":
        return "torch"
    try:
        _extension.load("scan_cpu")
        return "cpp"
    except _extension.KernelUnavailable as err:
        if "cpp" not in _warned:
            _warned.add("cpp")
            warnings.warn(f"selective scan: the CPU kernel is unavailable, using the PyTorch path: {err}",
                          RuntimeWarning, stacklevel=3)
        return "torch"


def _dispatch(u, delta, A, B, C, D, delta_bias, delta_softplus, backend=None, record=None):
    chosen = resolve_backend(backend, u.device)
    # Compute dtypes (precision.py): the PyTorch path sums its chunks in float64; mamba_ssm and the CPU
    # kernel in float32, or float64 for float64 inputs.
    backends.note(record, chosen, precision.compute_dtype(u, needs_float64=chosen == "torch"))
    with precision.full_precision(u.device):
        if chosen == "mamba":
            return mamba_kernel()(u.float(), delta.float(), A.float(), B.float(), C.float(), D, z=None,
                                   delta_bias=delta_bias, delta_softplus=delta_softplus)
        if chosen == "cpp":
            return selective_scan_cpp(u, delta, A, B, C, D, delta_bias, delta_softplus)
        return selective_scan_torch(u, delta, A, B, C, D, delta_bias, delta_softplus)


def selective_scan(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False, backend: str | None = None,
                   record: set | None = None):
    """The scan on ``backend`` (default ``"auto"``; see the module
    docstring); float32 output (float64 for float64 inputs on the CPU paths). ``record`` (a set)
    collects the backend that ran (the models pass their layer's ``backends.KernelChoice``)."""
    for calls in _recorders:
        calls.append((u.shape[0], u.shape[1], u.shape[2], A.shape[1], B.shape[1] if B.dim() == 4 else 1))
    if _single_op.on:
        return SelectiveScanOp.apply(u, delta, A, B, C, D, delta_bias, delta_softplus)
    return _dispatch(u, delta, A, B, C, D, delta_bias, delta_softplus, backend, record)


backends.register_op("scan", BACKENDS, resolve_backend)
