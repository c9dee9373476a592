"""Selective-scan benchmark: the scan at the shapes a MambaIR model calls it with, per backend, and
the training step of MambaIR beside other backbones, all in one run.

    python -m benchmark.measure.scan                          # mambair at 128x128; steps at 64x64, batch 4, 1 thread
    python -m benchmark.measure.scan --model mambair_tiny --size 64 --steps-models mambair_tiny restormer_tiny

Prints two markdown tables. The first gives, per distinct scan call of one forward of ``--model``
at ``--size`` (batch 1), the forward and forward+backward times of each backend and the speedup of
``cpp`` over ``torch``. The second, one training step (forward, L1 loss, backward, AdamW) of each of
``--steps-models`` at ``--steps-size`` with batch ``--steps-batch``, MambaIR models once per scan
backend; ``x restormer`` is the step time over ``restormer_tiny``'s when it is in the list.
Timings are medians after a warm-up, on ``--threads`` threads (default 1, as a smoke run uses).
"""
from __future__ import annotations

import argparse
import sys

import torch

import models
import models.mambair as mambair_module
from models.ops import selective_scan as scan

from benchmark.measure import timing, train_step
from benchmark.base.arguments import add_import_option, import_or_exit

STEP_MODELS = ["mambair_tiny", "restormer_tiny", "restore_rwkv_tiny", "swinir_tiny", "xformer_tiny", "amir_tiny",
               "airnet_tiny"]


def _median_s(fn, repeat: int) -> float:
    return timing.time_calls(fn, repeat)["median_ms"] / 1e3


def scan_calls(model_name: str, size: int) -> list[dict]:
    """The distinct (b, d, l, n, groups) of the scan calls in one forward of the model, with counts."""
    seen: dict[tuple, int] = {}
    original = mambair_module.selective_scan

    def record(u, delta, A, B, C, *args, **kwargs):
        key = (u.shape[0], u.shape[1], u.shape[2], A.shape[1], B.shape[1] if B.dim() == 4 else 1)
        seen[key] = seen.get(key, 0) + 1
        return original(u, delta, A, B, C, *args, **kwargs)

    torch.manual_seed(0)
    model = models.create_model(model_name).eval()
    mambair_module.selective_scan = record
    try:
        with torch.no_grad(), scan.use_backend("cpp"):
            model(torch.rand(1, 1, size, size))
    finally:
        mambair_module.selective_scan = original
    return [dict(zip(("b", "d", "l", "n", "groups"), key), calls=count) for key, count in seen.items()]


def time_scan(shape: dict, backend: str, repeat: int) -> tuple[float, float]:
    """Forward and forward+backward seconds of one scan call of ``shape`` (MambaIR's inputs)."""
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
    parser.add_argument("--model", default="mambair", help="the MambaIR preset whose scan calls are timed")
    parser.add_argument("--size", type=int, default=128, help="its image side (default 128)")
    parser.add_argument("--backends", nargs="+", choices=[b for b in scan.BACKENDS if b != "auto"],
                        default=["torch", "cpp"])
    parser.add_argument("--repeat", type=int, default=3, help="timed calls after a warm-up (median)")
    parser.add_argument("--steps-models", nargs="*", default=STEP_MODELS)
    parser.add_argument("--steps-size", type=int, default=64)
    parser.add_argument("--steps-batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import_or_exit(parser, args.imports)
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
    header = "| b | d | l | n | groups | calls | " + " | ".join(f"{b} fwd ms | {b} fwd+bwd ms" for b in args.backends)
    both = "torch" in args.backends and "cpp" in args.backends
    print(header + (" | speedup fwd | speedup fwd+bwd |" if both else " |"))
    print("|" + "---:|" * (6 + 2 * len(args.backends) + (2 if both else 0)))
    totals = {b: [0.0, 0.0] for b in args.backends}
    for shape in calls:
        times = {b: time_scan(shape, b, args.repeat) for b in args.backends}
        for b, (f, t) in times.items():
            totals[b][0] += f * shape["calls"]
            totals[b][1] += t * shape["calls"]
        cells = " | ".join(f"{f * 1e3:.1f} | {t * 1e3:.1f}" for f, t in times.values())
        ratio = (f" | {times['torch'][0] / times['cpp'][0]:.1f}x | {times['torch'][1] / times['cpp'][1]:.1f}x"
                 if both else "")
        print(f"| {shape['b']} | {shape['d']} | {shape['l']} | {shape['n']} | {shape['groups']} | {shape['calls']} | "
              f"{cells}{ratio} |", flush=True)
    cells = " | ".join(f"{f * 1e3:.0f} | {t * 1e3:.0f}" for f, t in totals.values())
    ratio = (f" | {totals['torch'][0] / totals['cpp'][0]:.1f}x | {totals['torch'][1] / totals['cpp'][1]:.1f}x"
             if both else "")
    print(f"| all calls | | | | | {sum(s['calls'] for s in calls)} | {cells}{ratio} |\n")

    if args.steps_models:
        print(f"### One training step, batch {args.steps_batch}, {args.steps_size}x{args.steps_size}, "
              f"{args.threads} thread(s)\n")
        rows = []
        for name in args.steps_models:
            uses_scan = name.startswith("mambair")
            for backend in (args.backends if uses_scan else ["-"]):
                seconds = step_seconds(name, backend if uses_scan else "auto", args.steps_size, args.steps_batch,
                                       args.repeat)
                rows.append((name, backend, seconds))
                print(f"  {name} ({backend}): {seconds * 1e3:.0f} ms", file=sys.stderr, flush=True)
        reference = next((s for n, _, s in rows if n == "restormer_tiny"), None)
        print("| model | scan backend | step ms | x restormer_tiny |\n|---|---|---:|---:|")
        for name, backend, seconds in rows:
            ratio = f"{seconds / reference:.2f}" if reference else "-"
            print(f"| {name} | {backend} | {seconds * 1e3:.0f} | {ratio} |")


if __name__ == "__main__":
    sys.exit(main())
