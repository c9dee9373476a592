"""The WKV ops in Triton, fused (``backend="triton"``): the forward reads k and v and writes y, and
keeps only the states entering each chunk; the backward reads gy, k and v, recomputes y and
``log den`` from those states, and writes gk, gv and per-chunk partials of gw and gu. The kernels
are in ``triton_kernels.py``; this module launches them and counts their memory traffic.

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

Two kernels, ``sweep`` chunk-parallel over (T / (CHUNKS BLOCK_T), C / BLOCK_C, B), each program one
warp of CHUNKS chunks x BLOCK_C channels (2 x 16: C = 48 fills its lanes), and ``scan``, one warp of
SCAN_C channels; one (chunk, channel) per lane: a lane visits its chunk's tokens one after another,
so a token's work is a handful of scalar operations (one exponential per merge), with no reduction,
shuffle or barrier (``triton_kernels.py``). Three launches per direction:

1. ``sweep`` (summaries): each chunk merges its own tokens into its state on each side (with moments
   in the backward: each token's distance to the chunk's edge);
2. ``scan`` (up, then down): a hierarchical scan over the chunk states, ``GROUP`` at a time per
   program (``log_GROUP(T / BLOCK_T)`` levels up and down, every level parallel over its groups),
   turns each summary into the state entering its chunk from either side;
3. ``sweep`` (finish): each chunk visits its tokens again from its entering states and writes its
   outputs. A chunk is SUB_T-token sub-blocks in a loop, each sub-block's tokens unrolled: what a
   later visit needs of a token (its future state, its y and log den) is kept in registers for
   SUB_T tokens, and the states at the sub-block boundaries for the chunk. bi_wkv first runs its
   forward future state backwards through the chunk, keeping the state after each sub-block; then
   each sub-block from its boundary state, keeping each token's future state; then its past, giving
   each token's output.

The forward's entering states (4 fields per side and chunk: 1 / 16 of a B x T x C tensor per side at
64 tokens per chunk) are all the backward keeps: both of its ``sweep`` launches first redo the
forward's finish on their chunk (from those states, in registers), so that y and ``log den`` are
never written for it nor read back. The backward finish visits the transposed sums' future side
from the chunk's last sub-block (uni_wkv's only side: each token's gradients are then complete),
writing each token's gk, gv; bi_wkv's past side then visits the sub-blocks in order, reads those
back (the program's own writes, from its cache) and adds its part. Per forward + backward that is 13
tensors of B x T x C from memory (the forward reads k, v twice and writes y; the backward reads k, v,
gy twice and writes gk, gv) against the 8 any implementation moves, plus the chunk states and their
scan; a program's later visits to its chunk (64 tokens x 32 channels of each input) come from its
caches.

Each token costs one exponential per merge and three for its output, all of differences: no
(BLOCK_T, BLOCK_T) tile of weights and no decay factor ``e^{-d w}`` is ever formed.
Accumulation is in the dtype of ``w`` (the dispatch's ``accumulation_dtype``: float32 at any span,
float64 for float64 inputs; nothing is read on the host to choose); k, v and gy are loaded, and y, gk and gv
stored, in the inputs' dtype (float32, float16, bfloat16 or float64), converted in registers. On
CUDA tensors the kernels are compiled; on CPU tensors they run in Triton's interpreter (NumPy) when
``TRITON_INTERPRET=1`` was set at process start, for verification only: it is slow.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import typing

import torch

from .limits import accumulation_dtype

BLOCK_T = 64          # tokens per chunk, visited one after another by each lane of one program
SUB_T = 8             # tokens per sub-block: what the kernel keeps of each token, it keeps for SUB_T tokens
BLOCK_C = 16          # channels per sweep program, of each of its CHUNKS chunks: one (chunk, channel) per lane
CHUNKS = 2            # chunks per sweep program: 2 x 16 lanes, one warp (C = 48 fills its lanes)
SCAN_C = 32           # channels per scan program, one per lane
WARPS = 1
REGISTERS = 255       # per thread, asked of ptxas (left to itself it stops at 168 and spills)
GROUP = 16            # chunk states combined per program and level of the boundary scan
LAUNCH_OPTIONS = ("num_warps", "maxnreg")     # launch keywords that are options of the compiler, not constants


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


def _kernels():
    """(``sweep``, ``scan``) of ``triton_kernels.py``, imported on first use (it imports Triton)."""
    from . import triton_kernels
    return triton_kernels.sweep, triton_kernels.scan


# The passes of the ops, as (BACKWARD, CAUSAL) of ``sweep``: bi_wkv and uni_wkv forward, then backward.
PASSES = ((False, False), (False, True), (True, False), (True, True))


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


class Launch(typing.NamedTuple):
    """One kernel launch as the launcher makes it: the jit function, its grid, arguments and flags."""
    kernel: typing.Any
    grid: tuple
    args: tuple
    flags: dict

    @property
    def name(self) -> str:
        """What the launch does: ``forward summaries``, ``backward finish``, ``forward scan up`` ..."""
        if self.kernel.__name__ == "sweep":
            return f"{'backward' if self.flags['BACKWARD'] else 'forward'} {'finish' if self.flags['FINISH'] else 'summaries'}"
        return f"{'backward' if self.flags['MOMENT'] else 'forward'} scan {'down' if self.flags['DOWN'] else 'up'}"

    @property
    def loop_trips(self) -> float:
        """Mean trips of each of the kernel's loops per program: a ``sweep`` loop runs over its chunk's
        sub-blocks of S tokens (BT / S, fewer in a short last chunk), a ``scan`` loop over its group's
        items (items / groups)."""
        args = dict(zip(self.kernel.arg_names, self.args))
        if self.kernel.__name__ == "sweep":               # a program's loop: its first chunk's sub-blocks
            tokens, block, sub, per = args["T"], self.flags["BT"], self.flags["S"], self.flags["CH"]
            firsts = range(0, tokens, block * per)
            return sum(_cdiv(min(tokens - first, block), sub) for first in firsts) / len(firsts)
        return args["N"] / self.grid[0]

    @property
    def programs(self) -> int:
        return self.grid[0] * self.grid[1] * self.grid[2]


class _Recorder:
    """Stands for a jit kernel: ``kernel[grid](*args, **flags)`` appends a ``Launch``, runs nothing."""

    def __init__(self, kernel, log: list):
        self.kernel, self.log = kernel, log

    def __getitem__(self, grid):
        return lambda *args, **flags: self.log.append(Launch(self.kernel, tuple(grid), args, flags))


def recorded_launches(batch: int, tokens: int, channels: int, causal: bool,
                      dtype: torch.dtype = torch.float32) -> list[Launch]:
    """Every launch of one forward + backward at (batch, tokens, channels) inputs of ``dtype``, made by
    the launcher itself on empty CPU tensors (nothing is launched or read): grids, arguments and
    flags exactly as on a GPU, for ``specialization`` and the static report."""
    global _kernels
    log: list[Launch] = []
    sweep, scan = _kernels()
    real, _kernels = _kernels, lambda: (_Recorder(sweep, log), _Recorder(scan, log))
    try:
        k, v = (torch.empty(batch, tokens, channels, dtype=dtype, requires_grad=True) for _ in range(2))
        w, u = (torch.zeros(channels, dtype=dtype, requires_grad=True) for _ in range(2))
        y = wkv(w, u, k, v, causal, accumulation_dtype("triton", causal, None, k, v))
        y.backward(torch.empty_like(y))
    finally:
        _kernels = real
    return log


def specialization(launch: Launch) -> tuple[dict, dict, dict]:
    """(signature, constexprs, attrs) of ``triton.compiler.ASTSource`` for ``launch``, as Triton's JIT
    specialises a call: integer arguments equal to 1 become constants, pointers to 16-byte-aligned
    memory and integers divisible by 16 get ``tt.divisibility`` 16 (Triton's own rule: its
    ``native_specialize_impl``, where this Triton has it)."""
    from triton.backends.nvidia.compiler import CUDABackend
    try:
        from triton.runtime.jit import native_specialize_impl

        def specialize(arg):
            return native_specialize_impl(CUDABackend, arg, False, True, True)
    except ImportError:                    # an older Triton: the same rule written out
        def specialize(arg):
            if isinstance(arg, torch.Tensor):
                return "*" + {torch.float32: "fp32", torch.float64: "fp64", torch.bfloat16: "bf16",
                              torch.float16: "fp16"}[arg.dtype], "D" if arg.data_ptr() % 16 == 0 else ""
            if arg == 1:
                return "constexpr", 1
            return ("i32" if -2 ** 31 <= arg < 2 ** 31 else "i64"), "D" if arg % 16 == 0 else ""
    signature, attrs = {}, {}
    constexprs = {name: value for name, value in launch.flags.items() if name not in LAUNCH_OPTIONS}
    for index, (name, arg) in enumerate(zip(launch.kernel.arg_names, launch.args)):
        kind, spec = specialize(arg)
        signature[name] = kind
        if kind == "constexpr":
            constexprs[name] = spec
        elif spec == "D":
            attrs[(index,)] = [["tt.divisibility", 16]]
    signature.update({name: "constexpr" for name in launch.flags if name not in LAUNCH_OPTIONS})
    return signature, constexprs, attrs


def variant_key(launch: Launch) -> tuple:
    """What makes one compiled kernel: the kernel and its specialisation (launches that share it
    share a binary)."""
    signature, constexprs, attrs = specialization(launch)
    return (launch.kernel.__name__, tuple(signature.items()), tuple(constexprs.items()),
            tuple((index, repr(spec)) for index, spec in sorted(attrs.items())),
            tuple((name, value) for name, value in launch.flags.items() if name in LAUNCH_OPTIONS))


def compile_launch(launch: Launch, capability: int):
    """``launch``'s kernel compiled for an NVIDIA GPU of compute ``capability`` (90: H100/H200, 80:
    A100) with the launcher's specialisation, without a GPU: Triton's front end, LLVM and its bundled
    ptxas. Needs a process started without TRITON_INTERPRET (the interpreter replaces the language's
    own jit functions)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.runtime.jit import JITFunction
    if not isinstance(launch.kernel, JITFunction):
        raise RuntimeError("compiling for a GPU needs a process started without TRITON_INTERPRET=1 "
                           "(the kernels were made for Triton's interpreter)")
    signature, constexprs, attrs = specialization(launch)
    options = {name: value for name, value in launch.flags.items() if name in LAUNCH_OPTIONS}
    compiled = triton.compile(ASTSource(launch.kernel, signature, constexprs=constexprs, attrs=attrs),
                              target=GPUTarget("cuda", capability, 32), options=options)
    if not compiled.asm.get("cubin"):
        raise RuntimeError(f"{launch.name}: Triton produced no cubin")
    return compiled


# Shapes whose launches cover the kinds of specialisation the ops meet: one row (R = 1, a constant)
# with T and C divisible by 16 and many chunks (a scan of two levels), several rows with neither
# divisible and a ragged last chunk (a scan of one).
AHEAD_SHAPES = ((1, 128 ** 2, 48), (2, 150, 20))
AHEAD_DTYPES = (torch.float32, torch.bfloat16, torch.float64)      # sums: float32, float32, float64


def compile_ahead(capability: int = 90) -> list[str]:
    """Compile every distinct kernel variant the ops launch at ``AHEAD_SHAPES`` for ``AHEAD_DTYPES``
    inputs, each with exactly the launcher's specialisation (``specialization``), for compute
    ``capability`` without a GPU, so that a machine with no GPU catches what would fail to build on
    one. Returns what it built, one line per distinct variant."""
    built = {}
    for shape in AHEAD_SHAPES:
        for causal in (False, True):
            for dtype in AHEAD_DTYPES:
                for launch in recorded_launches(*shape, causal, dtype):
                    key = variant_key(launch)
                    if key not in built:
                        compile_launch(launch, capability)
                        _, signature, constexprs, _, _ = key
                        ptr = next(t for _, t in signature if t.startswith("*"))
                        flags = ", ".join(f"{n.lower()}={v}" for n, v in constexprs if n not in ("BT", "BC", "CH", "G", "S"))
                        built[key] = f"{launch.kernel.__name__}[{ptr[1:]}, {flags}]"
    return list(built.values())


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


FORWARD_FIELDS, BACKWARD_FIELDS = 4, 6                         # a state's fields per side (with moments)


def traffic(batch: int, tokens: int, channels: int, causal: bool, input_itemsize: int,
            itemsize: int) -> dict[str, tuple[int, int]]:
    """{kernel: (bytes read, bytes written)} of one forward and one backward, from the kernels' grids:
    a program loads and stores only its unmasked elements, each element it touches counted once (its
    later visits to its chunk's tokens, 64 tokens x 32 channels of each input, come from its caches:
    L1, or L2 when many programs share an SM), so each total is the elements a program touches times
    the programs; what a program reads back after writing it (bi_wkv's backward finish writes each
    token's gradients from its future, then adds those from its past) is a cache hit too. k, v, y, gy,
    gk and gv move ``input_itemsize`` bytes each; the states, w, u and the partials of gw, gu
    ``itemsize`` (the sums'). Tested against Triton's interpreter with the distinct addresses each
    program loads and stores counted."""
    data = batch * tokens * channels * input_itemsize          # one B x T x C tensor
    chunk = batch * _cdiv(tokens, BLOCK_T) * channels * itemsize   # one state field (and gw or gu's partials)
    per_program = batch * _cdiv(_cdiv(tokens, BLOCK_T), CHUNKS) * channels * itemsize   # w or u, once per sweep program
    sides = 1 if causal else 2
    forward_states = sides * FORWARD_FIELDS * chunk            # the forward's states, all sides
    backward_states = sides * BACKWARD_FIELDS * chunk
    count = {}
    # forward: each kernel reads k, v, w and u; the finish writes y
    count["forward summaries"] = (2 * data + 2 * per_program, forward_states)
    count["forward scan"] = _scan_traffic(batch, _cdiv(tokens, BLOCK_T), channels, FORWARD_FIELDS, sides, itemsize)
    count["forward finish"] = (2 * data + 2 * per_program + forward_states, data)
    # backward: each kernel reads k, v, gy and the forward's entering states (it recomputes y and log
    # den); the finish writes gk, gv and the (gw, gu) partials of each chunk
    count["backward summaries"] = (3 * data + 2 * per_program + forward_states, backward_states)
    count["backward scan"] = _scan_traffic(batch, _cdiv(tokens, BLOCK_T), channels, BACKWARD_FIELDS, sides, itemsize)
    count["backward finish"] = (3 * data + 2 * per_program + forward_states + backward_states, 2 * data + 2 * chunk)
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
                           "(inside triton_launch.counting_traffic())")
    counted = traffic(*k.shape, causal, k.element_size(), itemsize)
    _traffic_log.append({name: rw for name, rw in counted.items() if name.startswith(direction)})


def _scan(state: torch.Tensor, w: torch.Tensor, items: int, length: int, sides: list[int], moment: bool) -> None:
    """Turn the ``items`` summaries of ``state`` (``length`` tokens each, but perhaps the last) into
    the states entering them, on each of ``sides``: ``GROUP`` items per program, recursively."""
    scan = _kernels()[1]
    rows, channels = state.shape[2], state.shape[4]
    groups = _cdiv(items, GROUP)
    grid = (groups, _cdiv(channels, SCAN_C), rows)
    flags = dict(MOMENT=moment, G=GROUP, BC=SCAN_C, num_warps=WARPS)
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


def _sweeps(k, v, gy, w, u, forward_state, backward_state, outputs: tuple, part, causal: bool) -> None:
    """Summaries, scan and finish of the forward (``gy`` None: fills ``forward_state`` with the states
    entering each chunk and writes y) or of the backward (writes gk, gv and the partials)."""
    batch, tokens, channels = k.shape
    chunks = _cdiv(tokens, BLOCK_T)
    sweep = _kernels()[0]
    backward = gy is not None
    grid = (_cdiv(chunks, CHUNKS), _cdiv(channels, BLOCK_C), batch)
    # unused pointers are given a tensor of the call (the kernel never loads them)
    gy = k if gy is None else gy
    backward_state = forward_state if backward_state is None else backward_state
    out1 = outputs[-1]
    part = outputs[0] if part is None else part
    half = {torch.float16: 1, torch.bfloat16: 2}.get(outputs[0].dtype, 0)      # 16-bit outputs
    flags = dict(BACKWARD=backward, CAUSAL=causal, HALF=half, BT=BLOCK_T, BC=BLOCK_C, CH=CHUNKS, S=SUB_T,
                 num_warps=WARPS, maxnreg=REGISTERS)
    args = (k, v, gy, w, u, forward_state, backward_state, outputs[0], out1, part, batch, tokens, channels, chunks)
    # bi_wkv: both sides; uni_wkv: the past, and in the backward (the transposed sums) the future
    sides = [0, 1] if not causal else [1] if backward else [0]
    with torch.cuda.device(w.device) if w.device.type == "cuda" else contextlib.nullcontext():
        sweep[grid](*args, FINISH=False, **flags)
        _scan(backward_state if backward else forward_state, w, chunks, BLOCK_T, sides, backward)
        sweep[grid](*args, FINISH=True, **flags)


class TritonWKV(torch.autograd.Function):
    """``y`` from ``k, v`` (their own dtype) and ``w, u`` (the sums' dtype); keeps only the states
    entering each chunk (a fraction 4 / BLOCK_T of a tensor per side) for the backward, which
    recomputes y and log den from them."""

    @staticmethod
    def forward(ctx, w, u, k, v, causal: bool):
        y = torch.empty_like(v)
        state = w.new_empty(2, FORWARD_FIELDS, k.shape[0], _cdiv(k.shape[1], BLOCK_T), k.shape[2])
        if k.device.type == "meta":                         # counted, not run (``counting_traffic``)
            _log_traffic("forward", k, causal, w.element_size())
        else:
            _sweeps(k, v, None, w, u, state, None, (y,), None, causal)
        ctx.save_for_backward(w, u, k, v, state)
        ctx.causal = causal
        return y

    @staticmethod
    def backward(ctx, gy):
        w, u, k, v, forward_state = ctx.saved_tensors
        gy = gy.to(v.dtype).contiguous()
        gk, gv = torch.empty_like(k), torch.empty_like(v)
        batch, tokens, channels = k.shape
        chunks = _cdiv(tokens, BLOCK_T)
        part = w.new_empty(2, batch, chunks, channels)     # gw, gu per chunk
        state = w.new_empty(2, BACKWARD_FIELDS, batch, chunks, channels)
        if k.device.type == "meta":
            _log_traffic("backward", k, ctx.causal, w.element_size())
        else:
            _sweeps(k, v, gy, w, u, forward_state, state, (gk, gv), part, ctx.causal)
        partials = part.sum(dim=(1, 2))
        return partials[0], partials[1], gk, gv, None


def wkv(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
        acc: torch.dtype) -> torch.Tensor:
    """bi_wkv (``causal=False``) or uni_wkv on the Triton kernels, accumulating in ``acc`` (chosen
    by ``wkv.accumulation_dtype``); k and v are read, and y written, in their own dtype. ``(B, T, C)``
    in ``v.dtype``."""
    w, u = (t.to(acc).contiguous() for t in (w, u))
    common = torch.promote_types(k.dtype, v.dtype)        # one dtype for k, v, y and the gradients
    k, v_in = (t.to(common).contiguous() for t in (k, v))
    return TritonWKV.apply(w, u, k, v_in, causal).to(v.dtype)
