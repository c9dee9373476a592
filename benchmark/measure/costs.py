"""Profiling: parameters, MACs in two conventions, latency and peak memory, resolution scaling.

    python -m benchmark.profile                 # every backbone of Tables 1-4: tables/efficiency.md + .png
    python -m benchmark.profile --name tiny_scaling --models '*_tiny' --sizes 64 128 256

Each command measures every model in one run on this machine and writes its record to
``<out>/<name>/efficiency.json`` (the store); ``benchmark.render`` turns it into ``tables/<name>.md``
and ``tables/<name>.png`` (``benchmark.render.efficiency``).

MAC conventions (both in G multiply-accumulates, always named in the output):

- ``paper``: module level, what thop (the counter behind the paper's FLOPs column) sees, on the
  deploy form of a re-parameterizable model: ``Conv2d`` (output elements x in/groups x kh x kw),
  ``ConvTranspose2d`` (the same formula: output elements x in/groups x kh x kw, not the input
  elements x out/groups x kh x kw that it computes), ``Linear`` (output elements x
  in_features), the norms (thop's 2 per element, doubled with an affine transform),
  ``Softmax`` (3n - 1 per row of n) and ``AdaptiveAvgPool2d`` (window + 1 per output). Attention matmuls, scans and WKV are not modules and are not
  counted.
- ``full``: every op of the traced graph (fvcore), with the project's handles: WKV as one op per
  call (``bi_wkv`` 7 MACs per token and channel: e v, the past and future numerator and
  denominator recurrences, the two bonus terms; ``uni_wkv`` 5), the selective scan as one op
  (4 MACs per token, channel and state, 1 per token and channel), deformable convolutions as
  convolutions, norms and variances 1 per input element, besides fvcore's convolutions,
  matmuls, einsum and norms. Element-wise ops (additions, products, activations, padding,
  pixel shuffles) are not multiply-accumulates and count 0. Any other op makes the count
  *incomplete*: it is returned in ``uncounted``, never silently dropped. The traced graph has
  no dead code, so work whose result is unused (AirNet's degradation embedding at inference) is
  not counted here, while ``paper`` counts every module that runs.
"""
from __future__ import annotations

import argparse
import copy
import platform
import re
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

import models
from models._contract import RestorationModel
from models.ops import selective_scan, wkv

from benchmark.base import machine, provenance
from benchmark.measure import timing
from benchmark.base import processes
from benchmark.base.arguments import add_import_option, import_or_exit

WKV_MACS_PER_ELEMENT = {"BiWKVOp": 7, "UniWKVOp": 5}
# selective scan, per (batch, channel, token, state): delta B u (2), the state update (1), C h (1);
# plus D u per (batch, channel, token)
SCAN_MACS_PER_STATE, SCAN_MACS_PER_TOKEN = 4, 1
ELEMENTWISE = {  # ops that are not multiply-accumulates (0 in the full convention)
    "aten::add", "aten::add_", "aten::sub", "aten::rsub", "aten::mul", "aten::mul_", "aten::div", "aten::div_",
    "aten::neg", "aten::abs", "aten::sqrt", "aten::rsqrt", "aten::exp", "aten::log", "aten::pow", "aten::square",
    "aten::sigmoid", "aten::tanh", "aten::gelu", "aten::silu", "aten::softplus", "aten::leaky_relu",
    "aten::leaky_relu_", "aten::hardtanh", "aten::lerp", "aten::softmax", "aten::mean", "aten::sum", "aten::pixel_shuffle",
    "aten::pixel_unshuffle", "aten::reflection_pad2d", "aten::replication_pad2d", "aten::pad", "aten::repeat",
    "aten::clone", "aten::fill_", "aten::max_pool2d", "aten::avg_pool2d", "aten::ones_like", "aten::where",
    "aten::flip", "aten::expm1", "aten::log1p", "aten::softmax", "aten::clamp_min", "aten::expand_as",
    "aten::logaddexp", "aten::index_put", "aten::index_put_", "aten::nonzero_numpy", "aten::topk", "aten::ne",
    "aten::im2col", "aten::col2im", "aten::numpy_T", "aten::scatter", "aten::repeat_interleave", "aten::full_like",
}
NORMS = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d, nn.InstanceNorm2d)


def deployed(model: nn.Module) -> nn.Module:
    """A copy of a registered model in its deploy form (the contract's ``deploy()``); any other
    module as it is."""
    return copy.deepcopy(model).deploy() if isinstance(model, RestorationModel) else model


def count_params(model: nn.Module, deploy: bool = False) -> float:
    """Trainable parameters in millions; ``deploy=True`` counts the deploy form."""
    model = deployed(model) if deploy else model
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6


def _paper_macs(model: nn.Module, x: torch.Tensor) -> float:
    model = deployed(model)                                    # the paper counts the deploy form
    total = [0]

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            total[0] += output.numel() * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, nn.ConvTranspose2d):                # thop: as a conv producing the output
            total[0] += output.numel() * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        elif isinstance(module, nn.Linear):
            total[0] += output.numel() * module.in_features
        elif isinstance(module, nn.AdaptiveAvgPool2d):          # thop: (window adds + 1 divide) per output
            window = (inputs[0].shape[-2] // output.shape[-2]) * (inputs[0].shape[-1] // output.shape[-1])
            total[0] += (window + 1) * output.numel()
        elif isinstance(module, nn.Softmax):                    # thop: n exp, n - 1 adds, n divides per row
            n = inputs[0].shape[module.dim]
            total[0] += inputs[0].numel() // n * (3 * n - 1)
        elif isinstance(module, NORMS):                         # thop: 2 per element, twice that if affine
            affine = getattr(module, "elementwise_affine", getattr(module, "affine", False))
            total[0] += 2 * inputs[0].numel() * (2 if affine else 1)

    counted = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, nn.Softmax, nn.AdaptiveAvgPool2d) + NORMS
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, counted)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total[0] / 1e9


def _wkv_handle(inputs, outputs):
    shape = outputs[0].type().sizes()
    return int(np.prod(shape))


def _reduction_handle(inputs, outputs):
    """Norms and variances: one multiply-accumulate per input element."""
    return int(np.prod(inputs[0].type().sizes()))


def _deform_conv_handle(inputs, outputs):
    """A deformable convolution costs what the convolution does (the bilinear sampling is not MACs)."""
    weight = inputs[1].type().sizes()                                      # (out, in / groups, kh, kw)
    return int(np.prod(outputs[0].type().sizes())) * int(np.prod(weight[1:]))


def _attention_handle(inputs, outputs):
    """Fused attention, softmax(q k^T) v: the two products, B * heads * L * S * (d + d_v) MACs (the
    softmax and the mask are elementwise, as everywhere in the full convention)."""
    q, k, v = (inputs[i].type().sizes() for i in range(3))                 # (..., L, d), (..., S, d), (..., S, d_v)
    return int(np.prod(q[:-1])) * k[-2] * (q[-1] + v[-1])


def _scan_handle(inputs, outputs):
    tokens = int(np.prod(outputs[0].type().sizes()))                       # (b, d, l)
    states = inputs[2].type().sizes()[1]                                   # A: (d, n)
    return tokens * (SCAN_MACS_PER_STATE * states + SCAN_MACS_PER_TOKEN)


def _full_macs(model: nn.Module, x: torch.Tensor) -> tuple[float, list[str]]:
    with warnings.catch_warnings():                 # fvcore's import scripts a loss with the deprecated torch.jit
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis
    with wkv.as_single_ops(), selective_scan.as_single_op(), warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        analysis = FlopCountAnalysis(model, x)
        for name, per_element in WKV_MACS_PER_ELEMENT.items():
            analysis.set_op_handle(f"prim::PythonOp.{name}",
                                   lambda i, o, k=per_element: k * _wkv_handle(i, o))
        analysis.set_op_handle("prim::PythonOp.SelectiveScanOp", _scan_handle,
                               "aten::linalg_vector_norm", _reduction_handle, "aten::var", _reduction_handle,
                               "torchvision::deform_conv2d", _deform_conv_handle,
                               "aten::scaled_dot_product_attention", _attention_handle)
        analysis.set_op_handle(*[item for op in ELEMENTWISE for item in (op, None)])
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        total = analysis.total()
        uncounted = sorted(analysis.unsupported_ops())
    return total / 1e9, uncounted


def count_macs(model: nn.Module, input_shape=(1, 1, 128, 128), convention: str = "paper") -> tuple[float, list[str]]:
    """MACs in G of one forward pass at ``input_shape``, and the ops left uncounted (always empty
    for ``paper``, whose convention is to count modules only)."""
    if convention not in ("paper", "full"):
        raise ValueError(f"unknown MAC convention {convention!r}; expected 'paper' or 'full'")
    was_training = model.training
    model.eval()
    try:
        x = torch.zeros(*input_shape)
        if convention == "paper":
            return _paper_macs(model, x), []
        return _full_macs(model, x)
    finally:
        model.train(was_training)


def measure_latency(model: nn.Module, input_shape, mode: str = "infer", device: str = "cpu", repeat: int = 5,
                    warmup: int = 1) -> dict:
    """Median and spread (min, max) in ms of ``repeat`` timed calls after ``warmup`` ones: ``infer``
    is a no-grad forward, ``train`` a forward, L1 loss, backward and Adam step."""
    if mode not in ("infer", "train"):
        raise ValueError(f"unknown mode {mode!r}; expected 'infer' or 'train'")
    device = torch.device(device)
    model = model.to(device)
    x = torch.randn(*input_shape, device=device)
    call = timing.inference_call(model, x) if mode == "infer" else timing.training_step(model, x)
    return timing.time_calls(call, repeat, warmup, device)


def _rss_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, from /proc (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise OSError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> None:
    Path("/proc/self/clear_refs").write_text("5")                   # resets VmHWM to VmRSS


def _profile_one(name: str, size: int, batch: int, mode: str, repeat: int, queue) -> None:
    """Runs in its own process, so that a crash or an out-of-memory stays there; CPU peak memory
    is the process's resident-set high-water mark above its level before the timed calls. Inference
    runs the deploy form (re-parameterised), as the paper measures it."""
    try:
        torch.manual_seed(0)
        model = models.create_model(name)
        if mode == "infer":
            model.deploy()
        try:
            _reset_peak_rss()
            baseline = _rss_mb("VmRSS")
        except OSError:
            baseline = None                                          # not Linux: no CPU peak memory
        device = "cuda" if torch.cuda.is_available() else "cpu"
        latency = measure_latency(model, (batch, 1, size, size), mode=mode, device=device, repeat=repeat)
        if baseline is not None:
            latency.setdefault("peak_mb", max(_rss_mb("VmHWM") - baseline, 0.0))
        used = model.used_backends()
        macs, uncounted = count_macs(model.cpu(), (1, 1, size, size), "full")
        queue.put({"model": name, "size": size, "batch": batch, **latency, "full_gmacs": macs,
                   "uncounted": " ".join(uncounted),
                   **{f"{kind}_backend": " ".join(names) for kind, names in used.items()}})   # e.g. wkv_backend
    except Exception as err:  # reported, not raised: the sweep goes on
        queue.put({"model": name, "size": size, "error": f"{type(err).__name__}: {err}"})


def sweep(names, sizes, mode: str = "infer", repeat: int = 3, batch: int = 1, worker=None,
          max_seconds: float | None = None) -> list[dict]:
    """Profile every (model, size) in a fresh process, sizes in increasing order. Each row has an
    ``outcome``: ``ok``; ``oom`` (out of memory even at batch 1: an out-of-memory first retries with
    half the batch); ``error`` (the message in ``error``; the sweep goes on); ``skipped``: not run
    because one call would take more than ``max_seconds`` (predicted from the previous size,
    scaled by the pixel count; the larger sizes of that model are skipped too).
    ``worker(name, size, batch, mode, repeat, queue)`` is the process body (tests replace it)."""
    worker = worker or _profile_one
    rows = []
    for name in names:
        previous = None
        for size in sorted(sizes):
            if previous is not None and previous.get("outcome") in ("oom", "skipped"):
                row = {"model": name, "size": size, "outcome": previous["outcome"]}
            elif (max_seconds is not None and previous is not None and previous.get("outcome") == "ok"
                    and previous["median_ms"] / previous["batch"] * (size / previous["size"]) ** 2 > 1e3 * max_seconds):
                row = {"model": name, "size": size, "outcome": "skipped"}
            else:
                row = _one_point(worker, name, size, batch, mode, repeat)
            rows.append(row)
            previous = row
            print(f"  {name} {size}x{size} ({mode}): {_describe(row, max_seconds)}", file=sys.stderr, flush=True)
    return rows


def _describe(row: dict, max_seconds: float | None) -> str:
    if row["outcome"] == "ok":
        return f"{row['median_ms']:.1f} ms (batch {row['batch']}), {row['full_gmacs']:.3f} GMACs"
    if row["outcome"] == "skipped":
        return f"skipped (one call would exceed {max_seconds:g} s)"
    return "out of memory" if row["outcome"] == "oom" else row["error"]


def _one_point(worker, name: str, size: int, batch: int, mode: str, repeat: int) -> dict:
    tried = batch
    while True:
        row, exitcode = processes.run_isolated(worker, name, size, tried, mode, repeat)
        row = row or {"model": name, "size": size, "error": f"worker exited with code {exitcode}"}
        if "error" not in row:
            return {**row, "outcome": "ok"}
        if processes.out_of_memory(exitcode, row["error"]):
            if tried > 1:
                tried //= 2
                continue
            return {**row, "outcome": "oom"}
        return {**row, "outcome": "error"}


def measure(names: list[str], sizes: list[int], *, repeat: int = 3, max_seconds: float = 10.0,
            train_size: int = 128, train_batch: int = 4, macs_size: int = 128, worker=None) -> dict:
    """Everything the efficiency table shows, measured now, in one run (see ``benchmark.render.efficiency``)."""
    rows = []
    for name in names:
        model = models.create_model(name)
        full, uncounted = count_macs(model, (1, 1, macs_size, macs_size), "full")
        rows.append({"model": name, "params_m": count_params(model), "deploy_params_m": count_params(model, True),
                     "paper_gmacs": count_macs(model, (1, 1, macs_size, macs_size), "paper")[0],
                     "full_gmacs": full, "uncounted": uncounted})
        print(f"  {name}: {rows[-1]['params_m']:.3f} M params, {full:.2f} GMACs (full, {macs_size}x{macs_size})",
              file=sys.stderr, flush=True)
    inference = sweep(names, sizes, "infer", repeat, 1, worker, max_seconds)
    training = sweep(names, [train_size], "train", repeat, train_batch, worker)
    return {"environment": {"machine": machine.name(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                            "device": "cuda" if torch.cuda.is_available() else "cpu", "platform": platform.platform(),
                            "date": time.strftime("%Y-%m-%d"), "code_hash": provenance.code_hash(),
                            **{f"git_{k}": v for k, v in provenance.git_state().items()}},
            "settings": {"sizes": sorted(sizes), "repeat": repeat, "max_seconds": max_seconds, "train_size": train_size,
                         "train_batch": train_batch, "macs_size": macs_size},
            "models": rows, "inference": inference, "training": training}


def main(argv: list[str] | None = None, default_models=None) -> int:
    """The command; ``default_models()`` gives the models profiled when ``--models`` is not given
    (``python -m benchmark.profile``: every backbone of the grids of Tables 1-4)."""
    parser = argparse.ArgumentParser(prog="python -m benchmark.profile", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n")[1:9]))
    add_import_option(parser)
    parser.add_argument("--name", default="efficiency", help="the record's name: <out>/<name>/, tables/<name>.md")
    parser.add_argument("--title", default=None, help="the table's title")
    parser.add_argument("--models", nargs="+", default=None,
                        help="names or shell patterns, e.g. '*_tiny' (default: every model of the grids of Tables 1-4)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256, 512, 1024],
                        help="image sides for latency and memory (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3, help="timed calls per point (default: 3)")
    parser.add_argument("--max-seconds", type=float, default=10.0,
                        help="do not run a size whose one call is predicted to take longer (default: 10)")
    parser.add_argument("--train-size", type=int, default=128, help="training-step crop (default: 128)")
    parser.add_argument("--train-batch", type=int, default=4, help="training-step batch (default: 4)")
    parser.add_argument("--out", default="runs", help="the store's root folder (default: runs)")
    parser.add_argument("--tables", default="tables", help="where the table and figure go (default: tables)")
    args = parser.parse_args(argv)
    import_or_exit(parser, args.imports)
    names = []
    if not args.models and default_models is None:
        parser.error("--models is required (no default list was given)")
    for pattern in args.models or default_models():             # names or shell patterns like '*_tiny'
        matched = models.list_models(pattern)
        if not matched:
            parser.error(f"no registered model matches {pattern!r}; registered: {', '.join(models.list_models())}")
        names += [m for m in matched if m not in names]
    if min(args.sizes) < 8 or min(args.repeat, args.train_batch, args.train_size) < 1 or args.max_seconds <= 0:
        parser.error("sizes must be >= 8; repeat, train sizes >= 1; max-seconds > 0")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", args.name) or ".." in args.name:
        parser.error(f"--name {args.name!r} is not a plain name (letters, digits, '_', '-', '.')")
    from benchmark.results import store
    from benchmark.render.efficiency import render_efficiency
    record = measure(names, args.sizes, repeat=args.repeat, max_seconds=args.max_seconds,
                     train_size=args.train_size, train_batch=args.train_batch)
    command = "python -m benchmark.profile " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    record = {"name": args.name, "title": args.title or ("Efficiency of every backbone" if args.name == "efficiency"
                                                         else args.name), "command": command.strip(), **record}
    folder = Path(args.out) / args.name
    store.write_json(folder / "efficiency.json", record)
    for path in render_efficiency(folder, args.tables):
        print(path)
    return 0

