"""The GPU check: the first thing to run on a machine with a GPU (in under 8 minutes).

    python -m benchmark.gpu_check --out tables/gpu_check.md   # from the repository root, nothing to install
    python -m benchmark.gpu_check --quick              # one size each, for a first look

It needs only PyTorch (>= 2.11), Triton, NumPy, SciPy, scikit-image, matplotlib, pandas, PyYAML,
tqdm, timm, einops, ninja and pytest (a bare GPU machine's image); nibabel, pydicom, fvcore,
submitit and thop are optional.

1. runs every ``gpu``-marked test (``pytest -m gpu``: the Triton WKV kernel compiled against the
   float64 oracle, the selective scan against mamba_ssm when it is installed, a model on each backend);
2. times the Triton WKV (``bi_wkv``, forward + backward, B = 1) at T = 128^2 ... 1024^2 and
   C = 48 ... 384 beside its memory floor: the bytes it must move at least (``traffic.floor_bytes``) over
   the device's copy bandwidth, measured here with a large device-to-device copy, and beside the
   static report's issue-bound time of the same call (``gpu_static``, compiled for this GPU);
3. times one training step (forward, L1, backward, Adam) of every paper-size model that declares a
   kernel op (``register_model(ops=...)``; ``--models`` for others) at batch 4, 128x128, in fp32
   and bf16 (``train.precision``), with the backends that ran (the selective scan is mamba_ssm's
   kernel only when it is installed: ``pip install -e ".[cuda]"``);

and writes one markdown report. Every section stops early, saying so, when the time budget runs
out; an out-of-memory point is reported as such. ``--device cpu`` exercises the script itself on a
machine without a GPU (Triton's interpreter, tiny sizes and the ``_tiny`` presets by default; set
it restarts itself with TRITON_INTERPRET=1 when that is unset): its numbers mean nothing, and a point that would not fit in the available
memory is skipped, saying so (on a CPU, running out is the OOM killer, not an error).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

import models
from models.ops import wkv

from benchmark.measure import costs, gpu_static, timing, traffic
from benchmark.base import machine, markdown
from benchmark.measure.selection import paper_size_models

SIDES = (128, 256, 512, 1024)
CHANNELS = (48, 96, 192, 384)
# --device cpu checks the script, not a machine: tiny sizes and the tiny presets, in seconds
CPU_SIDES, CPU_CHANNELS, CPU_BATCH, CPU_SIZE = (8, 16), (8,), 1, 32
PRECISIONS = ("fp32", "bf16")
ROOT = Path(__file__).resolve().parents[2]
# Memory a WKV forward + backward holds at its peak, in tensors of T x C floats: an upper bound
# (the fused kernels keep k, v, y, gy, gk, gv and chunk states under one tensor; float64 sums double
# the states).
WKV_TENSORS = 16


class Budget:
    """Seconds left of the whole check."""

    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def copy_bandwidth(device: torch.device, mib: int = 1024, repeat: int = 5) -> float:
    """Bytes per second of a device-to-device copy of ``mib`` MiB (read + write counted)."""
    source = torch.empty(mib * 2 ** 18, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    seconds = timing.time_calls(lambda: target.copy_(source), repeat, 2, device)["median_ms"] / 1e3
    return 2 * source.numel() * source.element_size() / seconds


def run_gpu_tests(budget: Budget, device: torch.device) -> tuple[str, str]:
    """(summary line, outcome) of ``pytest -m gpu`` in a child process."""
    if device.type != "cuda":
        return "not run: the gpu tests need a CUDA device", "skipped"
    timeout = max(30.0, min(240.0, budget.left() - 200))
    command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", str(ROOT / "tests")]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return f"stopped after {timeout:.0f} s (time budget)", "timeout"
    lines = [line for line in done.stdout.strip().splitlines() if line.strip()]
    summary = lines[-1].strip("= ") if lines else f"pytest exited {done.returncode} with no output"
    failures = [line for line in lines if line.startswith(("FAILED", "ERROR"))]
    return summary + ("".join(f"\n  - {f}" for f in failures[:20])), "passed" if done.returncode == 0 else "failed"


def time_wkv(side: int, channels: int, device: torch.device, repeat: int) -> dict:
    tokens = side * side
    gen = torch.Generator(device=device).manual_seed(0)
    k, v = (torch.randn(1, tokens, channels, device=device, generator=gen).requires_grad_() for _ in range(2))
    w, u = (torch.randn(channels, device=device, generator=gen).requires_grad_() for _ in range(2))
    gy = torch.randn(1, tokens, channels, device=device, generator=gen)

    def forward_backward():
        for leaf in (w, u, k, v):
            leaf.grad = None
        wkv.bi_wkv(w / tokens, u / tokens, k, v, backend="triton").backward(gy)
    stats = timing.time_calls(forward_backward, repeat, 1, device)
    return {"ms": stats["median_ms"], "bytes": traffic.floor_bytes(*k.shape, k.element_size()), "peak_mb": stats.get("peak_mb")}


def time_training_step(name: str, precision: str, device: torch.device, batch: int, size: int,
                       repeat: int) -> dict:
    torch.manual_seed(0)
    model = models.create_model(name).to(device).set_backends(wkv="auto", scan="auto")
    x = torch.rand(batch, getattr(model, "in_chans", 1), size, size, device=device)
    stats = timing.time_calls(timing.training_step(model, x, precision=precision), repeat, 1, device)
    used = model.used_backends()
    return {"ms": stats["median_ms"], "peak_mb": stats.get("peak_mb"),
            "backends": ", ".join(f"{kind}: {'/'.join(names)}" for kind, names in used.items()) or "-"}


def _attempt(measure, device: torch.device) -> dict | str:
    """``measure()``'s row, or what stopped it ("out of memory", "failed: ..."): one point's failure
    is that point's result, and the check goes on."""
    try:
        return measure()
    except Exception as err:       # noqa: BLE001
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower():
            return "out of memory"
        return f"failed: {type(err).__name__}: {(str(err).splitlines() or [''])[0][:120]}"


def free_memory(device: torch.device) -> int | None:
    """Bytes free now: the GPU's, or the machine's available memory on a CPU (None if unknown). A
    CPU that runs out is not an exception but the kernel's OOM killer, so CPU points are checked
    against this before they run; a GPU's out-of-memory error is caught and reported instead."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def fits(device: torch.device, needed: int) -> str | None:
    """None when ``needed`` bytes fit on a CPU (or the device is a GPU), else why the point is skipped."""
    free = free_memory(device) if device.type == "cpu" else None
    if free is not None and needed > 0.8 * free:
        return f"skipped: needs about {needed / 2 ** 30:.1f} GiB, {free / 2 ** 30:.1f} GiB available"
    return None


def wkv_section(device: torch.device, sides, channels, repeat: int, budget: Budget, bandwidth: float) -> list[str]:
    rows = []
    for c in channels:
        for side in sides:
            label = [f"{side}^2 = {side * side}", c]
            if budget.left() < 120:
                rows.append(label + ["skipped: time budget", "", "", "", "", ""])
                continue
            too_big = fits(device, WKV_TENSORS * side * side * c * 4)
            if too_big:
                rows.append(label + [too_big, "", "", "", "", ""])
                continue
            row = _attempt(lambda: time_wkv(side, c, device, repeat), device)
            if isinstance(row, str):
                rows.append(label + [row, "", "", "", "", ""])
                continue
            floor_ms = row["bytes"] / bandwidth * 1e3
            peak = f"{row['peak_mb']:.0f}" if row["peak_mb"] is not None else "-"
            rows.append(label + [f"{row['ms']:.3f}", static_estimate(device, side, c), f"{row['bytes'] / 1e6:.1f}",
                                 f"{floor_ms:.3f}", f"{row['ms'] / floor_ms:.1f}", peak])
            print(rows[-1], file=sys.stderr, flush=True)
    header = ["T", "C", "fwd+bwd ms", "static issue-bound ms", "bytes moved (MB)", "floor ms", "x floor", "peak MB"]
    return markdown.table(header, rows, "r" * len(header)).split("\n")


def static_estimate(device: torch.device, side: int, channels: int) -> str:
    """The static report's issue-bound time of the same call (``gpu_static``: the kernels compiled for
    this GPU's capability, their SASS counted), to set beside the measured time; or why not."""
    if device.type != "cuda":
        return "- (no GPU)"
    major, minor = torch.cuda.get_device_capability(device)
    capability = 10 * major + minor
    if capability not in gpu_static.GPUS:
        return f"- (no model of sm_{capability})"
    try:
        return f"{gpu_static.analyse('bi', 'fp32', (1, side * side, channels), capability)['issue_ms']:.3f}"
    except Exception as error:                              # a report, not a crash: say what failed
        return f"- ({type(error).__name__}: {error})"[:80]


def training_section(device: torch.device, names, batch: int, size: int, repeat: int, budget: Budget) -> list[str]:
    rows = []
    for name in names:
        params = costs.count_params(models.create_model(name))
        for precision in PRECISIONS:
            label = [name, f"{params:.3f}", precision]
            if budget.left() < 45:
                rows.append(label + ["skipped: time budget", "", ""])
                continue
            row = _attempt(lambda: time_training_step(name, precision, device, batch, size, repeat), device)
            if isinstance(row, str):
                rows.append(label + [row, "", ""])
                continue
            peak = f"{row['peak_mb']:.0f}" if row["peak_mb"] is not None else "-"
            rows.append(label + [f"{row['ms']:.1f}", peak, row["backends"]])
            print(rows[-1], file=sys.stderr, flush=True)
    return markdown.table(["model", "params (M)", "precision", "step ms", "peak MB", "backends"], rows,
                          "lrlrrl").split("\n")


def kernel_models() -> list[str]:
    """The paper-size registered models that declare a kernel op (``register_model(ops=...)``)."""
    return paper_size_models()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.gpu_check", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("tables/gpu_check.md"), help="the report (markdown)")
    parser.add_argument("--device", default="cuda", help="cuda (default); cpu only to exercise the script")
    parser.add_argument("--budget", type=float, default=470.0, help="seconds for the whole check (default 470)")
    parser.add_argument("--quick", action="store_true", help="one WKV size per C and 2 timed repetitions")
    parser.add_argument("--sides", type=int, nargs="+", help=f"WKV image sides (default {SIDES}; --device cpu: {CPU_SIDES})")
    parser.add_argument("--channels", type=int, nargs="+", help=f"WKV channels (default {CHANNELS}; cpu: {CPU_CHANNELS})")
    parser.add_argument("--models", nargs="+", help="models of the training step (default: every paper-size model "
                                                    "that declares a kernel op; cpu: their tiny presets)")
    parser.add_argument("--batch", type=int, help="training-step batch (default 4; cpu: 1)")
    parser.add_argument("--size", type=int, help="training-step image side (default 128; cpu: 32)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--skip-tests", action="store_true", help="do not run pytest -m gpu")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1" and argv is None:
        # Triton's interpreter is chosen when Triton is imported (here, with the models): start again with it
        print("gpu_check: --device cpu runs Triton's interpreter; restarting with TRITON_INTERPRET=1", file=sys.stderr)
        os.execve(sys.executable, [sys.executable, "-m", "benchmark.gpu_check", *sys.argv[1:]],
                  {**os.environ, "TRITON_INTERPRET": "1"})
    full_size = tuple(kernel_models())
    tiny = tuple(t for t in (models.model_info(n).tiny for n in full_size) if t is not None)
    defaults = ((SIDES, CHANNELS, full_size, 4, 128) if device.type == "cuda"
                else (CPU_SIDES, CPU_CHANNELS, tiny, CPU_BATCH, CPU_SIZE))
    for key, value in zip(("sides", "channels", "models", "batch", "size"), defaults):
        if getattr(args, key) is None:
            setattr(args, key, list(value) if isinstance(value, tuple) else value)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA device is visible; this check needs a GPU (--device cpu only exercises the "
              "script, with meaningless numbers)", file=sys.stderr)
        return 2
    unknown = [m for m in args.models if m not in models.list_models()]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}")
    budget = Budget(args.budget)
    started = time.monotonic()
    sides = args.sides[:1] if args.quick else args.sides
    repeat = 2 if args.quick else args.repeat
    name = machine.name(device)
    print(f"gpu_check on {name}", file=sys.stderr, flush=True)

    tests, outcome = ("not run (--skip-tests)", "skipped") if args.skip_tests else run_gpu_tests(budget, device)
    print(f"gpu tests: {tests}", file=sys.stderr, flush=True)
    bandwidth = copy_bandwidth(device, mib=1024 if device.type == "cuda" else 64)
    wkv_lines = wkv_section(device, sides, args.channels, repeat, budget, bandwidth)
    step_lines = training_section(device, args.models, args.batch, args.size, repeat, budget)
    mamba = ("installed" if importlib.util.find_spec("mamba_ssm") is not None
             else "not installed (the selective scan ran its PyTorch path)")

    report = [
        "# GPU check", "",
        f"Device {name}; torch {torch.__version__} (CUDA {torch.version.cuda}); Python {platform.python_version()}; "
        f"mamba_ssm {mamba}; {time.monotonic() - started:.0f} s in all (budget {args.budget:.0f} s).", "",
        f"## gpu-marked tests: {outcome}", "", tests, "",
        "## Triton WKV (bi_wkv), forward + backward, B = 1, float32", "",
        f"Floor: bytes moved at least (forward: read k, v, write y; backward: read gy, k, v, write gk, gv: "
        f"{traffic.FLOOR_TENSORS} x T x C x 4 B) over the measured device-to-device "
        f"copy bandwidth, {bandwidth / 1e9:.0f} GB/s; `x floor` is the time over it. `static issue-bound "
        f"ms`: the time the GPU needs just to issue the kernels' instructions, counted in their SASS "
        f"without running them (`python -m benchmark.measure.gpu_static`).", "",
        *wkv_lines, "",
        f"## Training step (forward, L1, backward, Adam), batch {args.batch}, {args.size}x{args.size}", "",
        "fp32: float32 throughout; bf16: the forward and loss under bfloat16 autocast, the WKV and the "
        "selective scan in float32 inside (`train.precision`).", "",
        *step_lines, ""]
    if device.type != "cuda":
        report.insert(2, "**Run with --device cpu: a check of the script, not of a GPU; the times mean nothing.**\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(report))
    print(f"gpu_check: wrote {args.out}", file=sys.stderr)
    return 0 if outcome in ("passed", "skipped") else 1

