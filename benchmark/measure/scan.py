"""Selective-scan benchmark: the scan at the shapes a model calls it with, per backend, and the
training step of the models that call it beside other backbones, all in one run.

    python -m benchmark.measure.scan                # the first paper-size model that calls the scan, 128x128
    python -m benchmark.measure.scan --model mambair_tiny --size 64 --steps-models mambair_tiny restormer_tiny

The models come from the registry: a model declares the kernel ops it calls
(``register_model(ops=("scan",))``, checked by ``check_model``). Prints two markdown tables. The
first gives, per distinct scan call of one forward of ``--model`` at ``--size`` (batch 1), the
forward and forward+backward times of each backend and the speedup of ``cpp`` over ``torch``. The
second, one training step (forward, L1 loss, backward, AdamW) of each of ``--steps-models``
(default: the tiny presets of every model that declares a kernel op) at ``--steps-size`` with
batch ``--steps-batch``, a model that calls the scan once per scan backend; ``x first`` is the
step time over the first row's.
Timings are medians after a warm-up, on ``--threads`` threads (default 1, as a smoke run uses).
"""
from __future__ import annotations

import argparse
import sys

import torch

import models
from models.ops import selective_scan as scan

from benchmark.measure import timing, train_step
from benchmark.measure.selection import paper_size_models
from benchmark.base import markdown
from benchmark.base.arguments import add_import_option, import_or_exit



def scan_models() -> list[str]:
    """The paper-size registered models that declare the scan (``ModelInfo.ops``)."""
    return paper_size_models("scan")


def kernel_tiny_presets() -> list[str]:
    """The tiny presets of every family that declares a kernel op."""
    return sorted({models.model_info(n).tiny for n in models.list_models() if models.model_info(n).ops} - {None})


def _median_s(fn, repeat: int) -> float:
    return timing.time_calls(fn, repeat)["median_ms"] / 1e3


def scan_calls(model_name: str, size: int) -> list[dict]:
    """The distinct (b, d, l, n, groups) of the scan calls in one forward of the model, with counts."""
    torch.manual_seed(0)
    model = models.create_model(model_name).eval().set_backends(scan="cpp")
    with torch.no_grad(), scan.recording_calls() as calls:
        model(torch.rand(1, model.in_chans, size, size))
    counts: dict[tuple, int] = {}
    for key in calls:
        counts[key] = counts.get(key, 0) + 1
    return [dict(zip(("b", "d", "l", "n", "groups"), key), calls=count) for key, count in counts.items()]


def time_scan(shape: dict, backend: str, repeat: int) -> tuple[float, float]:
    """Forward and forward+backward seconds of one scan call of ``shape`` (random inputs, decays as Mamba's)."""
    gen = torch.Generator().manual_seed(0)
    b, d, length, n, groups = (shape[k] for k in ("b", "d", "l", "n", "groups"))
    tensors = [torch.randn(b, d, length, generator=gen), torch.randn(b, d, length, generator=gen) - 4,
               -torch.arange(1, n + 1, dtype=torch.float32).repeat(d, 1),
               torch.randn(b, groups, n, length, generator=gen), torch.randn(b, groups, n, length, generator=gen)]
    D, bias = torch.ones(d), torch.zeros(d)
    leaves = [t.requires_grad_() for t in tensors]

    def forward():
        with torch.no_grad():
            scan.selective_scan(*tensors, D, bias, delta_softplus=True, backend=backend)

    def train():
        scan.selective_scan(*leaves, D, bias, delta_softplus=True, backend=backend).sum().backward()

    return _median_s(forward, repeat), _median_s(train, repeat)


def step_seconds(model_name: str, scan_backend: str, size: int, batch: int, repeat: int) -> float:
    """Median seconds of one training step (``benchmark.measure.train_step``'s) with ``scan_backend``."""
    torch.manual_seed(0)
    model = models.create_model(model_name).set_backends(scan=scan_backend)
    return train_step.step_seconds(model, "auto", (batch, 1, size, size), repeat)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.measure.scan", description=__doc__.split("\n")[0])
    add_import_option(parser)
    parser.add_argument("--model", default=None, help="the model whose scan calls are timed (default: the first "
                                                      "paper-size model that declares the scan)")
    parser.add_argument("--size", type=int, default=128, help="its image side (default 128)")
    parser.add_argument("--backends", nargs="+", choices=[b for b in scan.BACKENDS if b != "auto"],
                        default=["torch", "cpp"])
    parser.add_argument("--repeat", type=int, default=3, help="timed calls after a warm-up (median)")
    parser.add_argument("--steps-models", nargs="*", default=None,
                        help="models of the training-step table (default: the tiny presets of every model that "
                             "declares a kernel op)")
    parser.add_argument("--steps-size", type=int, default=64)
    parser.add_argument("--steps-batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import_or_exit(parser, args.imports)
    if args.model is None:
        if not scan_models():
            parser.error("no registered model declares the scan (register_model(ops=(\"scan\",))); pass --model")
        args.model = scan_models()[0]
    if args.steps_models is None:
        args.steps_models = kernel_tiny_presets()
    if min(args.size, args.repeat, args.steps_size, args.steps_batch, args.threads) < 1:
        parser.error("sizes, repeat, batch and threads must be positive")
    unknown = [m for m in [args.model, *args.steps_models] if m not in models.list_models()]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        _report(args)
    finally:
        torch.set_num_threads(threads)                   # a caller's process keeps its own setting
    return 0


def _report(args: argparse.Namespace) -> None:
    print(f"selective scan on {args.threads} thread(s), torch {torch.__version__}, "
          f"cpp kernel: {scan.resolve_backend('auto', 'cpu') == 'cpp'}\n", flush=True)

    calls = scan_calls(args.model, args.size)
    print(f"### The scan calls of one `{args.model}` forward at {args.size}x{args.size} (batch 1)\n")
    both = "torch" in args.backends and "cpp" in args.backends
    header = ["b", "d", "l", "n", "groups", "calls"] + [f"{b} {what} ms" for b in args.backends for what in ("fwd", "fwd+bwd")]
    header += ["speedup fwd", "speedup fwd+bwd"] if both else []
    totals = {b: [0.0, 0.0] for b in args.backends}
    rows = []
    for shape in calls:
        times = {b: time_scan(shape, b, args.repeat) for b in args.backends}
        for b, (f, t) in times.items():
            totals[b][0] += f * shape["calls"]
            totals[b][1] += t * shape["calls"]
        ratio = ([f"{times['torch'][0] / times['cpp'][0]:.1f}x", f"{times['torch'][1] / times['cpp'][1]:.1f}x"]
                 if both else [])
        rows.append([shape[k] for k in ("b", "d", "l", "n", "groups", "calls")]
                    + [f"{v * 1e3:.1f}" for pair in times.values() for v in pair] + ratio)
        print(f"  {rows[-1]}", file=sys.stderr, flush=True)
    ratio = ([f"{totals['torch'][0] / totals['cpp'][0]:.1f}x", f"{totals['torch'][1] / totals['cpp'][1]:.1f}x"]
             if both else [])
    rows.append(["all calls", "", "", "", "", sum(s["calls"] for s in calls)]
                + [f"{v * 1e3:.0f}" for pair in totals.values() for v in pair] + ratio)
    print(markdown.table(header, rows, "r" * len(header)) + "\n")

    if args.steps_models:
        print(f"### One training step, batch {args.steps_batch}, {args.steps_size}x{args.steps_size}, "
              f"{args.threads} thread(s)\n")
        rows = []
        for name in args.steps_models:
            uses_scan = "scan" in models.model_info(name).ops
            for backend in (args.backends if uses_scan else ["-"]):
                seconds = step_seconds(name, backend if uses_scan else "auto", args.steps_size, args.steps_batch,
                                       args.repeat)
                rows.append((name, backend, seconds))
                print(f"  {name} ({backend}): {seconds * 1e3:.0f} ms", file=sys.stderr, flush=True)
        reference = rows[0][2]
        print(markdown.table(["model", "scan backend", "step ms", f"x {rows[0][0]} ({rows[0][1]})"],
                             [[name, backend, f"{seconds * 1e3:.0f}", f"{seconds / reference:.2f}"]
                              for name, backend, seconds in rows], align="llrr"))


if __name__ == "__main__":
    sys.exit(main())
