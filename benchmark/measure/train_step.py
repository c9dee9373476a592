"""Model-level effect of the WKV backend: the time of one training step (forward, L1 loss, backward,
Adam; ``benchmark.measure.timing``) of a registered model, per backend.

    python -m benchmark.measure.train_step                   # the first paper-size model that calls the WKV, 128x128, B=1
    python -m benchmark.measure.train_step --model restore_rwkv_light --size 256 --batch 2 --repeat 5

Prints a markdown table; ``speedup`` is the ``torch`` backend's step time over the row's. Timings
are medians after one warm-up step; inputs are random (the cost does not depend on the values).
"""
from __future__ import annotations

import argparse
import sys

import torch

import models
from models.ops import wkv

from benchmark.base import markdown
from benchmark.measure import timing
from benchmark.measure.selection import paper_size_models
from benchmark.base.arguments import add_import_option, import_or_exit


def step_seconds(model: torch.nn.Module, backend: str, shape: tuple[int, ...], repeat: int) -> float:
    """Median seconds of ``benchmark.measure.timing.training_step`` (forward, L1, backward, Adam) with the
    WKV ``backend``, after one warm-up step (which also builds the kernel)."""
    gen = torch.Generator().manual_seed(0)
    x, target = torch.randn(*shape, generator=gen), torch.randn(*shape, generator=gen)
    model.set_backends(wkv=backend)
    return timing.time_calls(timing.training_step(model, x, target), repeat)["median_ms"] / 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.measure.train_step", description=__doc__.split("\n")[0])
    add_import_option(parser)
    parser.add_argument("--model", default=None, help="a registered model (default: the first paper-size model "
                                                      "that declares the WKV, register_model(ops=(\"wkv\",)))")
    parser.add_argument("--size", type=int, default=128, help="image side (default: 128)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--channels", type=int, default=1, help="image channels (default: 1)")
    parser.add_argument("--backends", nargs="+", choices=wkv.BACKENDS, default=["torch", "auto"])
    parser.add_argument("--repeat", type=int, default=3, help="timed steps after one warm-up (median)")
    args = parser.parse_args(argv)
    import_or_exit(parser, args.imports)
    if args.model is None:
        full_size = paper_size_models("wkv")
        if not full_size:
            parser.error("no registered model declares the WKV; pass --model")
        args.model = full_size[0]
    if min(args.size, args.batch, args.channels, args.repeat) < 1:
        parser.error("size, batch, channels and repeat must be positive")
    shape = (args.batch, args.channels, args.size, args.size)
    print(f"training step: {args.model}, input {shape}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads", flush=True)
    rows = []
    for backend in args.backends:
        torch.manual_seed(0)
        model = models.create_model(args.model, in_chans=args.channels, out_chans=args.channels)
        seconds = step_seconds(model, backend, shape, args.repeat)
        rows.append((backend, wkv.resolve_backend(backend, "cpu"), seconds))
        print(f"  {backend}: {seconds:.3f} s", file=sys.stderr, flush=True)
    reference = next((s for b, _, s in rows if b == "torch"), None)
    print(markdown.table(["backend", "ran", "step s", "speedup"],
                         [[backend, ran, f"{seconds:.3f}", f"{reference / seconds:.2f}" if reference else "-"]
                          for backend, ran, seconds in rows], "llrr"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
