"""Profiling: parameters, MACs in two conventions, latency and peak memory, resolution scaling.

    python -m benchmark.profile --models restore_rwkv_tiny restore_rwkv_light --sizes 64 128 256
    python -m benchmark.profile --models '*_tiny' --out tables/tiny      # every model's tiny preset

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
import csv
import json
import multiprocessing
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

import models
from models.ops import selective_scan, wkv

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


def count_params(model: nn.Module, deploy: bool = False) -> float:
    """Trainable parameters in millions; ``deploy=True`` counts a re-parameterized copy."""
    if deploy and hasattr(model, "reparameterize"):
        import copy
        model = copy.deepcopy(model).reparameterize()
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6


def _paper_macs(model: nn.Module, x: torch.Tensor) -> float:
    if hasattr(model, "reparameterize"):                       # the paper counts the deploy form
        import copy
        model = copy.deepcopy(model).reparameterize()
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
                               "torchvision::deform_conv2d", _deform_conv_handle)
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
    model = model.to(device).train(mode == "train")
    x = torch.randn(*input_shape, device=device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4) if mode == "train" else None

    def call():
        if mode == "infer":
            with torch.no_grad():
                model(x)
        else:
            optimizer.zero_grad(set_to_none=True)
            (model(x) - x).abs().mean().backward()
            optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        call()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1e3)
    result = {"median_ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times)}
    if device.type == "cuda":
        result["peak_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    return result


def growth_exponent(pixels, values) -> float:
    """Least-squares slope of log(value) against log(pixels): 1 = linear, 2 = quadratic."""
    return float(np.polyfit(np.log(pixels), np.log(values), 1)[0])


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
    is the process's resident-set high-water mark above its level before the timed calls."""
    try:
        torch.manual_seed(0)
        model = models.create_model(name)
        try:
            _reset_peak_rss()
            baseline = _rss_mb("VmRSS")
        except OSError:
            baseline = None                                          # not Linux: no CPU peak memory
        latency = measure_latency(model, (batch, 1, size, size), mode=mode, repeat=repeat)
        if baseline is not None:
            latency.setdefault("peak_mb", max(_rss_mb("VmHWM") - baseline, 0.0))
        macs, uncounted = count_macs(model, (1, 1, size, size), "full")
        queue.put({"model": name, "size": size, "batch": batch, **latency, "full_gmacs": macs,
                   "uncounted": " ".join(uncounted),
                   "wkv_backend": " ".join(sorted(wkv.used_backends()))})
    except Exception as err:  # reported, not raised: the sweep goes on
        queue.put({"model": name, "size": size, "error": f"{type(err).__name__}: {err}"})


def _out_of_memory(row: dict, exitcode: int | None) -> bool:
    return exitcode == -9 or "out of memory" in row.get("error", "").lower()   # -9: the OOM killer


def sweep(names, sizes, mode: str = "infer", repeat: int = 3, batch: int = 1, worker=None) -> list[dict]:
    """Profile every (model, size) in a fresh process; an out-of-memory retries with half the batch
    (down to 1), any other failure is recorded in the row's ``error`` and the sweep goes on.
    ``worker(name, size, batch, mode, repeat, queue)`` is the process body (tests replace it)."""
    worker = worker or _profile_one
    context = multiprocessing.get_context("spawn")
    rows = []
    for name in names:
        for size in sizes:
            tried = batch
            while True:
                queue = context.Queue()
                process = context.Process(target=worker, args=(name, size, tried, mode, repeat, queue))
                process.start()
                process.join()
                row = queue.get() if not queue.empty() else {
                    "model": name, "size": size, "error": f"worker exited with code {process.exitcode}"}
                if "error" in row and tried > 1 and _out_of_memory(row, process.exitcode):
                    tried //= 2
                    continue
                break
            rows.append(row)
            status = row.get("error") or f"{row['median_ms']:.1f} ms (batch {row['batch']}), {row['full_gmacs']:.3f} GMACs"
            print(f"  {name} {size}x{size}: {status}", file=sys.stderr, flush=True)
    return rows


def scaling_table(rows: list[dict]) -> str:
    lines = ["| model | sizes | latency exponent | memory exponent | full MACs exponent | uncounted ops |",
             "|---|---|---:|---:|---:|---|"]
    for name in dict.fromkeys(r["model"] for r in rows):
        ok = [r for r in rows if r["model"] == name and "error" not in r]
        if len(ok) < 2:
            lines.append(f"| {name} | - | - | - | - | {'; '.join(r.get('error', '') for r in rows if r['model'] == name)} |")
            continue
        pixels = [r["size"] ** 2 for r in ok]
        memory = [max(float(r.get("peak_mb") or 0), 1e-3) for r in ok]
        lines.append(f"| {name} | {', '.join(str(r['size']) for r in ok)} | "
                     f"{growth_exponent(pixels, [r['median_ms'] / r['batch'] for r in ok]):.2f} | "
                     f"{growth_exponent(pixels, memory):.2f} | "
                     f"{growth_exponent(pixels, [r['full_gmacs'] for r in ok]):.2f} | "
                     f"{ok[0]['uncounted'] or 'none'} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for name in dict.fromkeys(r["model"] for r in rows):
        ok = [r for r in rows if r["model"] == name and "error" not in r]
        pixels = [r["size"] ** 2 for r in ok]
        for ax, key, label in zip(axes, ("median_ms", "peak_mb", "full_gmacs"), ("latency (ms)", "peak memory (MB)", "full MACs (G)")):
            ax.loglog(pixels, [max(float(r.get(key) or 0), 1e-3) for r in ok], "o-", label=name)
            ax.set_xlabel("pixels")
            ax.set_ylabel(label)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.profile", description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["restore_rwkv_tiny", "restore_rwkv_light", "restore_rwkv"],
                        help="names or shell patterns, e.g. '*_tiny' (default: the Restore-RWKV presets)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--mode", choices=["infer", "train"], default="infer")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--batch", type=int, default=1, help="images per call; halved on out-of-memory")
    parser.add_argument("--out", default="tables", help="folder for scaling.csv, scaling.md, scaling.png")
    args = parser.parse_args(argv)
    names = []
    for pattern in args.models:                                  # names or shell patterns like '*_tiny'
        matched = models.list_models(pattern)
        if not matched:
            parser.error(f"no registered model matches {pattern!r}; registered: {', '.join(models.list_models())}")
        names += [m for m in matched if m not in names]
    args.models = names
    if min(args.sizes) < 8 or args.repeat < 1 or args.batch < 1:
        parser.error("sizes must be >= 8, repeat and batch >= 1")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("| model | params (M) | deploy params (M) | paper MACs (G, 128x128) | full MACs (G, 128x128) |")
    print("|---|---:|---:|---:|---:|")
    for name in args.models:
        model = models.create_model(name)
        full, uncounted = count_macs(model, convention="full")
        print(f"| {name} | {count_params(model):.4f} | {count_params(model, deploy=True):.4f} | "
              f"{count_macs(model, convention='paper')[0]:.4f} | {full:.4f}{' (incomplete)' if uncounted else ''} |")
    rows = sweep(args.models, sorted(args.sizes), args.mode, args.repeat, args.batch)
    environment = {"torch": torch.__version__, "threads": torch.get_num_threads(), "mode": args.mode}
    with open(out / "scaling.csv", "w", newline="") as f:
        fields = ["model", "size", "batch", "median_ms", "min_ms", "max_ms", "peak_mb", "full_gmacs", "uncounted",
                  "wkv_backend", "error"]
        writer = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    table = scaling_table(rows)
    (out / "scaling.md").write_text(f"# Resolution scaling ({args.mode}, CPU)\n\nEnvironment: "
                                    f"{json.dumps(environment)}\n\n{table}\n")
    plot(rows, out / "scaling.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
