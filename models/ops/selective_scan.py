"""Mamba's selective scan (S6), same signature as ``mamba_ssm``'s ``selective_scan_fn`` without ``z``
and the last state.

Backends (``backend=``): ``"cpp"``, the compiled CPU kernel of ``csrc/selective_scan_cpu.cpp``
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

import torch
import torch.nn.functional as F

import contextlib
import warnings

from . import _extension, backends, precision
from ._tracing import Switch, untraced

BACKENDS = ("auto", "torch", "cpp", "mamba")
_default_backend = "auto"
_warned: set[str] = set()

_BLOCK_ELEMENTS = 1 << 23  # elements of one (b, channels, l, n) temporary per channel block
# Decay per step (and per chunk of steps) floored at exp(-80) ~ 2e-35: a state that decays further is
# forgotten either way, and the floor keeps exp(-S) of a chunk of 8 within float64.
MAX_DECAY = 80.0


def _mamba_kernel():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:
        return None
    return selective_scan_fn


def _within(a_cumsum: torch.Tensor, bu: torch.Tensor) -> torch.Tensor:
    """h_t = sum_{s <= t} exp(S_t - S_s) bu_s inside each chunk, as exp(S_t) * cumsum(exp(-S_s) bu_s):
    S >= -chunk * MAX_DECAY, so in float64 neither factor overflows for chunks up to 8."""
    return torch.exp(a_cumsum) * torch.cumsum(torch.exp(-a_cumsum) * bu, dim=-2)


def _scan(a: torch.Tensor, bu: torch.Tensor, chunk: int) -> torch.Tensor:
    """All states of h_t = exp(a_t) h_{t-1} + bu_t, h_0 = 0, along dim -2 of (..., l, n), float64."""
    a = a.clamp(min=-MAX_DECAY)
    length = a.shape[-2]
    if length <= chunk:
        return _within(a.cumsum(-2), bu)
    pad = -length % chunk
    if pad:                                                                     # a = 0, bu = 0: no change
        a, bu = F.pad(a, (0, 0, 0, pad)), F.pad(bu, (0, 0, 0, pad))
    shape = (*a.shape[:-2], a.shape[-2] // chunk, chunk, a.shape[-1])
    cumsum = a.reshape(shape).cumsum(-2)
    inside = _within(cumsum, bu.reshape(shape))                                 # from zero at each chunk start
    ends = _scan(cumsum[..., -1, :], inside[..., -1, :], chunk)                 # states at the chunk ends
    entering = F.pad(ends[..., :-1, :], (0, 0, 1, 0))                           # state before each chunk
    states = inside + torch.exp(cumsum) * entering.unsqueeze(-2)
    return states.reshape(*a.shape[:-2], -1, a.shape[-1])[..., :length, :]


def _prepare(u, delta, A, B, C, delta_bias, delta_softplus):
    """Shapes checked, B and C as (b, g, n, l), everything in the compute dtype (float64 for float64
    u, else float32), delta with its bias and softplus applied."""
    d = u.shape[1]
    if B.dim() == 3:
        B, C = B.unsqueeze(1), C.unsqueeze(1)
    if d % B.shape[1] or A.shape[0] != d or delta.shape != u.shape:
        raise ValueError(f"selective_scan: u {tuple(u.shape)}, delta {tuple(delta.shape)}, A {tuple(A.shape)} and "
                         f"B {tuple(B.shape)} do not fit (d must split into the {B.shape[1]} groups of B)")
    compute = precision.compute_dtype(u)
    u, delta, A, B, C = (t.to(compute) for t in (u, delta, A, B, C))
    if delta_bias is not None:
        delta = delta + delta_bias.to(compute)[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    return u, delta, A, B, C


def selective_scan_torch(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False, chunk: int = 8):
    b, d, length = u.shape
    u, delta, A, B, C = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    compute, groups = u.dtype, B.shape[1]
    per_group = d // groups
    if not 1 <= chunk <= 8:
        raise ValueError(f"selective_scan: chunk must be in 1..8 (float64 range of exp(-S)); got {chunk}")
    block = max(1, min(d, _BLOCK_ELEMENTS // max(1, b * length * A.shape[1])))
    outputs = []
    for start in range(0, d, block):
        channels = slice(start, min(d, start + block))
        index = torch.arange(channels.start, channels.stop, device=u.device) // per_group
        a = delta[:, channels, :, None] * A[None, channels, None, :]              # (b, c, l, n), <= 0
        Bd = B[:, index].transpose(-1, -2)                                       # (b, c, l, n)
        Cd = C[:, index].transpose(-1, -2)
        states = _scan(a.double(), ((delta[:, channels] * u[:, channels])[..., None] * Bd).double(), chunk)
        outputs.append((states * Cd).sum(-1).to(compute))
    y = torch.cat(outputs, 1)
    if D is not None:
        y = y + D.to(compute)[:, None] * u
    return y


_single_op = Switch()


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


class _CompiledScan(torch.autograd.Function):
    """The CPU kernel: u, delta (b, d, l) as they are; B, C as (b, g, l, n) copies (a token's states
    together)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C):
        kernel = _extension.load("scan_cpu")
        args = (u.contiguous(), delta.contiguous(), A.contiguous(), B.transpose(2, 3).contiguous(),
                C.transpose(2, 3).contiguous())
        ctx.save_for_backward(*args)
        ctx.kernel = kernel
        return kernel.forward(*args)

    @staticmethod
    def backward(ctx, gy):
        gu, gdelta, gA, gB, gC = ctx.kernel.backward(*ctx.saved_tensors, gy.contiguous())
        # gB, gC: one partial per tile of channels, (b, g, tiles, l, n) -> (b, g, n, l)
        return gu, gdelta, gA.to(gy.dtype), gB.sum(2).transpose(2, 3), gC.sum(2).transpose(2, 3)


def selective_scan_cpp(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False):
    """The compiled CPU scan (``csrc/selective_scan_cpu.cpp``); the bias, softplus and D skip are
    elementwise PyTorch around it. float32 (half types computed in float32) or float64."""
    u, delta, A, B, C = _prepare(u, delta, A, B, C, delta_bias, delta_softplus)
    y = _CompiledScan.apply(u, delta, A, B, C)
    if D is not None:
        y = y + D.to(u.dtype)[:, None] * u
    return y


def resolve_backend(backend: str, device: torch.device | str) -> str:
    """The backend a call with ``backend`` on ``device`` runs: ``"torch"``, ``"cpp"`` or ``"mamba"``.
    Forced backends that cannot run raise (``KernelUnavailable`` / ``ValueError``) with the reason."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown selective-scan backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    device_type = torch.device(device).type
    if backend == "torch":
        return backend
    if backend == "mamba":
        if device_type != "cuda" or _mamba_kernel() is None:
            raise ValueError(f"selective-scan backend 'mamba' needs CUDA tensors and mamba_ssm installed "
                             f"(got {device_type} tensors, mamba_ssm {'found' if _mamba_kernel() else 'not installed'})")
        return backend
    if backend == "cpp":
        if device_type != "cpu":
            raise ValueError(f"selective-scan backend 'cpp' runs on cpu tensors; got {device_type} tensors")
        _extension.load("scan_cpu")
        return backend
    if device_type == "cuda":
        return "mamba" if _mamba_kernel() is not None else "torch"
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


@contextlib.contextmanager
def use_backend(backend: str):
    """Set the backend of ``selective_scan`` calls that name none (the models') inside a block."""
    global _default_backend
    if backend not in BACKENDS:
        raise ValueError(f"unknown selective-scan backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    previous, _default_backend = _default_backend, backend
    try:
        yield
    finally:
        _default_backend = previous


def _dispatch(u, delta, A, B, C, D, delta_bias, delta_softplus, backend=None, record=None):
    chosen = resolve_backend(_default_backend if backend is None else backend, u.device)
    # Compute dtypes (precision.py): the PyTorch path sums its chunks in float64; mamba_ssm and the CPU
    # kernel in float32, or float64 for float64 inputs.
    backends.note(record, chosen, precision.compute_dtype(u, needs_float64=chosen == "torch"))
    with precision.full_precision(u.device):
        if chosen == "mamba":
            return _mamba_kernel()(u.float(), delta.float(), A.float(), B.float(), C.float(), D, z=None,
                                   delta_bias=delta_bias, delta_softplus=delta_softplus)
        if chosen == "cpp":
            return selective_scan_cpp(u, delta, A, B, C, D, delta_bias, delta_softplus)
        return selective_scan_torch(u, delta, A, B, C, D, delta_bias, delta_softplus)


def selective_scan(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=False, backend: str | None = None,
                   record: set | None = None):
    """The scan on ``backend`` (default: ``use_backend``'s, else ``"auto"``; see the module
    docstring); float32 output (float64 for float64 inputs on the CPU paths). ``record`` (a set)
    collects the backend that ran (the models pass their layer's ``backends.KernelChoice``)."""
    if _single_op.on:
        return SelectiveScanOp.apply(u, delta, A, B, C, D, delta_bias, delta_softplus)
    return _dispatch(u, delta, A, B, C, D, delta_bias, delta_softplus, backend, record)
