"""The WKV ops in Triton, fused: the forward reads k and v and writes y (and ``log den``, kept for
the backward); the backward reads gy, y, ``log den``, k and v and writes gk, gv and per-chunk partials
of gw and gu (``backend="triton"``).

Both ops are ratios of *decayed sums* (``wkv/__init__.py``)::

    y_t = [sum_{i in side(t)} e^{k_i - d_ti w} v_i + e^{u + k_t} v_t] / [the same with v = 1],
    d_ti = |t - i| - 1,

over the past (``i < t``, uni_wkv) or both sides (bi_wkv). The backward needs the transposed sums
(the same over the other side; bi_wkv's is symmetric) of ``alpha = gy / den`` and ``beta = -gy y / den``
and, for ``w``, their first moments (``M(x)_i = sum_t d_ti e^{-d_ti w} x_t``)::

    gv = e^k S^T(alpha),  gk = v gv + e^k S^T(beta),  gu = sum e^{u + k} (v alpha + beta),
    gw = -sum e^k (v M^T(alpha) + M^T(beta))

Anchored log-space sums (no global maximum, no decay factor, no overflow at any span)
-------------------------------------------------------------------------------------
A term ``x_i`` with log-weight ``kappa_i`` (``k_i`` forward; ``-log den_i`` backward, so that the
term is ``gy_i / den_i``) enters the past sum at position ``t`` as ``e^{kappa_i - (t - 1 - i) w} x_i``
``= e^{-(t - 1) w} e^{kappa_i + i w} x_i``: apart from a factor of the position alone, every term
keeps the same weight at every position. A state is therefore a sum ``s`` of terms scaled
relative to one reference token ``(kappa_r, r)``, the heaviest so far: a new token, or a whole other
state, merges with ``delta = (kappa_i - kappa_r) + (i - r) w`` (``-(i - r) w`` on the future side) as
``s e^{-delta} + x`` when it is heavier (it becomes the reference), else ``s + x e^{delta}``. Every
exponent is <= 0, so nothing overflows whatever ``|w| T`` and the spread of ``k``; a term underflows
only when ``e^{-88}`` (float32) below the heaviest, where it is negligible. Exponents are formed
from differences of keys and of integer positions (``(i - r) w``), as exact as the previous
formulation's ``e^{-d w}``. Moments need no decay either: crossing one token adds ``s`` to the moment
sum ``mo`` (every distance grows by one), crossing ``L`` tokens adds ``L s``.

Three kernels, chunk-parallel over (T / BLOCK_T, C / BLOCK_C, B); a program loads its chunk's tokens
once, as (BLOCK_T, BLOCK_C) tiles, and its sweeps take them a row at a time:

1. ``sweep`` (summaries): each chunk sums its own tokens, one after another, into its state on
   each side (with moments in the backward);
2. ``scan`` (up, then down): a hierarchical scan over the chunk states, ``GROUP`` at a time per
   program (``log_GROUP(T / BLOCK_T)`` levels up and down, every level parallel over its groups),
   turns each summary into the state entering its chunk from either side;
3. ``sweep`` (finish): each chunk sweeps its tokens again from its entering states and writes its
   outputs. bi_wkv sweeps the future first, keeping each token's future state in a (BLOCK_T,
   BLOCK_C) register tile, then the past, finishing each token.

Each token costs two exponentials per side and state (its merge) and three for its output, all of
differences: no (BLOCK_T, BLOCK_T) tile of weights and no decay factor ``e^{-d w}`` is ever formed.
Accumulation is in the dtype of ``w`` (the dispatch's ``accumulation_dtype``: float64 where the
rounding of ``(i - r) w`` would exceed float32's budget); k, v and gy are loaded in their own dtype
(float32, float16, bfloat16 or float64) and converted in registers. On CUDA tensors the kernels are
compiled; on CPU tensors they run in Triton's interpreter (NumPy) when ``TRITON_INTERPRET=1`` was set
at process start, for verification only: it is slow.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os

import torch

BLOCK_T = 32          # tokens per chunk, swept one after another by one program
BLOCK_C = 16          # channels per program
GROUP = 16            # chunk states combined per program and level of the boundary scan


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
    """The kernels (``sweep``, ``scan``), compiled (``"cuda"``) or interpreted
    (``"cpu"``), made on first use."""
    if kind in _kernels:
        return _kernels[kind]
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    # A state's fields, each a (2 sides, R rows, N items, C) slab of the state buffer: the reference
    # token's key and position, the sums of the two values, and (MOMENT) their first moments.
    # The merge of a token (``sweep``) and of a state (``scan``) is written in each kernel: Triton's
    # interpreter cannot call a jit helper defined here (it resolves names in the module's globals).
    def sweep(P0, P1, P2, P3, P4, w, u, STATE, OUT0, OUT1, PART, R, T, C, NC,
              BACKWARD: tl.constexpr, PAST: tl.constexpr, FUTURE: tl.constexpr, MOMENT: tl.constexpr,
              FINISH: tl.constexpr, HALF: tl.constexpr, BT: tl.constexpr, BC: tl.constexpr):
        # Forward: P0 = k, P1 = v; finish writes OUT0 = y, OUT1 = log den.
        # Backward: P0 = log den, P1 = gy, P2 = y (a token's log-weight is -log den, its values gy
        # and -gy y), P3 = k, P4 = v; finish writes OUT0 = gk, OUT1 = gv, PART = (gw, gu) per chunk.
        chunk, cblock, row = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        start = chunk * BT
        count = tl.minimum(T - start, BT)                    # the chunk's tokens (its last may be short)
        c = cblock * BC + tl.arange(0, BC)
        cmask = c < C
        wc = tl.load(w + c, mask=cmask, other=0.0)
        zero = tl.zeros([BC], dtype=wc.dtype)
        base = row.to(tl.int64) * T * C                      # int64: B T C passes 2^31 at 4 x 1024^2 x 384
        field = R * NC * C
        slot = row.to(tl.int64) * NC * C + chunk * C + c
        # The chunk's tokens, loaded once as (BT, BC) tiles; the sweeps take one row at a time.
        tile_rows = tl.arange(0, BT)[:, None]
        tokens = start + tl.arange(0, BT)
        tile_mask = (tokens < T)[:, None] & cmask[None, :]
        tile = base + tokens[:, None] * C + c[None, :]
        if BACKWARD:
            KEY = -tl.load(P0 + tile, mask=tile_mask, other=0.0).to(wc.dtype)
            X0 = tl.load(P1 + tile, mask=tile_mask, other=0.0).to(wc.dtype)
            X1 = -X0 * tl.load(P2 + tile, mask=tile_mask, other=0.0).to(wc.dtype)
            if FINISH:
                KT = tl.load(P3 + tile, mask=tile_mask, other=0.0).to(wc.dtype)
                VT = tl.load(P4 + tile, mask=tile_mask, other=0.0).to(wc.dtype)
        else:
            KEY = tl.load(P0 + tile, mask=tile_mask, other=0.0).to(wc.dtype)
            X0 = tl.load(P1 + tile, mask=tile_mask, other=0.0).to(wc.dtype)
        if FINISH:
            uc = tl.load(u + c, mask=cmask, other=0.0)
        if BACKWARD and FINISH:
            gw_acc = zero
            gu_acc = zero
        if PAST and FUTURE and FINISH:                       # each token's future state (bi_wkv)
            TK = tl.zeros([BT, BC], dtype=wc.dtype)
            TP = TK
            T0 = TK
            T1 = TK
            TM0 = TK
            TM1 = TK
        # Phase 0 (bi_wkv only): the future, from the chunk's end back to its start; the finish keeps
        # each token's future state in the tiles. Phase 1: the main side, the past (ascending) or,
        # for the backward of uni_wkv, the future; the finish writes each token's outputs.
        for phase in tl.static_range(2):
            if phase == 1 or (PAST and FUTURE):
                future = (phase == 0) or (not PAST)
                sign = -1.0 if future else 1.0
                side = STATE + (4 + 2 * MOMENT) * field if future else STATE
                if FINISH:
                    kr = tl.load(side + slot, mask=cmask, other=-1e30)
                    pr = tl.load(side + field + slot, mask=cmask, other=0.0)
                    s0 = tl.load(side + 2 * field + slot, mask=cmask, other=0.0)
                    s1 = tl.load(side + 3 * field + slot, mask=cmask, other=0.0)
                    if MOMENT:
                        m0 = tl.load(side + 4 * field + slot, mask=cmask, other=0.0)
                        m1 = tl.load(side + 5 * field + slot, mask=cmask, other=0.0)
                else:
                    kr = zero - 1e30
                    pr = zero
                    s0 = zero
                    s1 = zero
                    m0 = zero
                    m1 = zero
                i = 0
                while i < count:
                    if future:
                        j = count - 1 - i
                    else:
                        j = i
                    t = start + j
                    tf = t.to(wc.dtype)
                    offs = base + t * C + c
                    here = tile_rows == j
                    key = tl.sum(tl.where(here, KEY, 0.0), axis=0)
                    x0 = tl.sum(tl.where(here, X0, 0.0), axis=0)
                    if BACKWARD:
                        x1 = tl.sum(tl.where(here, X1, 0.0), axis=0)
                    else:
                        x1 = zero + 1.0
                    if FINISH and phase == 0:                # token t's future state
                        TK = tl.where(here, kr[None, :], TK)
                        TP = tl.where(here, pr[None, :], TP)
                        T0 = tl.where(here, s0[None, :], T0)
                        T1 = tl.where(here, s1[None, :], T1)
                        if MOMENT:
                            TM0 = tl.where(here, m0[None, :], TM0)
                            TM1 = tl.where(here, m1[None, :], TM1)
                    if FINISH and phase == 1:
                        # The token's three parts: the main side's state, the other side's (bi_wkv:
                        # the tile; else none) and its own term e^{u + key} x. A past reference r
                        # weighs e^{kr - (t-1-r) w} at t, a future one e^{kr - (r-t-1) w}: each
                        # log-weight is taken relative to the largest of the three keys first (key
                        # differences are exact where the weights are close).
                        if PAST and FUTURE:
                            fk = tl.sum(tl.where(here, TK, 0.0), axis=0)
                            fp = tl.sum(tl.where(here, TP, 0.0), axis=0)
                            f0 = tl.sum(tl.where(here, T0, 0.0), axis=0)
                            f1 = tl.sum(tl.where(here, T1, 0.0), axis=0)
                        else:
                            fk = zero - 1e30
                            fp = zero
                            f0 = zero
                            f1 = zero
                        ref = tl.maximum(tl.maximum(kr, fk), key)
                        main = (kr - ref) + (1.0 - sign * (tf - pr)) * wc
                        other = (fk - ref) + (1.0 + tf - fp) * wc
                        own = (key - ref) + uc
                        top = tl.maximum(tl.maximum(main, other), own)
                        e_main = tl.exp(main - top)
                        e_other = tl.exp(other - top)
                        e_self = tl.exp(own - top)
                        sum0 = s0 * e_main + f0 * e_other + x0 * e_self
                        sum1 = s1 * e_main + f1 * e_other + x1 * e_self
                        if BACKWARD:
                            moment0 = m0 * e_main
                            moment1 = m1 * e_main
                            if PAST and FUTURE:
                                moment0 += tl.sum(tl.where(here, TM0, 0.0), axis=0) * e_other
                                moment1 += tl.sum(tl.where(here, TM1, 0.0), axis=0) * e_other
                            kt = tl.sum(tl.where(here, KT, 0.0), axis=0)
                            vt = tl.sum(tl.where(here, VT, 0.0), axis=0)
                            # e^{k_t} times the sums' scale e^{ref + top}
                            scale = tl.exp(kt + ref + top)
                            gv = scale * sum0
                            gk = vt * gv + scale * sum1
                            if HALF:                         # (Triton's interpreter casts float64 to
                                gv = gv.to(tl.float32)       # 16 bits wrongly; compiled code does not)
                                gk = gk.to(tl.float32)
                            tl.store(OUT1 + offs, gv, mask=cmask)
                            tl.store(OUT0 + offs, gk, mask=cmask)
                            gw_acc -= scale * (vt * moment0 + moment1)
                            gu_acc += tl.exp(uc + kt + key) * (x0 * vt + x1)
                        else:
                            tl.store(OUT0 + offs, sum0 / sum1, mask=cmask)
                            tl.store(OUT1 + offs, ref + top + tl.log(sum1), mask=cmask)
                    if MOMENT:                               # every distance grows by one
                        m0 += s0
                        m1 += s1
                    delta = (key - kr) + sign * (tf - pr) * wc
                    heavier = delta > 0
                    old = tl.exp(tl.where(heavier, -delta, 0.0))
                    new = tl.exp(tl.where(heavier, 0.0, delta))
                    s0 = s0 * old + x0 * new
                    s1 = s1 * old + x1 * new
                    if MOMENT:
                        m0 = m0 * old
                        m1 = m1 * old
                    kr = tl.where(heavier, key, kr)
                    pr = tl.where(heavier, tf, pr)
                    i += 1
                if not FINISH:
                    tl.store(side + slot, kr, mask=cmask)
                    tl.store(side + field + slot, pr, mask=cmask)
                    tl.store(side + 2 * field + slot, s0, mask=cmask)
                    tl.store(side + 3 * field + slot, s1, mask=cmask)
                    if MOMENT:
                        tl.store(side + 4 * field + slot, m0, mask=cmask)
                        tl.store(side + 5 * field + slot, m1, mask=cmask)
        if FINISH and BACKWARD:
            tl.store(PART + slot, gw_acc, mask=cmask)
            tl.store(PART + field + slot, gu_acc, mask=cmask)

    def scan(STATE, UP, w, R, C, N, NUP, L, DOWN: tl.constexpr, HAS_UP: tl.constexpr, SIDE: tl.constexpr,
             MOMENT: tl.constexpr, G: tl.constexpr, BC: tl.constexpr):
        # One group of G items of STATE (chunks, or groups of the level below: L tokens each but
        # perhaps the last, which nothing crosses) merged in token order on SIDE (0: past, 1:
        # future). Up (DOWN false): the group's summary is written to UP, an item of the next
        # level. Down: in place, each item's summary becomes the state entering it, starting from
        # the state entering the group (UP; none at the top).
        group, cblock, row = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        c = cblock * BC + tl.arange(0, BC)
        cmask = c < C
        wc = tl.load(w + c, mask=cmask, other=0.0)
        zero = tl.zeros([BC], dtype=wc.dtype)
        first = group * G
        count = tl.minimum(N - first, G)
        sign = 1.0 if SIDE == 0 else -1.0
        n_field = R * N * C
        up_field = R * NUP * C
        items = STATE + SIDE * (4 + 2 * MOMENT) * n_field + row.to(tl.int64) * N * C + c
        up = UP + SIDE * (4 + 2 * MOMENT) * up_field + row.to(tl.int64) * NUP * C + group * C + c
        kr = zero - 1e30
        pr = zero
        s0 = zero
        s1 = zero
        m0 = zero
        m1 = zero
        if DOWN and HAS_UP:
            kr = tl.load(up, mask=cmask, other=-1e30)
            pr = tl.load(up + up_field, mask=cmask, other=0.0)
            s0 = tl.load(up + 2 * up_field, mask=cmask, other=0.0)
            s1 = tl.load(up + 3 * up_field, mask=cmask, other=0.0)
            if MOMENT:
                m0 = tl.load(up + 4 * up_field, mask=cmask, other=0.0)
                m1 = tl.load(up + 5 * up_field, mask=cmask, other=0.0)
        i = 0
        while i < count:
            if SIDE == 0:
                item = first + i
            else:
                item = first + count - 1 - i
            at = items + item * C
            ki = tl.load(at, mask=cmask, other=-1e30)
            pi = tl.load(at + n_field, mask=cmask, other=0.0)
            i0 = tl.load(at + 2 * n_field, mask=cmask, other=0.0)
            i1 = tl.load(at + 3 * n_field, mask=cmask, other=0.0)
            if MOMENT:
                im0 = tl.load(at + 4 * n_field, mask=cmask, other=0.0)
                im1 = tl.load(at + 5 * n_field, mask=cmask, other=0.0)
            if DOWN:                                     # the state entering this item
                tl.store(at, kr, mask=cmask)
                tl.store(at + n_field, pr, mask=cmask)
                tl.store(at + 2 * n_field, s0, mask=cmask)
                tl.store(at + 3 * n_field, s1, mask=cmask)
                if MOMENT:
                    tl.store(at + 4 * n_field, m0, mask=cmask)
                    tl.store(at + 5 * n_field, m1, mask=cmask)
            if MOMENT:                                   # the state so far crosses the item
                m0 += L * s0
                m1 += L * s1
            delta = (ki - kr) + sign * (pi - pr) * wc
            heavier = delta > 0
            old = tl.exp(tl.where(heavier, -delta, 0.0))
            new = tl.exp(tl.where(heavier, 0.0, delta))
            s0 = s0 * old + i0 * new
            s1 = s1 * old + i1 * new
            if MOMENT:
                m0 = m0 * old + im0 * new
                m1 = m1 * old + im1 * new
            kr = tl.where(heavier, ki, kr)
            pr = tl.where(heavier, pi, pr)
            i += 1
        if not DOWN:
            tl.store(up, kr, mask=cmask)
            tl.store(up + up_field, pr, mask=cmask)
            tl.store(up + 2 * up_field, s0, mask=cmask)
            tl.store(up + 3 * up_field, s1, mask=cmask)
            if MOMENT:
                tl.store(up + 4 * up_field, m0, mask=cmask)
                tl.store(up + 5 * up_field, m1, mask=cmask)

    wrap = InterpretedFunction if kind == "cpu" else JITFunction
    _kernels[kind] = tuple(wrap(fn) for fn in (sweep, scan))
    return _kernels[kind]


# The passes of the ops, as (BACKWARD, PAST, FUTURE) of ``sweep`` (MOMENT = BACKWARD): bi_wkv forward,
# uni_wkv forward, bi_wkv backward (symmetric), uni_wkv backward (the transposed sums: the future).
PASSES = ((False, True, True), (False, True, False), (True, True, True), (True, False, True))
SIZES = ("R", "T", "C", "NC", "N", "NUP", "L")      # the kernels' integer arguments; the others are pointers


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def compile_ahead(capability: int = 90) -> list[str]:
    """Compile every kernel variant the ops launch, float32 and float64 sums (inputs of the same
    type), for an NVIDIA GPU of compute ``capability`` (90: H100/H200, 80: A100) without one:
    Triton's front end, LLVM and its bundled ptxas, so that a machine with no GPU catches what would
    fail to build on one. Needs a process started without TRITON_INTERPRET (the interpreter replaces
    the language's own jit functions). Returns what it built."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    target = GPUTarget("cuda", capability, 32)
    sweep, scan = _build("cuda")
    variants = []
    for backward, past, future in PASSES:
        for finish in (False, True):
            variants.append((sweep, dict(BACKWARD=backward, PAST=past, FUTURE=future, MOMENT=backward,
                                         FINISH=finish, HALF=False, BT=BLOCK_T, BC=BLOCK_C)))
    for side in (0, 1):
        for moment in (False, True):
            for down, has_up in ((False, False), (True, False), (True, True)):
                variants.append((scan, dict(DOWN=down, HAS_UP=has_up, SIDE=side, MOMENT=moment, G=GROUP, BC=BLOCK_C)))
    built = []
    for dtype in ("fp32", "fp64"):
        for kernel, constants in variants:
            signature = {name: "constexpr" if name in constants else "i32" if name in SIZES else f"*{dtype}"
                         for name in kernel.arg_names}
            compiled = triton.compile(ASTSource(kernel, signature, constexprs=constants), target=target)
            assert compiled.asm.get("cubin"), f"{kernel.__name__}: no cubin"
            flags = ", ".join(f"{k.lower()}={v}" for k, v in constants.items() if k not in ("BT", "BC", "G"))
            built.append(f"{kernel.__name__}[{dtype}, {flags}]")
    return built


def _scan_traffic(rows: int, items: int, channels: int, fields: int, sides: int, itemsize: int) -> tuple[int, int]:
    """(read, written) bytes of ``_scan`` over ``items`` states per row and side, every level."""
    read = written = 0
    level = rows * channels                                    # one state field of one item, all rows
    while True:
        groups = _cdiv(items, GROUP)
        # scan up: the items and w per program in, one state per group out; scan down: the items
        # (and the level above's states) in and out, w per program
        if groups > 1:
            read += sides * (items * fields + groups) * level
            written += sides * groups * fields * level
        read += sides * (items * fields + groups * (fields if groups > 1 else 0) + groups) * level
        written += sides * items * fields * level
        if groups == 1:
            break
        items = groups
    return itemsize * read, itemsize * written


def traffic(batch: int, tokens: int, channels: int, causal: bool, input_itemsize: int,
            itemsize: int) -> dict[str, tuple[int, int]]:
    """{kernel: (bytes read, bytes written)} of one forward and one backward, from the kernels' grids
    and loops: a program loads and stores only its unmasked elements, so each total is the elements
    a program touches times the programs. k, v, gk and gv move ``input_itemsize`` bytes each, y and gy
    at least 4 (float32 for half inputs), log den, the states, w and u ``itemsize`` (the sums'). A
    program loads its chunk's tokens once, whatever the sweeps. Tested against Triton's interpreter
    with its loads and stores counted."""
    data = batch * tokens * channels                           # one B x T x C tensor
    out = max(input_itemsize, 4)                               # y and gy
    per_chunk = batch * _cdiv(tokens, BLOCK_T) * channels      # one state field; w (or u) per program
    sides = 1 if causal else 2
    count = {}
    # forward: each kernel reads k and v; the finish writes y and log den
    count["forward summaries"] = (2 * data * input_itemsize + per_chunk * itemsize,
                                  sides * 4 * per_chunk * itemsize)
    count["forward scan"] = _scan_traffic(batch, _cdiv(tokens, BLOCK_T), channels, 4, sides, itemsize)
    count["forward finish"] = (2 * data * input_itemsize + (2 + sides * 4) * per_chunk * itemsize,
                               data * (out + itemsize))
    # backward: each kernel reads log den, gy and y; the finish also k and v, and writes gk, gv and
    # the (gw, gu) partials of each chunk
    step = data * (itemsize + 2 * out)
    count["backward summaries"] = (step + per_chunk * itemsize, sides * 6 * per_chunk * itemsize)
    count["backward scan"] = _scan_traffic(batch, _cdiv(tokens, BLOCK_T), channels, 6, sides, itemsize)
    count["backward finish"] = (step + 2 * data * input_itemsize + (2 + sides * 6) * per_chunk * itemsize,
                                2 * data * input_itemsize + 2 * per_chunk * itemsize)
    return count


_traffic_log: list | None = None


@contextlib.contextmanager
def counting_traffic():
    """Inside the block, the ops on meta tensors launch nothing and append their kernels' ``traffic``
    (one entry per forward, one per backward) to the list yielded (``benchmark.measure.traffic``)."""
    global _traffic_log
    previous, _traffic_log = _traffic_log, []
    try:
        yield _traffic_log
    finally:
        _traffic_log = previous


def _log_traffic(direction: str, k: torch.Tensor, causal: bool, itemsize: int) -> None:
    if _traffic_log is None:
        raise RuntimeError("the triton WKV kernels run on meta tensors only to count their traffic "
                           "(inside triton_kernel.counting_traffic())")
    counted = traffic(*k.shape, causal, k.element_size(), itemsize)
    _traffic_log.append({name: rw for name, rw in counted.items() if name.startswith(direction)})


def _scan(state: torch.Tensor, w: torch.Tensor, items: int, length: int, sides: list[int], moment: bool) -> None:
    """Turn the ``items`` summaries of ``state`` (``length`` tokens each, but perhaps the last) into
    the states entering them, on each of ``sides``: ``GROUP`` items per program, recursively."""
    scan = _build(state.device.type)[1]
    rows, channels = state.shape[2], state.shape[4]
    groups = _cdiv(items, GROUP)
    grid = (groups, _cdiv(channels, BLOCK_C), rows)
    flags = dict(MOMENT=moment, G=GROUP, BC=BLOCK_C)
    upper = state
    if groups > 1:
        upper = state.new_empty(2, state.shape[1], rows, groups, channels)
        for side in sides:
            scan[grid](state, upper, w, rows, channels, items, groups, length, DOWN=False, HAS_UP=False, SIDE=side,
                       **flags)
        _scan(upper, w, groups, length * GROUP, sides, moment)
    for side in sides:
        scan[grid](state, upper, w, rows, channels, items, groups, length, DOWN=True, HAS_UP=groups > 1, SIDE=side,
                   **flags)


def _sweeps(inputs: tuple, w, u, outputs: tuple, part, shape, backward: bool, past: bool, future: bool) -> None:
    """Summaries, scan and finish of one pass (forward or backward) on its chunks."""
    batch, tokens, channels = shape
    chunks = _cdiv(tokens, BLOCK_T)
    sweep = _build(w.device.type)[0]
    state = w.new_empty(2, 4 + 2 * backward, batch, chunks, channels)
    grid = (chunks, _cdiv(channels, BLOCK_C), batch)
    inputs = inputs + (inputs[0],) * (5 - len(inputs))   # the forward's k, v padded to the 5 pointers
    half = outputs[0].element_size() < 4               # gk, gv in float16 or bfloat16
    flags = dict(BACKWARD=backward, PAST=past, FUTURE=future, MOMENT=backward, HALF=half, BT=BLOCK_T, BC=BLOCK_C)
    with torch.cuda.device(w.device) if w.device.type == "cuda" else contextlib.nullcontext():
        sweep[grid](*inputs, w, u, state, *outputs, part, batch, tokens, channels, chunks, FINISH=False, **flags)
        _scan(state, w, chunks, BLOCK_T, [side for side, on in ((0, past), (1, future)) if on], backward)
        sweep[grid](*inputs, w, u, state, *outputs, part, batch, tokens, channels, chunks, FINISH=True, **flags)


class TritonWKV(torch.autograd.Function):
    """``y`` from ``k, v`` (their own dtype) and ``w, u`` (the sums' dtype); keeps ``y`` and ``log den``
    for the backward."""

    @staticmethod
    def forward(ctx, w, u, k, v, causal: bool):
        # y in float32 at least (the backward reads it), log den in the sums' dtype
        y = torch.empty(k.shape, dtype=torch.promote_types(v.dtype, torch.float32), device=k.device)
        log_den = torch.empty(k.shape, dtype=w.dtype, device=k.device)
        if k.device.type == "meta":                         # counted, not run (``counting_traffic``)
            _log_traffic("forward", k, causal, w.element_size())
        else:
            _sweeps((k, v), w, u, (y, log_den), y, k.shape, backward=False, past=True, future=not causal)
        ctx.save_for_backward(w, u, k, v, y, log_den)
        ctx.causal = causal
        return y

    @staticmethod
    def backward(ctx, gy):
        w, u, k, v, y, log_den = ctx.saved_tensors
        gy = gy.to(y.dtype).contiguous()
        gk, gv = torch.empty_like(k), torch.empty_like(v)
        batch, tokens, channels = k.shape
        part = w.new_empty(2, batch, _cdiv(tokens, BLOCK_T), channels)     # gw, gu per chunk
        if k.device.type == "meta":
            _log_traffic("backward", k, ctx.causal, w.element_size())
        else:
            # the transposed sums: bi_wkv's weights are symmetric, uni_wkv's past becomes the future
            _sweeps((log_den, gy, y, k, v), w, u, (gk, gv), part, k.shape, backward=True,
                    past=not ctx.causal, future=True)
        partials = part.sum(dim=(1, 2))
        return partials[0], partials[1], gk, gv, None


def wkv(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
        acc: torch.dtype) -> torch.Tensor:
    """bi_wkv (``causal=False``) or uni_wkv on the Triton kernels, accumulating in ``acc`` (chosen
    by ``wkv.accumulation_dtype``); k and v are read in their own dtype. ``(B, T, C)`` in ``v.dtype``."""
    w, u = (t.to(acc).contiguous() for t in (w, u))
    return TritonWKV.apply(w, u, k.contiguous(), v.contiguous(), causal).to(v.dtype)
