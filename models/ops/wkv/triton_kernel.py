"""The WKV ops in Triton: chunk-parallel over tokens, batch and channels (``backend="triton"``).

Both ops are ratios of two *decayed sums* of the same form (``wkv.py``'s module docstring)::

    S(x)_t = sum_{i != t, i in side} e^{-(d_ti) w} x_i + e^{u} x_t,   d_ti = |t - i| - 1,

over the past (``i < t``, uni_wkv) or both sides (bi_wkv), with ``x = e^{k - max k} v`` for the
numerator and ``x = e^{k - max k}`` for the denominator. The backward needs the transposed sums
``S^T`` (the same sums over the other side: bi_wkv's is symmetric) of ``alpha = g / den`` and
``beta = -g y / den``, and for ``w`` their first moments ``M^T(x)_i = sum_t d_ti e^{-d_ti w} x_t``:

    gv = a S^T(alpha),  gk = a v S^T(alpha) + a S^T(beta),  gu = e^u sum(a v alpha + a beta),
    gw = -sum(a v M^T(alpha) + a M^T(beta))                              (a = e^{k - max k})

So one kernel family computes ``S`` (and ``M``) of a stack of rows ``X: (R, T, C)`` in three passes:

1. ``_chunk_summaries``: each chunk of ``BLOCK_T`` tokens summarises its rows, decayed to its end
   (for the past) and to its start (for the future), with their moments;
2. ``_boundary_scan``: one sequential pass over the chunks (T / BLOCK_T steps, not T) turns the
   summaries into the state entering each chunk from either side;
3. ``_chunk_finish``: every chunk, independently, adds its own tokens as one (BLOCK_T, BLOCK_T,
   BLOCK_C) tile of weights ``e^{-d w}`` (no cumulative sum inside a chunk: nothing cancels, and no
   factor exceeds ``e^{|w| BLOCK_T}``) to the decayed entering states.

Accumulation is in float32, or float64 for float64 inputs, for uni_wkv (whose maximum of k may lie
in a token's future: see ``wkv.py``) and where ``|w| (T - 1)`` exceeds ``wkv.TRITON_FLOAT32_SPAN``
(the backward's sums of ``g / den`` grow like ``e^{2 |w| T}``); ``wkv.accumulation_dtype`` chooses.
Inputs may be float32, float16 or bfloat16 (computed in float32) or float64; any T. On CUDA tensors
the kernels are compiled; on CPU tensors they run in Triton's interpreter (NumPy) when
``TRITON_INTERPRET=1`` was set at process start, for verification only: it is slow.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os

import torch

BLOCK_T = 16          # tokens per chunk: the (BLOCK_T, BLOCK_T, BLOCK_C) tile of pass 3
BLOCK_C = 16          # channels per program


def _interpret_requested() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


def availability(device: torch.device | str) -> str | None:
    """None when the triton backend can run on ``device``, else why not (one sentence)."""
    device_type = torch.device(device).type
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed (it ships with torch's Linux CUDA wheels)"
    if device_type == "cuda":
        return None if torch.cuda.is_available() else "no CUDA device is visible"
    if device_type == "cpu":
        if not _interpret_requested():
            return ("the triton WKV kernel needs a GPU (CUDA tensors); on CPU tensors it runs only in Triton's "
                    "interpreter, for verification (start the process with TRITON_INTERPRET=1; slow)")
        import triton.language as tl
        from triton.runtime.interpreter import InterpretedFunction
        if not isinstance(tl.sum, InterpretedFunction):
            return ("TRITON_INTERPRET=1 was set after Triton was imported; set it when the process starts "
                    "(Triton's interpreter is chosen at import)")
        return None
    return f"the triton WKV kernel runs on CUDA tensors (or CPU tensors under TRITON_INTERPRET=1), not {device_type}"


_kernels: dict[str, tuple] = {}


def _build(kind: str):
    """The three kernels, compiled (``"cuda"``) or interpreted (``"cpu"``), made on first use."""
    if kind in _kernels:
        return _kernels[kind]
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    def chunk_summaries(X, w, SP, SF, MP, MF, T, C, NC,
                        PAST: tl.constexpr, FUTURE: tl.constexpr, MOMENT: tl.constexpr,
                        BT: tl.constexpr, BC: tl.constexpr):
        chunk, cblock, row = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        start = chunk * BT
        t = start + tl.arange(0, BT)
        c = cblock * BC + tl.arange(0, BC)
        cmask = c < C
        mask = (t[:, None] < T) & cmask[None, :]
        # int64: R x T x C passes 2^31 at B = 4, 1024^2 tokens, C = 384
        x = tl.load(X + row.to(tl.int64) * T * C + t[:, None] * C + c[None, :], mask=mask, other=0.0)
        wc = tl.load(w + c, mask=cmask, other=0.0)[None, :]
        end = tl.minimum(start + BT, T)
        out = row * NC * C + chunk * C + c
        if PAST:   # sum_i e^{-(end-1-i) w} x_i, and its moment
            d = tl.where(mask, (end - 1 - t)[:, None].to(x.dtype), 0.0)
            term = tl.where(mask, tl.exp(-d * wc) * x, 0.0)
            tl.store(SP + out, tl.sum(term, axis=0), mask=cmask)
            if MOMENT:
                tl.store(MP + out, tl.sum(d * term, axis=0), mask=cmask)
        if FUTURE:  # sum_i e^{-(i-start) w} x_i, and its moment
            d = tl.where(mask, (t - start)[:, None].to(x.dtype), 0.0)
            term = tl.where(mask, tl.exp(-d * wc) * x, 0.0)
            tl.store(SF + out, tl.sum(term, axis=0), mask=cmask)
            if MOMENT:
                tl.store(MF + out, tl.sum(d * term, axis=0), mask=cmask)

    def boundary_scan(SP, SF, MP, MF, w, C, NC,
                      PAST: tl.constexpr, FUTURE: tl.constexpr, MOMENT: tl.constexpr,
                      BT: tl.constexpr, BC: tl.constexpr):
        # In place: each chunk's summary becomes the state entering it (from before / after it).
        # Every chunk but the last has BT tokens, and no state is needed beyond the last.
        cblock, row = tl.program_id(0), tl.program_id(1)
        c = cblock * BC + tl.arange(0, BC)
        cmask = c < C
        wc = tl.load(w + c, mask=cmask, other=0.0)
        # e^{-BT w}: across one chunk (unused, and kept finite, when there is only one)
        decay = tl.exp(-tl.minimum(NC - 1, 1) * BT * wc)
        base = row * NC * C + c
        if PAST:
            state = tl.zeros([BC], dtype=wc.dtype)
            moment = tl.zeros([BC], dtype=wc.dtype)
            j = 0
            while j < NC:    # (a while loop: Triton 3.6's interpreter cannot range() over an argument)
                summary = tl.load(SP + base + j * C, mask=cmask, other=0.0)
                tl.store(SP + base + j * C, state, mask=cmask)
                if MOMENT:   # moments of older tokens grow by BT with the distance
                    msum = tl.load(MP + base + j * C, mask=cmask, other=0.0)
                    tl.store(MP + base + j * C, moment, mask=cmask)
                    moment = decay * (moment + BT * state) + msum
                state = decay * state + summary
                j += 1
        if FUTURE:
            state = tl.zeros([BC], dtype=wc.dtype)
            moment = tl.zeros([BC], dtype=wc.dtype)
            j = NC - 1
            while j >= 0:
                summary = tl.load(SF + base + j * C, mask=cmask, other=0.0)
                tl.store(SF + base + j * C, state, mask=cmask)
                if MOMENT:
                    msum = tl.load(MF + base + j * C, mask=cmask, other=0.0)
                    tl.store(MF + base + j * C, moment, mask=cmask)
                    moment = decay * (moment + BT * state) + msum
                state = decay * state + summary
                j -= 1

    def chunk_finish(X, w, u, SP, SF, MP, MF, OUT, OUTM, T, C, NC,
                     PAST: tl.constexpr, FUTURE: tl.constexpr, MOMENT: tl.constexpr,
                     BT: tl.constexpr, BC: tl.constexpr):
        chunk, cblock, row = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        start = chunk * BT
        t = start + tl.arange(0, BT)
        c = cblock * BC + tl.arange(0, BC)
        cmask = c < C
        mask = (t[:, None] < T) & cmask[None, :]
        x = tl.load(X + row.to(tl.int64) * T * C + t[:, None] * C + c[None, :], mask=mask, other=0.0)
        wc = tl.load(w + c, mask=cmask, other=0.0)
        uc = tl.load(u + c, mask=cmask, other=0.0)
        # The chunk's own tokens: weights[t, i, c] = e^{-(|t-i|-1) w_c} on the chosen side, e^{u_c} at i = t.
        lag = tl.arange(0, BT)[:, None] - tl.arange(0, BT)[None, :]          # t - i
        inside = (t[:, None] < T) & (t[None, :] < T)                         # both tokens exist
        if PAST and FUTURE:
            side = lag != 0
        elif PAST:
            side = lag > 0
        else:
            side = lag < 0
        side = side & inside
        dist = tl.where(side, tl.abs(lag) - 1, 0).to(x.dtype)[:, :, None]
        weight = tl.where(side[:, :, None], tl.exp(-dist * wc[None, None, :]), 0.0)
        weight = tl.where((lag == 0)[:, :, None], tl.exp(uc)[None, None, :], weight)
        weighted = weight * x[None, :, :]
        total = tl.sum(weighted, axis=1)
        if MOMENT:
            moment = tl.sum(dist * weighted, axis=1)
        # The tokens of the other chunks, through the states entering this one.
        cidx = row * NC * C + chunk * C + c
        if PAST:
            d = tl.where(t < T, t - start, 0)[:, None].to(x.dtype)
            grow = tl.exp(-d * wc[None, :])
            state = tl.load(SP + cidx, mask=cmask, other=0.0)[None, :]
            total += grow * state
            if MOMENT:
                moment += grow * (tl.load(MP + cidx, mask=cmask, other=0.0)[None, :] + d * state)
        if FUTURE:
            d = tl.where(t < T, tl.minimum(start + BT, T) - 1 - t, 0)[:, None].to(x.dtype)
            grow = tl.exp(-d * wc[None, :])
            state = tl.load(SF + cidx, mask=cmask, other=0.0)[None, :]
            total += grow * state
            if MOMENT:
                moment += grow * (tl.load(MF + cidx, mask=cmask, other=0.0)[None, :] + d * state)
        offsets = row.to(tl.int64) * T * C + t[:, None] * C + c[None, :]
        tl.store(OUT + offsets, total, mask=mask)
        if MOMENT:
            tl.store(OUTM + offsets, moment, mask=mask)

    wrap = InterpretedFunction if kind == "cpu" else JITFunction
    _kernels[kind] = tuple(wrap(fn) for fn in (chunk_summaries, boundary_scan, chunk_finish))
    return _kernels[kind]


# The (PAST, FUTURE, MOMENT) variants the ops launch: bi_wkv forward, uni_wkv forward, bi_wkv
# backward, uni_wkv backward.
VARIANTS = ((True, True, False), (True, False, False), (True, True, True), (False, True, True))


def compile_ahead(capability: int = 90) -> list[str]:
    """Compile every kernel variant, float32 and float64, for an NVIDIA GPU of compute ``capability``
    (90: H100/H200, 80: A100) without one: Triton's front end, LLVM and its bundled ptxas, so that a
    machine with no GPU catches what would fail to build on one. Needs a process started without
    TRITON_INTERPRET (the interpreter replaces the language's own jit functions). Returns what it built."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    target = GPUTarget("cuda", capability, 32)
    built = []
    for dtype in ("fp32", "fp64"):
        for past, future, moment in VARIANTS:
            constants = dict(PAST=past, FUTURE=future, MOMENT=moment, BT=BLOCK_T, BC=BLOCK_C)
            for kernel in _build("cuda"):
                signature = {name: "constexpr" if name in constants else "i32" if name in ("T", "C", "NC")
                             else f"*{dtype}" for name in kernel.arg_names}
                compiled = triton.compile(ASTSource(kernel, signature, constexprs=constants), target=target)
                assert compiled.asm.get("cubin"), f"{kernel.__name__}: no cubin"
                built.append(f"{kernel.__name__}[{dtype}, past={past}, future={future}, moment={moment}]")
    return built


def traffic(rows: int, tokens: int, channels: int, past: bool, future: bool, moment: bool,
            itemsize: int) -> dict[str, tuple[int, int]]:
    """{kernel: (bytes read, bytes written)} of one ``decayed_sums`` call, from the kernels' grids and
    tiles: a program loads and stores only its unmasked elements (a masked lane moves nothing), so
    each total is the valid elements of a tensor times the programs that touch them. Tested against
    Triton's interpreter with its loads and stores counted."""
    chunks = -(-tokens // BLOCK_T)
    data = rows * tokens * channels                      # X, OUT, OUTM: one tile per (chunk, cblock, row)
    states = rows * chunks * channels * (past + future) * (1 + moment)     # SP, SF (and MP, MF)
    per_chunk = rows * chunks * channels                 # w (and u): a BC slice per program of passes 1, 3
    return {"chunk_summaries": (itemsize * (data + per_chunk), itemsize * states),
            "boundary_scan": (itemsize * (rows * channels + states), itemsize * states),
            "chunk_finish": (itemsize * (data + 2 * per_chunk + states), itemsize * data * (1 + moment))}


_traffic_log: list | None = None


@contextlib.contextmanager
def counting_traffic():
    """Inside the block, ``decayed_sums`` on meta tensors launches nothing and appends its kernels'
    ``traffic`` to the list yielded (``benchmark.measure.traffic``)."""
    global _traffic_log
    previous, _traffic_log = _traffic_log, []
    try:
        yield _traffic_log
    finally:
        _traffic_log = previous


def decayed_sums(X: torch.Tensor, w: torch.Tensor, u: torch.Tensor, past: bool, future: bool,
                 moment: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``S(X)`` and (with ``moment``) ``M(X)`` for ``X: (R, T, C)`` contiguous, ``w, u: (C,)`` in
    ``X.dtype`` (float32 or float64), over the past, the future or both. The caller (``wkv``'s
    dispatch, through ``availability``) has checked that the kernels can run on ``X``'s device."""
    rows, tokens, channels = X.shape
    chunks = -(-tokens // BLOCK_T)
    cblocks = -(-channels // BLOCK_C)
    if X.device.type == "meta":                         # counted, not run (``counting_traffic``)
        if _traffic_log is None:
            raise RuntimeError("the triton WKV kernels run on meta tensors only to count their traffic "
                               "(inside triton_kernel.counting_traffic())")
        _traffic_log.append(traffic(rows, tokens, channels, past, future, moment, X.element_size()))
        return torch.empty_like(X), (torch.empty_like(X) if moment else None)
    summaries, scan, finish = _build(X.device.type)
    state = [torch.empty(rows, chunks, channels, dtype=X.dtype, device=X.device) for _ in range(4)]
    out = torch.empty_like(X)
    out_moment = torch.empty_like(X) if moment else out
    flags = dict(PAST=past, FUTURE=future, MOMENT=moment, BT=BLOCK_T, BC=BLOCK_C)
    with torch.cuda.device(X.device) if X.device.type == "cuda" else contextlib.nullcontext():
        summaries[(chunks, cblocks, rows)](X, w, *state, tokens, channels, chunks, **flags)
        scan[(cblocks, rows)](*state, w, channels, chunks, **flags)
        finish[(chunks, cblocks, rows)](X, w, u, *state, out, out_moment, tokens, channels, chunks, **flags)
    return out, (out_moment if moment else None)


class TritonWKV(torch.autograd.Function):
    """``y = S(a v) / S(a)`` with ``a = e^{k - max k}``; inputs in the accumulation dtype."""

    @staticmethod
    def forward(ctx, w, u, k, v, causal: bool):
        a = torch.exp(k - k.amax(dim=1, keepdim=True))
        batch = k.shape[0]
        sums, _ = decayed_sums(torch.cat((a * v, a)).contiguous(), w, u, past=True, future=not causal)
        numerator, denominator = sums[:batch], sums[batch:]
        y = numerator / denominator
        ctx.save_for_backward(w, u, k, v, y, denominator)
        ctx.causal = causal
        return y

    @staticmethod
    def backward(ctx, gy):
        w, u, k, v, y, denominator = ctx.saved_tensors
        gy = gy.to(y.dtype)
        a = torch.exp(k - k.amax(dim=1, keepdim=True))
        alpha = gy / denominator
        beta = -alpha * y
        batch = k.shape[0]
        # The transposed sums: the causal op's past becomes the future; bi_wkv's weights are symmetric.
        sums, moments = decayed_sums(torch.cat((alpha, beta)).contiguous(), w, u, past=not ctx.causal,
                                     future=True, moment=True)
        s_alpha, s_beta = sums[:batch], sums[batch:]
        av = a * v
        gv = a * s_alpha
        gk = av * s_alpha + a * s_beta
        gu = torch.exp(u) * (av * alpha + a * beta).sum(dim=(0, 1))
        gw = -(av * moments[:batch] + a * moments[batch:]).sum(dim=(0, 1))
        return gw, gu, gk, gv, None


def wkv(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
        acc: torch.dtype) -> torch.Tensor:
    """bi_wkv (``causal=False``) or uni_wkv on the Triton kernels, accumulating in ``acc`` (chosen
    by ``wkv.accumulation_dtype``); ``(B, T, C)`` in ``v.dtype``."""
    args = [t.to(acc).contiguous() for t in (w, u, k, v)]
    return TritonWKV.apply(*args, causal).to(v.dtype)
