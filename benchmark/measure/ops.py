"""WKV scaling benchmark: forward and forward+backward time against the number of tokens.

    python -m benchmark.measure.ops                       # T = 64^2 ... 512^2, C = 48, B = 1
    python -m benchmark.measure.ops --sizes 64 128 --channels 48 96 --backends torch cpp --repeat 3

Prints a markdown table; the ``x4`` columns are the time ratio to the previous row of the same op,
backend and C, i.e. the growth per 4x tokens (4.0 = linear). ``GB/s`` is the effective bandwidth of
forward + backward: the bytes of k, v, y and of their gradients over its time. ``speedup`` is the
PyTorch path's forward + backward time over this backend's. Timings are medians after a warm-up.
A backend that cannot run on the device (``triton`` without a GPU, ``cpp`` without a compiler) gets
one row per op saying why, not a time: Triton's CPU interpreter is for verification and is timed
only when ``--backends triton`` asks for it.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import torch

from models.ops._extension import KernelUnavailable
from models.ops.wkv import BACKENDS as WKV_BACKENDS
from models.ops.wkv import bi_wkv, resolve_backend, uni_wkv
from models.ops.wkv import triton_launch as wkv_triton

from benchmark.base import machine, markdown
from benchmark.measure import timing

OPS = {"bi": bi_wkv, "uni": uni_wkv}
BACKENDS = tuple(b for b in WKV_BACKENDS if b != "auto")     # the op's own vocabulary


@dataclass
class Row:
    op: str
    backend: str
    side: int
    channels: int
    forward_ms: float
    train_ms: float
    bytes_moved: int = 0  # k, v, y, gy, gk, gv

    @property
    def gb_per_s(self) -> float:
        return self.bytes_moved / (self.train_ms * 1e-3) / 1e9


def _median_ms(fn, device: torch.device, repeat: int) -> float:
    return timing.time_calls(fn, repeat, 1, device)["median_ms"]


def measure(op: str, backend: str, side: int, channels: int, batch: int, repeat: int, device: torch.device) -> Row:
    tokens = side * side
    gen = torch.Generator().manual_seed(0)
    k, v = (torch.randn(batch, tokens, channels, generator=gen).to(device).requires_grad_() for _ in range(2))
    w, u = (torch.randn(channels, generator=gen).to(device).requires_grad_() for _ in range(2))
    fn = OPS[op]

    def forward():
        with torch.no_grad():
            fn(w / tokens, u / tokens, k, v, backend=backend)

    def forward_backward():
        for leaf in (w, u, k, v):
            leaf.grad = None                                                     # as zero_grad() does
        fn(w / tokens, u / tokens, k, v, backend=backend).sum().backward()

    return Row(op, backend, side, channels, _median_ms(forward, device, repeat),
               _median_ms(forward_backward, device, repeat), bytes_moved=6 * k.numel() * k.element_size())


def unavailable(backend: str, device: torch.device, asked: bool) -> str | None:
    """Why ``backend`` cannot be timed on ``device`` (None: it can). Triton's interpreter on a CPU
    is timed only when asked for by name."""
    if backend == "triton":
        if device.type == "cpu" and not asked:
            return "needs a GPU (on a CPU only Triton's interpreter runs it, for verification)"
        return wkv_triton.availability(device)
    try:
        resolve_backend(backend, device)
    except (KernelUnavailable, ValueError) as err:
        return str(err).splitlines()[0]
    return None


def format_table(rows: list[Row], missing: dict[str, str] | None = None, ops: list[str] = ()) -> str:
    cells = []
    previous: dict[tuple, Row] = {}
    torch_rows = {(r.op, r.channels, r.side): r for r in rows if r.backend == "torch"}
    for r in rows:
        key = (r.op, r.backend, r.channels)
        prev = previous.get(key)
        growth = lambda a, b: f"{a / b:.2f}" if prev is not None and r.side == 2 * prev.side else "-"
        cells.append([r.op, r.backend, r.channels, f"{r.side}x{r.side}", r.side ** 2, f"{r.forward_ms:.2f}",
                      growth(r.forward_ms, prev.forward_ms if prev else 1), f"{r.train_ms:.2f}",
                      growth(r.train_ms, prev.train_ms if prev else 1), f"{r.gb_per_s:.2f}",
                      speedup(r, torch_rows.get((r.op, r.channels, r.side)))])
        previous[key] = r
    for backend, reason in (missing or {}).items():
        short = "needs a GPU" if reason.startswith("needs a GPU") else "unavailable"
        cells += [[op, backend, "-", "-", "-", short, "-", short, "-", "-", "-"] for op in ops]
    notes = [f"- {backend}: {reason}" for backend, reason in (missing or {}).items()]
    header = ["op", "backend", "C", "tokens", "T", "forward ms", "x4", "fwd+bwd ms", "x4", "GB/s", "speedup"]
    return "\n".join([markdown.table(header, cells, "llrlrrrrrrr")] + ([""] + notes if notes else []))


def speedup(row: Row, reference: Row | None) -> str:
    return f"{reference.train_ms / row.train_ms:.2f}" if reference is not None else "-"


def environment(device: torch.device) -> str:
    name = machine.name(device)
    return f"torch {torch.__version__}, device {name}, {torch.get_num_threads()} threads"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.measure.ops", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512],
                        help="image sides; T = side^2 tokens (default: 64 128 256 512)")
    parser.add_argument("--channels", type=int, nargs="+", default=[48], help="C values (default: 48)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--ops", nargs="+", choices=sorted(OPS), default=["bi", "uni"])
    parser.add_argument("--backends", nargs="+", choices=BACKENDS,
                        help="default: all three; those that cannot run on the device get a row saying why")
    parser.add_argument("--repeat", type=int, default=3, help="timed repetitions after one warm-up (median)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if min(args.sizes) < 1 or min(args.channels) < 1 or args.batch < 1 or args.repeat < 1:
        parser.error("sizes, channels, batch and repeat must be positive")
    device = torch.device(args.device)
    asked = args.backends is not None
    missing = {b: why for b in (args.backends or BACKENDS) if (why := unavailable(b, device, asked)) is not None}
    runnable = [b for b in (args.backends or BACKENDS) if b not in missing]
    print(f"WKV benchmark: B={args.batch}, {environment(device)}", flush=True)
    rows = []
    for op in args.ops:
        for backend in runnable:
            for channels in args.channels:
                for side in sorted(args.sizes):
                    rows.append(measure(op, backend, side, channels, args.batch, args.repeat, device))
                    print(f"  {op:>3} {backend:>5} C={channels:<4} {side}x{side}: "
                          f"forward {rows[-1].forward_ms:.1f} ms, fwd+bwd {rows[-1].train_ms:.1f} ms",
                          file=sys.stderr, flush=True)
    print(format_table(rows, missing, args.ops))
    return 0


if __name__ == "__main__":
    sys.exit(main())
