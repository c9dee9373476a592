"""The Triton WKV kernels themselves (``sweep`` and ``scan``) and their jit helpers; the host code,
the algorithm and its notation are in ``triton_launch.py``, which imports this module on first use
(it imports Triton). Under ``TRITON_INTERPRET=1`` at process start ``triton.jit`` makes them
interpreted functions, else compiled ones.

One channel per lane: every value here is a vector of one warp's lanes, each lane a channel of a
chunk (two chunks of 16 channels per warp, so that C = 48 fills its lanes), and a chunk's tokens
are visited one after another by the same lane (a sub-block's tokens unrolled at compile time,
``tl.static_range``), so a token's work is a handful of scalar operations per lane, with no
reduction, shuffle or barrier. What a later visit needs of each token (its state on
the other side, its y and log den, its future contributions to the gradients) is kept in tuples of
registers, one entry per token of a sub-block of S tokens; the states at the sub-block boundaries
likewise, one entry per sub-block.

A *state* is a tuple ``(kr, pr, s0, s1, m0, m1)``: a sum over tokens anchored at its heaviest token
(key ``kr``, position ``pr``), its two value sums and, in the backward, their first moments. A state
buffer holds, per side (0: past, 1: future), one field after the other, each a (rows, chunks, C) slab.
"""
import triton
import triton.language as tl

NO_KEY = tl.constexpr(-1e30)   # the key of no token: lighter than any, e^{NO_KEY - k} = 0


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
def _empty(like):
    """A state of no tokens (an anchor lighter than any token), shaped like ``like``."""
    zero = tl.zeros_like(like)
    return zero - 1e30, zero, zero, zero, zero, zero


@triton.jit
def _load_state(at, stride, mask, MOMENT: tl.constexpr):
    """A state from ``at``, its fields ``stride`` apart; masked lanes and the moments without MOMENT
    are an empty state's."""
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
def _store_state(at, stride, mask, state, MOMENT: tl.constexpr):
    kr, pr, s0, s1, m0, m1 = state
    tl.store(at, kr, mask=mask)
    tl.store(at + stride, pr, mask=mask)
    tl.store(at + 2 * stride, s0, mask=mask)
    tl.store(at + 3 * stride, s1, mask=mask)
    if MOMENT:
        tl.store(at + 4 * stride, m0, mask=mask)
        tl.store(at + 5 * stride, m1, mask=mask)


@triton.jit
def _merge(state, key, pos, x0, x1, n0, n1, sign, w, MOMENT: tl.constexpr):
    """``state`` absorbs a token or a state (key, pos, x0, x1, n0, n1) on the side ``sign`` (1: past,
    -1: future). The heavier of the two anchors the result; the other is scaled by e^{-|delta|}
    (one exponential), so every exponent is <= 0."""
    kr, pr, s0, s1, m0, m1 = state
    delta = (key - kr) + sign * (pos - pr) * w
    heavier = delta > 0
    scaled = tl.exp(-tl.abs(delta))
    old = tl.where(heavier, scaled, 1.0)
    new = tl.where(heavier, 1.0, scaled)
    s0 = s0 * old + x0 * new
    s1 = s1 * old + x1 * new
    if MOMENT:
        m0 = m0 * old + n0 * new
        m1 = m1 * old + n1 * new
    return tl.where(heavier, key, kr), tl.where(heavier, pos, pr), s0, s1, m0, m1


@triton.jit
def _crossed(state, tokens):
    """``state`` after its sums cross ``tokens`` tokens: every distance grows by that many."""
    kr, pr, s0, s1, m0, m1 = state
    return kr, pr, s0, s1, m0 + tokens * s0, m1 + tokens * s1


@triton.jit
def _pick(states, index, N: tl.constexpr):
    """``states[index]`` for a runtime ``index`` < N (a tuple takes constant indices only), by selects.
    The entries are forward states without moments, ``(kr, pr, s0, s1)``; returns a whole state."""
    kr, pr, s0, s1 = states[0]
    for i in tl.static_range(1, N):
        hit = index == i
        k2, p2, a2, b2 = states[i]
        kr, pr = tl.where(hit, k2, kr), tl.where(hit, p2, pr)
        s0, s1 = tl.where(hit, a2, s0), tl.where(hit, b2, s1)
    zero = tl.zeros_like(s0)
    return kr, pr, s0, s1, zero, zero


@triton.jit
def _put(states, index, state, N: tl.constexpr):
    """``states`` with entry ``index`` (a runtime value < N) replaced by ``state``'s fields without
    moments (a loop would carry zeros it cannot prove constant)."""
    kr, pr, s0, s1, _, _ = state
    out = ()
    for i in tl.static_range(N):
        hit = index == i
        k2, p2, a2, b2 = states[i]
        out = out + ((tl.where(hit, kr, k2), tl.where(hit, pr, p2), tl.where(hit, s0, a2), tl.where(hit, s1, b2)),)
    return out


@triton.jit
def _unset(like, N: tl.constexpr):
    """N boundary entries, each an empty forward state, shaped like ``like``."""
    kr, pr, s0, s1, _, _ = _empty(like)
    return ((kr, pr, s0, s1),) * N


@triton.jit
def _forward_token(K, V, base, t, C, c, cmask, T, w):
    """Token ``t``'s forward term: key k_t (NO_KEY past the sequence), position, values v_t and 1."""
    ok = cmask & (t < T)
    key = tl.load(K + base + t * C + c, mask=ok, other=0.0).to(w.dtype)
    value = tl.load(V + base + t * C + c, mask=ok, other=0.0).to(w.dtype)
    return tl.where(ok, key, NO_KEY), tl.zeros_like(w) + t, value, tl.zeros_like(w) + 1.0


@triton.jit
def _sum_tokens(state, K, V, base, first, C, c, cmask, T, w, sign, S: tl.constexpr, REVERSE: tl.constexpr):
    """``state`` with the forward terms of tokens first ... first + S - 1 merged on side ``sign``, in
    token order or REVERSE (the order of a sweep; without moments any order gives the same state)."""
    for i in tl.static_range(S):
        p = S - 1 - i if REVERSE else i                 # a runtime value: used in arithmetic only
        key, pos, x0, x1 = _forward_token(K, V, base, first + p, C, c, cmask, T, w)
        state = _merge(state, key, pos, x0, x1, x0, x1, sign, w, False)
    return state


@triton.jit
def _future_states(state, K, V, base, first, C, c, cmask, T, w, S: tl.constexpr):
    """From the future state after a sub-block (its last token's), each token's future state (the
    tokens after it) as a tuple in token order, and the state before the sub-block."""
    futures = ()
    for p in tl.static_range(S - 1, -1, -1):
        key, pos, x0, x1 = _forward_token(K, V, base, first + p, C, c, cmask, T, w)
        futures = (state,) + futures
        state = _merge(state, key, pos, x0, x1, x0, x1, -1.0, w, False)
    return state, futures


@triton.jit
def _past_states(state, K, V, base, first, C, c, cmask, T, w, S: tl.constexpr):
    """From the past state before a sub-block, each token's past state (the tokens before it in the
    chunk and beyond) as a tuple in token order."""
    pasts = ()
    for p in tl.static_range(S):
        key, pos, x0, x1 = _forward_token(K, V, base, first + p, C, c, cmask, T, w)
        pasts = pasts + (state,)
        state = _merge(state, key, pos, x0, x1, x0, x1, 1.0, w, False)
    return pasts


@triton.jit
def _forward_output(state, future, key, pos, x0, w, u, CAUSAL: tl.constexpr):
    """y and log den of one token (key, pos, values x0 and 1) from the past state entering it and
    (bi_wkv) its future state. The three parts (past, future, the token's own e^{u + k}) are scaled
    below the largest log-weight, formed first relative to the largest key (key differences are exact
    where the weights are close)."""
    kr, pr, s0, s1, m0, m1 = state
    fk, fp, f0, f1, fm0, fm1 = _empty(w)
    if not CAUSAL:
        fk, fp, f0, f1, fm0, fm1 = future
    ref = tl.maximum(tl.maximum(kr, fk), key)
    main = (kr - ref) + (1.0 - (pos - pr)) * w          # a past anchor r weighs e^{k_r - (t-1-r) w}
    other = (fk - ref) + (1.0 + pos - fp) * w           # a future one e^{k_r - (r-t-1) w}
    own = (key - ref) + u
    top = tl.maximum(tl.maximum(main, other), own)
    e_main = tl.exp(main - top)
    e_own = tl.exp(own - top)
    sum0 = s0 * e_main + x0 * e_own
    sum1 = s1 * e_main + e_own
    if not CAUSAL:
        e_other = tl.exp(other - top)
        sum0 += f0 * e_other
        sum1 += f1 * e_other
    return sum0 / sum1, ref + top + tl.log(sum1)


@triton.jit
def _forward_outputs(state, futures, K, V, base, first, C, c, cmask, T, w, u, S: tl.constexpr,
                     CAUSAL: tl.constexpr):
    """y and log den of each token of a sub-block (tuples in token order) from the past state entering
    it and (bi_wkv) each token's future state; returns the past state after the sub-block too."""
    ys = ()
    logs = ()
    for p in tl.static_range(S):
        key, pos, x0, x1 = _forward_token(K, V, base, first + p, C, c, cmask, T, w)
        future = state
        if not CAUSAL:
            future = futures[p]
        y, log_den = _forward_output(state, future, key, pos, x0, w, u, CAUSAL)
        ys = ys + (y,)
        logs = logs + (log_den,)
        state = _merge(state, key, pos, x0, x1, x0, x1, 1.0, w, False)
    return state, ys, logs


@triton.jit
def _sub_block_outputs(past, bounds, b, K, V, base, first, C, c, cmask, T, w, u, S: tl.constexpr,
                       NS: tl.constexpr, CAUSAL: tl.constexpr):
    """y and log den of sub-block ``b``'s tokens (tuples in token order) from the past state entering it
    and (bi_wkv) the forward future state after it (``bounds``); and the past state after it."""
    futures = ()
    if not CAUSAL:
        _, futures = _future_states(_pick(bounds, b, NS), K, V, base, first, C, c, cmask, T, w, S)
    return _forward_outputs(past, futures, K, V, base, first, C, c, cmask, T, w, u, S, CAUSAL)


@triton.jit
def _backward_token(GY, K, V, base, t, C, c, cmask, T, w, y, log_den):
    """Token ``t``'s backward term (log-weight -log den, so that a term is gy / den; values gy and
    -gy y), its position, k_t and v_t for its gradients, and whether it is in the sequence."""
    ok = cmask & (t < T)
    gy = tl.load(GY + base + t * C + c, mask=ok, other=0.0).to(w.dtype)
    kt = tl.load(K + base + t * C + c, mask=ok, other=0.0).to(w.dtype)
    vt = tl.load(V + base + t * C + c, mask=ok, other=0.0).to(w.dtype)
    # past the sequence: no term, and k = NO_KEY, so that its (unstored) gradients are 0, not inf * 0
    return (tl.where(ok, -log_den, NO_KEY), tl.zeros_like(w) + t, gy, tl.where(ok, -gy * y, 0.0),
            tl.where(ok, kt, NO_KEY), vt, ok)


@triton.jit
def _gradient_part(state, sign, pos, kt, vt, w):
    """One side's contribution to (gk, gv, gw) at token ``t`` (position ``pos``) from the transposed
    sums of ``state`` (terms gy / den of the tokens on that side, anchored at r: weight
    e^{k_r - d w}, d = |t - r| - 1): gv = e^{k_t} S(alpha), gk = v gv + e^{k_t} S(beta), and
    gw = -e^{k_t} (v M(alpha) + M(beta)). Each part's scale e^{k_t} e^{weight} is <= 1 (den_r holds
    token t's weight), so the parts add without overflow."""
    kr, pr, s0, s1, m0, m1 = state
    scale = tl.exp(kt + kr + (1.0 - sign * (pos - pr)) * w)
    gv = scale * s0
    return vt * gv + scale * s1, gv, -scale * (vt * m0 + m1)


@triton.jit
def _own_part(key, x0, x1, kt, vt, u):
    """Token t's own term e^{u + k_t} gy_t / den_t in (gk, gv) and its gradient of u."""
    own = tl.exp(u + kt + key)
    gv = own * x0
    return vt * gv + own * x1, gv, own * (x0 * vt + x1)


@triton.jit
def _store_output(OUT, base, t, C, c, cmask, T, value, HALF: tl.constexpr):
    if HALF:
        value = _narrowed(value, HALF)
    tl.store(OUT + base + t * C + c, value, mask=cmask & (t < T))


@triton.jit
def _future_boundaries(state, K, V, base, start, C, c, cmask, T, w, blocks, S: tl.constexpr, NS: tl.constexpr):
    """The forward future state after each of the chunk's ``blocks`` sub-blocks (a tuple of NS, in
    sub-block order), from the state entering the chunk from its end."""
    bounds = _unset(w, NS)
    i = 0
    while i < blocks:
        b = blocks - 1 - i
        bounds = _put(bounds, b, state, NS)
        state = _sum_tokens(state, K, V, base, start + b * S, C, c, cmask, T, w, -1.0, S, True)
        i += 1
    return bounds


@triton.jit
def sweep(K, V, GY, w, u, FSTATE, BSTATE, OUT0, OUT1, PART, R, T, C, NC,
          BACKWARD: tl.constexpr, CAUSAL: tl.constexpr, FINISH: tl.constexpr, HALF: tl.constexpr,
          BT: tl.constexpr, BC: tl.constexpr, CH: tl.constexpr, S: tl.constexpr):
    """CH chunks of BT tokens (NS = BT / S sub-blocks of S, a runtime loop over sub-blocks whose S
    tokens are unrolled) and BC channels of one row, one (chunk, channel) per lane (a tuple takes constant
    indices only: ``_pick`` / ``_put`` select by a runtime one: a constant assigned to a local becomes a runtime value,
so every index here comes straight from ``tl.static_range``). Summaries (FINISH false): the forward's states into FSTATE (each token merged on each side),
    or the backward's into BSTATE (y and log den recomputed first, with moments: each token's distance
    to the chunk's edge). Finish: from the states entering the chunk (after the scan), the outputs: y
    (forward: OUT0), or gk, gv (OUT0, OUT1) and the chunk's partials of gw, gu (PART), y and log den
    being recomputed from FSTATE, never read."""
    NS: tl.constexpr = BT // S
    group, cblock, row = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    lane = tl.arange(0, BC * CH)                         # CH chunks of BC channels: one warp at C = 48 too
    chunk = group * CH + lane // BC
    c = cblock * BC + lane % BC
    cmask = (c < C) & (chunk < NC)
    start = chunk * BT                                   # each lane's chunk and its tokens (the last may be short)
    count = tl.minimum(T - start, BT)
    wc = tl.load(w + c, mask=cmask, other=0.0)
    uc = tl.load(u + c, mask=cmask, other=0.0)
    base = row.to(tl.int64) * T * C                      # int64: B T C passes 2^31 at 4 x 1024^2 x 384
    field = R * NC * C                                   # one field of one side of a state buffer
    slot = row.to(tl.int64) * NC * C + chunk * C + c
    # a side of FSTATE holds 4 fields, of BSTATE 6 (with the moments): triton_launch.FORWARD_FIELDS,
    # BACKWARD_FIELDS; the future side follows the past
    blocks = tl.cdiv(tl.minimum(T - group * CH * BT, BT), S)     # the sub-blocks of the program's first chunk
    if not BACKWARD and not FINISH:                      # forward summaries: any order per side
        past = _empty(wc)
        future = _empty(wc)
        b = 0
        while b < blocks:
            past = _sum_tokens(past, K, V, base, start + b * S, C, c, cmask, T, wc, 1.0, S, False)
            if not CAUSAL:
                future = _sum_tokens(future, K, V, base, start + b * S, C, c, cmask, T, wc, -1.0, S, False)
            b += 1
        _store_state(FSTATE + slot, field, cmask, past, False)
        if not CAUSAL:
            _store_state(FSTATE + 4 * field + slot, field, cmask, future, False)
    else:
        past = _load_state(FSTATE + slot, field, cmask, False)
        bounds = _unset(wc, NS)                          # bi_wkv: the forward future state after each sub-block
        if not CAUSAL and not (BACKWARD and FINISH):     # (the backward finish records them as it goes)
            entering = _load_state(FSTATE + 4 * field + slot, field, cmask, False)
            bounds = _future_boundaries(entering, K, V, base, start, C, c, cmask, T, wc, blocks, S, NS)
        if not BACKWARD:                                 # forward finish: y
            b = 0
            while b < blocks:
                first = start + b * S
                past, ys, _ = _sub_block_outputs(past, bounds, b, K, V, base, first, C, c, cmask, T, wc, uc, S, NS,
                                                 CAUSAL)
                for p in tl.static_range(S):
                    _store_output(OUT0, base, first + p, C, c, cmask, T, ys[p], HALF)
                b += 1
        elif not FINISH:                                 # backward summaries, both sides in one visit
            bpast = _empty(wc)
            bfuture = _empty(wc)
            b = 0
            while b < blocks:
                first = start + b * S
                past, ys, logs = _sub_block_outputs(past, bounds, b, K, V, base, first, C, c, cmask, T, wc, uc, S,
                                                    NS, CAUSAL)
                for p in tl.static_range(S):
                    key, pos, x0, x1, _, _, _ = _backward_token(GY, K, V, base, first + p, C, c, cmask, T, wc,
                                                                ys[p], logs[p])
                    near = b * S + p                     # tokens before it in the chunk
                    bfuture = _merge(bfuture, key, pos, x0, x1, near * x0, near * x1, -1.0, wc, True)
                    if not CAUSAL:
                        far = count - 1 - near           # tokens after it in the chunk
                        bpast = _merge(bpast, key, pos, x0, x1, far * x0, far * x1, 1.0, wc, True)
                b += 1
            _store_state(BSTATE + 6 * field + slot, field, cmask, bfuture, True)
            if not CAUSAL:
                _store_state(BSTATE + slot, field, cmask, bpast, True)
        else:                                            # backward finish: gk, gv, partials of gw, gu
            gw = tl.zeros_like(wc)
            gu = tl.zeros_like(wc)
            starts = _unset(wc, NS)                      # the forward past state before each sub-block
            b = 0
            while b < blocks:
                starts = _put(starts, b, past, NS)
                past = _sum_tokens(past, K, V, base, start + b * S, C, c, cmask, T, wc, 1.0, S, False)
                b += 1
            # the transposed sums' future side (uni_wkv's only side), sub-blocks from the last, the
            # forward's future state running alongside: each token's gradients from its future and
            # its own term, written out (bi_wkv: read back by the past side's visit, which adds its part)
            bfuture = _load_state(BSTATE + 6 * field + slot, field, cmask, True)
            future = _empty(wc)
            if not CAUSAL:
                future = _load_state(FSTATE + 4 * field + slot, field, cmask, False)
            i = 0
            while i < blocks:
                b = blocks - 1 - i
                first = start + b * S
                if not CAUSAL:
                    bounds = _put(bounds, b, future, NS)
                pasts = _past_states(_pick(starts, b, NS), K, V, base, first, C, c, cmask, T, wc, S)
                for p in tl.static_range(S - 1, -1, -1):         # y, log den and gradients token by token
                    fkey, fpos, fx0, fx1 = _forward_token(K, V, base, first + p, C, c, cmask, T, wc)
                    y, log_den = _forward_output(pasts[p], future, fkey, fpos, fx0, wc, uc, CAUSAL)
                    if not CAUSAL:
                        future = _merge(future, fkey, fpos, fx0, fx1, fx0, fx1, -1.0, wc, False)
                    key, pos, x0, x1, kt, vt, ok = _backward_token(GY, K, V, base, first + p, C, c, cmask, T, wc,
                                                                   y, log_den)
                    gk, gv, dw = _gradient_part(bfuture, -1.0, pos, kt, vt, wc)
                    own_k, own_v, du = _own_part(key, x0, x1, kt, vt, uc)
                    _store_output(OUT0, base, first + p, C, c, cmask, T, gk + own_k, HALF)
                    _store_output(OUT1, base, first + p, C, c, cmask, T, gv + own_v, HALF)
                    gw += tl.where(ok, dw, 0.0)
                    gu += tl.where(ok, du, 0.0)
                    bfuture = _merge(_crossed(bfuture, 1.0), key, pos, x0, x1, x0 * 0.0, x1 * 0.0, -1.0, wc, True)
                i += 1
            if not CAUSAL:
                # bi_wkv: the past side, sub-blocks in order, adding to what the future side wrote
                # (this program's own writes, read back from the cache)
                bpast = _load_state(BSTATE + slot, field, cmask, True)
                past = _pick(starts, 0, NS)
                b = 0
                while b < blocks:
                    first = start + b * S
                    _, futures = _future_states(_pick(bounds, b, NS), K, V, base, first, C, c, cmask, T, wc, S)
                    for p in tl.static_range(S):                 # y, log den and gradients token by token
                        fkey, fpos, fx0, fx1 = _forward_token(K, V, base, first + p, C, c, cmask, T, wc)
                        y, log_den = _forward_output(past, futures[p], fkey, fpos, fx0, wc, uc, CAUSAL)
                        past = _merge(past, fkey, fpos, fx0, fx1, fx0, fx1, 1.0, wc, False)
                        key, pos, x0, x1, kt, vt, ok = _backward_token(GY, K, V, base, first + p, C, c, cmask, T,
                                                                       wc, y, log_den)
                        gk, gv, dw = _gradient_part(bpast, 1.0, pos, kt, vt, wc)
                        at = base + (first + p) * C + c
                        written = cmask & (first + p < T)
                        gk += tl.load(OUT0 + at, mask=written, other=0.0).to(wc.dtype)
                        gv += tl.load(OUT1 + at, mask=written, other=0.0).to(wc.dtype)
                        _store_output(OUT0, base, first + p, C, c, cmask, T, gk, HALF)
                        _store_output(OUT1, base, first + p, C, c, cmask, T, gv, HALF)
                        gw += tl.where(ok, dw, 0.0)
                        bpast = _merge(_crossed(bpast, 1.0), key, pos, x0, x1, x0 * 0.0, x1 * 0.0, 1.0, wc, True)
                    b += 1
            tl.store(PART + slot, gw, mask=cmask)
            tl.store(PART + field + slot, gu, mask=cmask)


@triton.jit
def scan(STATE, UP, w, R, C, N, NUP, L, DOWN: tl.constexpr, HAS_UP: tl.constexpr, SIDE: tl.constexpr,
         MOMENT: tl.constexpr, G: tl.constexpr, BC: tl.constexpr):
    """One group of G items of STATE (chunks, or groups of the level below: L tokens each but
    perhaps the last, which nothing crosses) merged in token order on SIDE (0: past, 1: future), one
    channel per lane. Up (DOWN false): the group's summary is written to UP, an item of the next level.
    Down: in place, each item's summary becomes the state entering it, starting from the state
    entering the group (UP; none at the top)."""
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
    state = _empty(wc)
    if DOWN and HAS_UP:
        state = _load_state(up, up_field, cmask, MOMENT)
    i = 0
    while i < count:
        if SIDE == 0:
            item = first + i
        else:
            item = first + count - 1 - i
        at = items + item * C
        ki, pi, i0, i1, im0, im1 = _load_state(at, n_field, cmask, MOMENT)
        if DOWN:                                         # the state entering this item
            _store_state(at, n_field, cmask, state, MOMENT)
        if MOMENT:                                       # the state so far crosses the item
            state = _crossed(state, L)
        state = _merge(state, ki, pi, i0, i1, im0, im1, sign, wc, MOMENT)
        i += 1
    if not DOWN:
        _store_state(up, up_field, cmask, state, MOMENT)
