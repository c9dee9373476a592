"""WKV memory traffic: the bytes one forward + backward reads and writes, per path, against the floor.

    python -m benchmark.measure.traffic                  # (1, 128^2, 48), (4, 128^2, 384), (1, 1024^2, 48)
    python -m benchmark.measure.traffic --shapes 2:4096:96 --ops bi --detail

Counted, not timed, on meta tensors (no data, any size, no GPU): every PyTorch op of the path is
counted as the bytes of its tensor inputs read and of its outputs written (views and allocations
move nothing; a broadcast input counts its stored bytes), and the Triton kernels, which do not run on
meta tensors, add the loads and stores of their grids and tiles (``triton_launch.traffic``, itself
checked against Triton's interpreter). The floor is what any implementation must move: the forward
reads k and v and writes y, the backward reads gy, k and v and writes gk and gv (8 tensors of
B x T x C; w, u and their gradients are C-sized). The accumulation dtype is the dispatch's for
``--span`` (``|w| (T - 1)``, which the sums' range depends on): float64 doubles a path's bytes.
The ``cpp`` CPU kernel is not counted: its loads happen inside compiled C++.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from collections import Counter
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from models.ops.wkv import cumsum, limits
from models.ops.wkv import triton_launch as wkv_triton

from benchmark.base import markdown

PATHS = ("torch", "triton")
OPS = {"bi": False, "uni": True}                     # op: causal
DEFAULT_SHAPES = ("1:16384:48", "4:16384:384", "1:1048576:48")
FLOOR_TENSORS = 8        # forward: read k, v, write y; backward: read gy, k, v, write gk, gv
FREE = {torch.ops.aten.empty.memory_format, torch.ops.aten.empty_like.default, torch.ops.aten.empty_strided.default,
        torch.ops.aten.new_empty.default, torch.ops.aten.new_empty_strided.default, torch.ops.aten.detach.default,
        torch.ops.aten.lift_fresh.default}                  # allocations and aliases move nothing


def _stored_bytes(t: torch.Tensor) -> int:
    """What reading ``t`` moves: its elements, or its storage when that is smaller (a broadcast)."""
    return min(t.numel() * t.element_size(), t.untyped_storage().nbytes())


class OpCounter(TorchDispatchMode):
    """Counts the bytes every dispatched op reads (tensor inputs) and writes (outputs), per op."""

    def __init__(self):
        super().__init__()
        self.read, self.written = Counter(), Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in FREE or func.is_view:
            return out
        name = func.overloadpacket.__name__
        self.read[name] += sum(_stored_bytes(t) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor))
        self.written[name] += sum(_stored_bytes(t) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
        return out


def count(path: str, op: str, batch: int, tokens: int, channels: int, span: float = 10.0,
          dtype: torch.dtype = torch.float32) -> dict:
    """The bytes of one forward + backward of ``op`` on ``path`` at (batch, tokens, channels) inputs
    of ``dtype``: {"torch": {op: (read, written)}, "kernels": {kernel: (read, written)}, "acc": dtype,
    "floor": bytes}."""
    causal = OPS[op]
    meta = dict(device="meta", dtype=dtype)
    k, v = (torch.empty(batch, tokens, channels, **meta, requires_grad=True) for _ in range(2))
    w, u = (torch.empty(channels, **meta, requires_grad=True) for _ in range(2))
    gy = torch.empty(batch, tokens, channels, **meta)
    acc = limits.accumulation_dtype(path, causal, span, k, v)
    counter, kernels = OpCounter(), Counter()
    # the span checks read w's values, which meta tensors do not have: they are given ``span``
    with mock.patch.object(cumsum, "decay_span", lambda *_: span), wkv_triton.counting_traffic() as launches:
        with counter:
            if path == "triton":
                y = wkv_triton.wkv(w, u, k, v, causal, acc)
            else:
                y = (cumsum.uni_wkv_torch if causal else cumsum.bi_wkv_torch)(w, u, k, v)
            y.backward(gy)
    for launch in launches:
        for kernel, (read, written) in launch.items():
            kernels[kernel, "read"] += read
            kernels[kernel, "written"] += written
    floor = floor_bytes(batch, tokens, channels, k.element_size())
    return {"torch": {name: (counter.read[name], counter.written[name]) for name in counter.read | counter.written},
            "kernels": {name: (kernels[name, "read"], kernels[name, "written"]) for name, _ in kernels},
            "acc": acc, "floor": floor}


def floor_bytes(batch: int, tokens: int, channels: int, itemsize: int = 4) -> int:
    """What any WKV forward + backward must move at least (``FLOOR_TENSORS`` tensors of B x T x C)."""
    return FLOOR_TENSORS * batch * tokens * channels * itemsize


def moved(counted: dict, part: str) -> int:
    """Bytes read plus written by one part of a count: ``"kernels"`` or ``"torch"`` (the PyTorch ops)."""
    return sum(r + w for r, w in counted[part].values())


def total(counted: dict) -> int:
    return moved(counted, "kernels") + moved(counted, "torch")


def parse_shape(text: str) -> tuple[int, int, int]:
    try:
        batch, tokens, channels = (int(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a shape is B:T:C (three positive integers), e.g. 1:16384:48; got {text!r}")
    if min(batch, tokens, channels) < 1:
        raise argparse.ArgumentTypeError(f"B, T and C must be positive; got {text!r}")
    return batch, tokens, channels


def _gb(n: int) -> str:
    return f"{n / 1e9:.3f}"


def format_table(rows: list[tuple]) -> str:
    cells = []
    for path, op, (batch, tokens, channels), counted in rows:
        kernels, glue = moved(counted, "kernels"), moved(counted, "torch")
        cells.append([op, path, f"{batch}:{tokens}:{channels}", str(counted["acc"]).removeprefix("torch."),
                      _gb(kernels), _gb(glue), _gb(kernels + glue), _gb(counted["floor"]),
                      f"{(kernels + glue) / counted['floor']:.2f}"])
    header = ["op", "path", "B:T:C", "sums in", "kernels GB", "PyTorch ops GB", "total GB", "floor GB", "x floor"]
    return markdown.table(header, cells, "lllrrrrrr")


def format_detail(path: str, op: str, shape: tuple, counted: dict) -> str:
    parts = [(f"kernel {name}", rw) for name, rw in counted["kernels"].items()]
    parts += sorted(((f"aten.{name}", rw) for name, rw in counted["torch"].items()), key=lambda p: -sum(p[1]))
    cells = [[name, _gb(r), _gb(w), f"{(r + w) / counted['floor']:.2f}"] for name, (r, w) in parts]
    return (f"\n{op} on {path} at B:T:C = {':'.join(map(str, shape))}\n\n"
            + markdown.table(["what", "read GB", "written GB", "x floor"], cells, "lrrr"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.measure.traffic", description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", type=parse_shape, nargs="+", default=[parse_shape(s) for s in DEFAULT_SHAPES],
                        metavar="B:T:C", help=f"batch:tokens:channels (default: {' '.join(DEFAULT_SHAPES)})")
    parser.add_argument("--ops", nargs="+", choices=sorted(OPS), default=["bi", "uni"])
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--span", type=float, default=10.0,
                        help="|w| (T - 1), which sets the accumulation dtype (default: 10, float32 for bi_wkv)")
    parser.add_argument("--detail", action="store_true", help="also list every kernel and PyTorch op")
    args = parser.parse_args(argv)
    if not args.span >= 0:
        parser.error(f"--span must be a non-negative number; got {args.span}")
    rows = []
    for op in args.ops:
        for path in args.paths:
            for shape in args.shapes:
                rows.append((path, op, shape, count(path, op, *shape, span=args.span)))
    print(f"WKV memory traffic of one forward + backward (float32 inputs, span {args.span:g}); "
          f"floor: {FLOOR_TENSORS} x B x T x C x 4 B")
    print(format_table(rows))
    if args.detail:
        for path, op, shape, counted in rows:
            print(format_detail(path, op, shape, counted))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
