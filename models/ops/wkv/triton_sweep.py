"""The Triton WKV kernels themselves (``sweep`` and ``scan``) and their jit helpers; the host code,
the algorithm and its notation are in ``triton_kernel.py``, which imports this module on first use
(it imports Triton). Under ``TRITON_INTERPRET=1`` at process start ``triton.jit`` makes them
interpreted functions, else compiled ones.

A *state* is a sum over tokens anchored at its heaviest token (key ``kr``, position ``pr``): its two
value sums ``s0, s1`` and, in the backward, their first moments ``m0, m1``. A state buffer holds, per
side (0: past, 1: future), one field after the other, each a (rows, chunks, C) slab.
"""
import triton
import triton.language as tl


@triton.jit
def _row(tile, here):
    """Row ``here`` (a (BT, 1) mask) of a (BT, BC) register tile, as a (BC,) vector."""
    return tl.sum(tl.where(here, tile, 0.0), axis=0)


@triton.jit
def _narrowed(x, HALF: tl.constexpr):
    """``x`` ready to store in a 16-bit output (HALF 1: float16, 2: bfloat16): float32, and for
    bfloat16 already rounded to the nearest bfloat16 (ties to even), so that the store only drops zero
    bits. Compiled code would round either way; Triton's interpreter converts float64 to 16 bits
    wrongly and truncates float32 to bfloat16. A NaN stays a NaN (its sign and high payload kept,
    made quiet): the rounding's carry would turn 0x7FFFFFFF into -0.0 and 0x7F800001 into Inf,
    hiding a diverging run from the health checks; +-Inf stay, and overflow rounds to Inf."""
    x = x.to(tl.float32)
    if HALF == 2:
        bits = x.to(tl.uint32, bitcast=True)
        rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        quiet_nan = ((bits >> 16) | 0x40) << 16
        x = tl.where(x != x, quiet_nan, rounded).to(tl.float32, bitcast=True)
    return x


@triton.jit
def _empty_state(like):
    """A state of no tokens (an anchor lighter than any token), shaped like ``like``."""
    zero = tl.zeros_like(like)
    return zero - 1e30, zero, zero, zero, zero, zero


@triton.jit
def _load_state(at, stride, mask, MOMENT: tl.constexpr):
    """A state's fields (kr, pr, s0, s1, m0, m1) from ``at``, ``stride`` apart; masked lanes and the
    moments without MOMENT are an empty state's."""
    kr = tl.load(at, mask=mask, other=-1e30)
    pr = tl.load(at + stride, mask=mask, other=0.0)
    s0 = tl.load(at + 2 * stride, mask=mask, other=0.0)
    s1 = tl.load(at + 3 * stride, mask=mask, other=0.0)
    m0 = tl.zeros_like(s0)
    m1 = m0
    if MOMENT:
        m0 = tl.load(at + 4 * stride, mask=mask, other=0.0)
        m1 = tl.load(at + 5 * stride, mask=mask, other=0.0)
    return kr, pr, s0, s1, m0, m1


@triton.jit
def _store_state(at, stride, mask, kr, pr, s0, s1, m0, m1, MOMENT: tl.constexpr):
    tl.store(at, kr, mask=mask)
    tl.store(at + stride, pr, mask=mask)
    tl.store(at + 2 * stride, s0, mask=mask)
    tl.store(at + 3 * stride, s1, mask=mask)
    if MOMENT:
        tl.store(at + 4 * stride, m0, mask=mask)
        tl.store(at + 5 * stride, m1, mask=mask)


@triton.jit
def _merge(kr, pr, s0, s1, m0, m1, key, pos, x0, x1, n0, n1, sign, w, MOMENT: tl.constexpr):
    """The state (kr, pr, s0, s1, m0, m1) absorbs a token or a state (key, pos, x0, x1, n0, n1) on the
    side ``sign`` (1: past, -1: future). The heavier of the two anchors the result; the other is
    scaled by e^{-|delta|}, so every exponent is <= 0."""
    delta = (key - kr) + sign * (pos - pr) * w
    heavier = delta > 0
    old = tl.exp(tl.where(heavier, -delta, 0.0))
    new = tl.exp(tl.where(heavier, 0.0, delta))
    s0 = s0 * old + x0 * new
    s1 = s1 * old + x1 * new
    if MOMENT:
        m0 = m0 * old + n0 * new
        m1 = m1 * old + n1 * new
    return tl.where(heavier, key, kr), tl.where(heavier, pos, pr), s0, s1, m0, m1


@triton.jit
def _shares(kr, pr, fk, fp, key, t, sign, w, u):
    """Token ``t``'s three parts: the main side's state (anchor kr, pr), the future's (fk, fp; none:
    fk = -1e30) and its own term e^{u + key}. A past anchor r weighs e^{kr - (t-1-r) w} at t, a future
    one e^{kr - (r-t-1) w}. Returns the log of the common scale and each part's factor below it: the
    log-weights are taken relative to the largest key first (key differences are exact where the
    weights are close), then to the largest log-weight."""
    ref = tl.maximum(tl.maximum(kr, fk), key)
    main = (kr - ref) + (1.0 - sign * (t - pr)) * w
    other = (fk - ref) + (1.0 + t - fp) * w
    own = (key - ref) + u
    top = tl.maximum(tl.maximum(main, other), own)
    return ref + top, tl.exp(main - top), tl.exp(other - top), tl.exp(own - top)


@triton.jit
def _side(KEYS, X0S, X1S, KT, VT, TK, TP, T0, T1, TM0, TM1, YT, LT, gw, gu, side, field, slot, cmask, start,
          count, tile_rows, base, C, c, wc, uc, OUT0, OUT1, FUTURE: tl.constexpr, FORWARD: tl.constexpr,
          SUMMARY: tl.constexpr, KEEP: tl.constexpr, OUTPUT: tl.constexpr, OTHER: tl.constexpr,
          TILES: tl.constexpr, HALF: tl.constexpr):
    """One sweep over a chunk's tokens on one side (FUTURE: from its end), of the forward's terms
    (FORWARD: log-weight k, values v and 1) or the backward's (log-weight -log den, values gy and
    -gy y, with moments), from the rows of the (BT, BC) tiles KEYS, X0S, X1S. SUMMARY: from nothing,
    storing the chunk's state at ``side``. Otherwise from the state entering the chunk, read at
    ``side``; KEEP: each token's state goes to the tiles TK ... TM1 (a future sweep, for the past
    sweep that follows); OUTPUT: each token's output, with the future kept in the tiles where OTHER:
    the forward's y (stored to OUT0, or with log den into the tiles YT, LT where TILES), or the
    backward's gk, gv (OUT0, OUT1) and gw, gu summed over the chunk. Returns the tiles and sums."""
    zero = tl.zeros_like(wc)
    sign = -1.0 if FUTURE else 1.0
    if SUMMARY:
        kr, pr, s0, s1, m0, m1 = _empty_state(wc)
    else:
        kr, pr, s0, s1, m0, m1 = _load_state(side + slot, field, cmask, not FORWARD)
    i = 0
    while i < count:
        if FUTURE:
            j = count - 1 - i
        else:
            j = i
        t = start + j
        tf = t.to(wc.dtype)
        here = tile_rows == j
        offsets = base + t * C + c
        key = _row(KEYS, here)
        x0 = _row(X0S, here)
        if FORWARD:
            x1 = zero + 1.0
        else:
            x1 = _row(X1S, here)
        if KEEP:                                         # token t's state
            TK = tl.where(here, kr[None, :], TK)
            TP = tl.where(here, pr[None, :], TP)
            T0 = tl.where(here, s0[None, :], T0)
            T1 = tl.where(here, s1[None, :], T1)
            if not FORWARD:
                TM0 = tl.where(here, m0[None, :], TM0)
                TM1 = tl.where(here, m1[None, :], TM1)
        if OUTPUT:
            fk = zero - 1e30
            fp = zero
            f0 = zero
            f1 = zero
            if OTHER:
                fk = _row(TK, here)
                fp = _row(TP, here)
                f0 = _row(T0, here)
                f1 = _row(T1, here)
            log_scale, e_main, e_other, e_self = _shares(kr, pr, fk, fp, key, tf, sign, wc, uc)
            sum0 = s0 * e_main + f0 * e_other + x0 * e_self
            sum1 = s1 * e_main + f1 * e_other + x1 * e_self
            if FORWARD:
                if TILES:
                    YT = tl.where(here, (sum0 / sum1)[None, :], YT)
                    LT = tl.where(here, (log_scale + tl.log(sum1))[None, :], LT)
                else:
                    y = sum0 / sum1
                    if HALF:
                        y = _narrowed(y, HALF)
                    tl.store(OUT0 + offsets, y, mask=cmask)
            else:
                moment0 = m0 * e_main
                moment1 = m1 * e_main
                if OTHER:
                    moment0 += _row(TM0, here) * e_other
                    moment1 += _row(TM1, here) * e_other
                kt = _row(KT, here)
                vt = _row(VT, here)
                scale = tl.exp(kt + log_scale)           # e^{k_t} times the sums' scale
                gv = scale * sum0
                gk = vt * gv + scale * sum1
                if HALF:
                    gv = _narrowed(gv, HALF)
                    gk = _narrowed(gk, HALF)
                tl.store(OUT0 + offsets, gk, mask=cmask)
                tl.store(OUT1 + offsets, gv, mask=cmask)
                gw -= scale * (vt * moment0 + moment1)
                gu += tl.exp(uc + kt + key) * (x0 * vt + x1)
        if not FORWARD:                                  # every distance grows by one
            m0 += s0
            m1 += s1
        kr, pr, s0, s1, m0, m1 = _merge(kr, pr, s0, s1, m0, m1, key, tf, x0, x1, zero, zero, sign, wc,
                                        not FORWARD)
        i += 1
    if SUMMARY:
        _store_state(side + slot, field, cmask, kr, pr, s0, s1, m0, m1, not FORWARD)
    return TK, TP, T0, T1, TM0, TM1, YT, LT, gw, gu


@triton.jit
def sweep(K, V, GY, w, u, FSTATE, BSTATE, OUT0, OUT1, PART, R, T, C, NC,
          BACKWARD: tl.constexpr, CAUSAL: tl.constexpr, FINISH: tl.constexpr, HALF: tl.constexpr,
          BT: tl.constexpr, BC: tl.constexpr):
    """One chunk of BT tokens and BC channels of one row, its tiles of k, v (and gy) loaded once,
    swept token by token (``_side``): the forward's future (bi_wkv) and past, then (BACKWARD) the
    backward's future and past (bi_wkv). Summaries (FINISH false): the forward's states into FSTATE,
    or the backward's into BSTATE (its forward sweeps recompute y and log den first). Finish: every
    sweep starts from the state entering the chunk on its side (after the scan) and the last one
    of each direction gives the outputs: y (forward: OUT0), or gk, gv (OUT0, OUT1) and the chunk's
    partials of gw, gu (PART), y and log den being recomputed from FSTATE, never read."""
    chunk, cblock, row = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start = chunk * BT
    count = tl.minimum(T - start, BT)                    # the chunk's tokens (its last may be short)
    c = cblock * BC + tl.arange(0, BC)
    cmask = c < C
    wc = tl.load(w + c, mask=cmask, other=0.0)
    zero = tl.zeros([BC], dtype=wc.dtype)
    uc = zero
    if FINISH or BACKWARD:
        uc = tl.load(u + c, mask=cmask, other=0.0)
    base = row.to(tl.int64) * T * C                      # int64: B T C passes 2^31 at 4 x 1024^2 x 384
    field = R * NC * C                                   # one field of one side of a state buffer
    slot = row.to(tl.int64) * NC * C + chunk * C + c
    tile_rows = tl.arange(0, BT)[:, None]
    tokens = start + tl.arange(0, BT)
    tile_mask = (tokens < T)[:, None] & cmask[None, :]
    tile = base + tokens[:, None] * C + c[None, :]
    KT = tl.load(K + tile, mask=tile_mask, other=0.0).to(wc.dtype)
    VT = tl.load(V + tile, mask=tile_mask, other=0.0).to(wc.dtype)
    TK = tl.zeros([BT, BC], dtype=wc.dtype)              # each token's future state (bi_wkv)
    TP = TK
    T0 = TK
    T1 = TK
    TM0 = TK
    TM1 = TK
    YT = TK                                              # y and log den (backward)
    LT = TK
    gw = zero
    gu = zero
    # the forward: its future (bi_wkv), then its past. A side of FSTATE holds 4 fields, of BSTATE 6
    # (with the moments): triton_kernel.FORWARD_FIELDS, BACKWARD_FIELDS; the future side follows the past.
    if not CAUSAL:
        TK, TP, T0, T1, TM0, TM1, YT, LT, gw, gu = _side(
            KT, VT, VT, KT, VT, TK, TP, T0, T1, TM0, TM1, YT, LT, gw, gu, FSTATE + 4 * field, field, slot, cmask,
            start, count, tile_rows, base, C, c, wc, uc, OUT0, OUT1, FUTURE=True, FORWARD=True,
            SUMMARY=not (FINISH or BACKWARD), KEEP=FINISH or BACKWARD, OUTPUT=False, OTHER=False, TILES=False,
            HALF=HALF)
    TK, TP, T0, T1, TM0, TM1, YT, LT, gw, gu = _side(
        KT, VT, VT, KT, VT, TK, TP, T0, T1, TM0, TM1, YT, LT, gw, gu, FSTATE, field, slot, cmask,
        start, count, tile_rows, base, C, c, wc, uc, OUT0, OUT1, FUTURE=False, FORWARD=True,
        SUMMARY=not (FINISH or BACKWARD), KEEP=False, OUTPUT=FINISH or BACKWARD, OTHER=not CAUSAL,
        TILES=BACKWARD, HALF=HALF)
    if BACKWARD:
        # the backward's terms: log-weight -log den (so that a term is gy / den), values gy, -gy y;
        # the transposed sums: the future (uni_wkv's), then the past (bi_wkv's are symmetric)
        GYT = tl.load(GY + tile, mask=tile_mask, other=0.0).to(wc.dtype)
        KEYS = -LT
        X1S = -GYT * YT
        TK, TP, T0, T1, TM0, TM1, YT, LT, gw, gu = _side(
            KEYS, GYT, X1S, KT, VT, TK, TP, T0, T1, TM0, TM1, YT, LT, gw, gu, BSTATE + 6 * field, field, slot,
            cmask, start, count, tile_rows, base, C, c, wc, uc, OUT0, OUT1, FUTURE=True, FORWARD=False,
            SUMMARY=not FINISH, KEEP=FINISH and not CAUSAL, OUTPUT=FINISH and CAUSAL, OTHER=False, TILES=False,
            HALF=HALF)
        if not CAUSAL:
            TK, TP, T0, T1, TM0, TM1, YT, LT, gw, gu = _side(
                KEYS, GYT, X1S, KT, VT, TK, TP, T0, T1, TM0, TM1, YT, LT, gw, gu, BSTATE, field, slot,
                cmask, start, count, tile_rows, base, C, c, wc, uc, OUT0, OUT1, FUTURE=False, FORWARD=False,
                SUMMARY=not FINISH, KEEP=False, OUTPUT=FINISH, OTHER=True, TILES=False, HALF=HALF)
        if FINISH:
            tl.store(PART + slot, gw, mask=cmask)
            tl.store(PART + field + slot, gu, mask=cmask)


@triton.jit
def scan(STATE, UP, w, R, C, N, NUP, L, DOWN: tl.constexpr, HAS_UP: tl.constexpr, SIDE: tl.constexpr,
         MOMENT: tl.constexpr, G: tl.constexpr, BC: tl.constexpr):
    """One group of G items of STATE (chunks, or groups of the level below: L tokens each but
    perhaps the last, which nothing crosses) merged in token order on SIDE (0: past, 1: future). Up
    (DOWN false): the group's summary is written to UP, an item of the next level. Down: in place,
    each item's summary becomes the state entering it, starting from the state entering the group
    (UP; none at the top)."""
    group, cblock, row = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    c = cblock * BC + tl.arange(0, BC)
    cmask = c < C
    wc = tl.load(w + c, mask=cmask, other=0.0)
    first = group * G
    count = tl.minimum(N - first, G)
    sign = 1.0 if SIDE == 0 else -1.0
    fields = 4 + 2 * MOMENT
    n_field = R * N * C
    up_field = R * NUP * C
    items = STATE + SIDE * fields * n_field + row.to(tl.int64) * N * C + c
    up = UP + SIDE * fields * up_field + row.to(tl.int64) * NUP * C + group * C + c
    kr, pr, s0, s1, m0, m1 = _empty_state(wc)
    if DOWN and HAS_UP:
        kr, pr, s0, s1, m0, m1 = _load_state(up, up_field, cmask, MOMENT)
    i = 0
    while i < count:
        if SIDE == 0:
            item = first + i
        else:
            item = first + count - 1 - i
        at = items + item * C
        ki, pi, i0, i1, im0, im1 = _load_state(at, n_field, cmask, MOMENT)
        if DOWN:                                         # the state entering this item
            _store_state(at, n_field, cmask, kr, pr, s0, s1, m0, m1, MOMENT)
        if MOMENT:                                       # the state so far crosses the item
            m0 += L * s0
            m1 += L * s1
        kr, pr, s0, s1, m0, m1 = _merge(kr, pr, s0, s1, m0, m1, ki, pi, i0, i1, im0, im1, sign, wc, MOMENT)
        i += 1
    if not DOWN:
        _store_state(up, up_field, cmask, kr, pr, s0, s1, m0, m1, MOMENT)
