"""What several test files share, in one module (no test file imports another).

Float tolerances derived from the computation, never from what one machine happens to give.
Two kinds (issue 30: the suite failed on an AMD CPU at a fixed 1e-5 that held on the Intel one):

- ``rounding_bound``: a worst-case bound on the rounding error of a float computation whose longest
  chain of dependent operations (a sum, a scan) has ``depth`` steps on values of magnitude
  ``scale``: ``depth x eps x scale`` (Higham, *Accuracy and Stability of Numerical Algorithms*,
  Sec. 4.2: a recursive sum of n terms errs by at most (n - 1) u sum |x_i|, u = eps / 2, in any
  order of the additions). Another CPU, thread count or oneDNN setting changes the order and the
  blocking of the reductions, never the bound.
- ``float64_spread``: for a whole model, whose depth is not a single number, the float32 error of
  the computation measured against the same model in float64 on the same input; two float32
  evaluations that differ only in the order of their operations (another backend, another padding,
  a re-parameterised form) each lie within that error of the float64 result, so they differ by at
  most a small multiple of it.
"""
from __future__ import annotations

import copy
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch

import models
from benchmark.base import provenance
from benchmark.checks import check_model
from benchmark.data.sources import Case
from benchmark.harness import config as cfg
from benchmark.results import store
from benchmark.results.paper import paper_numbers

ROOT = Path(__file__).resolve().parent.parent

def eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


def rounding_bound(dtype: torch.dtype, depth: float, scale: float) -> float:
    return float(depth) * eps(dtype) * float(scale)


def wkv_depth(w: torch.Tensor, k: torch.Tensor, tokens: int, gradient: bool = False) -> float:
    """The error depth of a WKV output (a weighted mean of v over ``tokens``): the sum over the
    tokens (twice for a gradient: the forward's sums and the backward's), the rounding of the
    exponents (|k| and |w| x distance, whose absolute error becomes a relative error of the weight),
    and a few operations per term (exp, the ratio)."""
    exponent = float(k.abs().max()) + float(w.abs().max()) * tokens
    return (2 if gradient else 1) * tokens + exponent + 16


def float64_spread(model: torch.nn.Module, x: torch.Tensor, factor: float = 4.0, **kwargs) -> float:
    """``factor`` times the largest difference between ``model(x)`` in float32 and the same model
    (a deep copy) in float64, plus a float32 ulp of the output's scale (so that an exact computation
    still gets a nonzero tolerance)."""
    with torch.no_grad():
        single = model(x, **kwargs).double()
        double = copy.deepcopy(model).double()(x.double(), **kwargs)
    return factor * float((single - double).abs().max()) + eps(torch.float32) * float(double.abs().max())


# --- op inputs ------------------------------------------------------------------------------------

def random_inputs(B, T, C, k_scale=1.0, decay_span=20.0, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    k = (torch.rand(B, T, C, generator=g, dtype=torch.float64) * 2 - 1) * k_scale
    v = torch.randn(B, T, C, generator=g, dtype=torch.float64)
    w = (torch.rand(C, generator=g, dtype=torch.float64) * 2 - 1) * decay_span / T
    u = (torch.rand(C, generator=g, dtype=torch.float64) * 2 - 1) * decay_span / T
    return [t.to(dtype) for t in (w, u, k, v)]


# --- tiny grids for the harness -------------------------------------------------------------------

TINY = ["train.iters=6", "train.val_every=3", "train.checkpoint_every=2", "train.crop=16", "train.val_images=2",
        "data.phantom_size=32", "test.images=2", "profile.size=32", "profile.latency_repeat=1", "erf.images=2",
        "erf.size=24"]


def grid_file(tmp_path, cells: str, name: str = "two") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\ntable: 8\nbase:\n  task: mri_sr\n  model: {{name: restore_rwkv}}\naxes:\n{cells}")
    return path


TWO_CELLS = "  zip:\n    label: [k=3, Q-Shift]\n    model.options: [{shift_kernel: 3}, {shift: quad}]\n"


# --- models ---------------------------------------------------------------------------------------

PAPER_MODELS = [n for n in models.list_models() if models.model_info(n).paper]   # the paper's presets


def paper_size(name: str) -> tuple[float, float]:
    """(parameters in M, MACs in G) of the paper's row named by the preset's registry entry: the
    one transcription of the paper's tables (``benchmark/results/paper_tables.csv``)."""
    method = models.model_info(name).paper
    rows = [r for r in paper_numbers() if r["method"] == method and r["params_m"] is not None]
    assert rows, f"{name}: no row of the paper's tables names {method!r}"
    return rows[0]["params_m"], rows[0]["flops_g"]


def assert_trains_at(name, size):
    """One L1 training step of ``name`` on a (2, 1, *size) batch plus the model's own auxiliary loss
    (``benchmark.checks.check_model.check_gradients``): same-shape finite output, and a finite gradient for
    every trainable parameter."""
    torch.manual_seed(0)
    check_model.check_gradients(models.create_model(name), size)     # raises CheckFailed with the reason


# a researcher's own model file (format with name=...): a RestorationModel, with a crop and an
# unused weight to show check_model's failures
OWN_MODEL = '''
import torch
import torch.nn as nn
import models


class Net(models.RestorationModel):
    def __init__(self, width: int = 4, unused: bool = False, crop: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(1, width, 3, padding=1)
        self.out = nn.Conv2d(width, 1, 3, padding=1)
        self.spare = nn.Conv2d(width, 1, 1) if unused else None     # a weight forward never uses
        self.crop = crop

    def forward(self, x, task=None):
        models.check_image("Net", x, 1, self.conv.weight.dtype)
        y = x + self.out(torch.relu(self.conv(x)))
        return y[:, :, 1:, :] if self.crop else y                    # crop: the shape changes


@models.register_model
def {name}(**options):
    return Net(**{{"width": 8, **options}})


@models.register_model
def {name}_tiny(**options):
    return Net(**options)
'''


# --- stores for the renderer's figures ------------------------------------------------------------

FIGURES_SIDE = 24


def figures_store(root):
    """A two-row grid store (A, B) with examples, per-image scores and complexities: the figures' input."""
    grid_dir = root / "figs"
    rng = np.random.default_rng(0)
    hq = rng.uniform(0, 3000, (2, FIGURES_SIDE, FIGURES_SIDE)).astype(np.float32)
    lq = (hq + rng.normal(0, 300, hq.shape)).astype(np.float32)
    runs = []
    for index, (label, noise) in enumerate((("A", 100.0), ("B", 30.0))):
        folder = f"{label.lower()}-run"
        config = cfg.resolve("smoke", {"task": "mri_sr", "model": {"name": "restore_rwkv"}})
        store.write_json(grid_dir / folder / "spec.json", {"id": folder, "label": label, "slug": folder,
                                                           "model": "restore_rwkv_tiny", "config": config})
        store.write_json(grid_dir / folder / "status.json", {"state": "done", "id": folder,
                                                             "code_hash": provenance.code_hash()})
        store.write_json(grid_dir / folder / "profile.json", {"params_m": 0.1, "deploy_params_m": 0.1,
                                                              "paper_gmacs": 0.1, "full_gmacs": 0.1, "latency_ms": 1.0})
        output = (hq + rng.normal(0, noise, hq.shape)).astype(np.float32)
        store.write_arrays(grid_dir / folder / "examples.npz", task=np.array(["mri_sr", "mri_sr"]),
                           index=np.array([3, 0]), lq=lq, hq=hq, output=output)
        rows = [{"task": "mri_sr", "index": i, "psnr": 25 + i + index, "ssim": 0.8, "rmse": 10.0, "input_psnr": 22.0,
                 "input_ssim": 0.6, "input_rmse": 20.0, "complexity": 1.0 + 0.5 * i} for i in range(6)]
        store.write_csv(grid_dir / folder / "test_images.csv", rows)
        store.write_json(grid_dir / folder / "test.json", {"tasks": {"mri_sr": {
            "images": 6, "psnr": 27.5 + index, "ssim": 0.8, "rmse": 10.0, "input_psnr": 22.0, "input_ssim": 0.6,
            "input_rmse": 20.0}}})
        runs.append({"id": folder, "folder": folder, "label": label, "index": index})
    store.write_grid(grid_dir, {"name": "figs", "table": None, "title": "Figures", "scale": "smoke", "reference": "A",
                                "note": "", "file": "figs.yaml", "runs": runs})
    return grid_dir


def marked_figures_store(root):
    """The figures' store with B marked: it did not learn and its preset was floored; every run has
    a training log and an ERF map, so that all four figures are drawn."""
    grid_dir = figures_store(root)
    for label, learned in (("A", True), ("B", False)):
        folder = grid_dir / f"{label.lower()}-run"
        status = store.read_json(folder / "status.json")
        status["health"] = {"verdict": "learned" if learned else "did not learn", "learned": learned,
                            "val_gain_db": 3.0 if learned else 0.4, "min_gain_db": 2.0}
        store.write_json(folder / "status.json", status)
        if not learned:
            profile = store.read_json(folder / "profile.json")
            store.write_json(folder / "profile.json", {**profile, "floored": {"floor": 4000, "divisor": 150}})
        store.write_csv(folder / "train_log.csv", [
            {"iteration": i, "loss": 0.1 / (1 + i / 50), "val_psnr": 22 + (i / 100 if learned else i / 1000)
             if i % 100 == 0 else ""} for i in range(0, 801, 10)])
        erf = np.zeros((2, 9, 9))
        erf[:, 4, 4] = 1.0
        store.write_array(folder / "erf.npy", erf)
    return grid_dir


def slurm_unavailable() -> str:
    """Empty when the tests may submit jobs: to the dev cluster (ClusterName medir), or to any
    cluster with MEDIR_SLURM_TESTS=1."""
    if shutil.which("sinfo") is None:
        return "no SLURM here (sinfo not found); start the dev cluster with bash slurm/dev-cluster/start.sh"
    if os.environ.get("MEDIR_SLURM_TESTS") == "1":
        return ""
    try:
        config = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        config = ""
    if "ClusterName" not in config:
        return "SLURM's commands are here but no controller answers; start the dev cluster with slurm/dev-cluster/start.sh"
    if "ClusterName             = medir" not in config:
        return "SLURM is here but it is not the dev cluster; set MEDIR_SLURM_TESTS=1 to submit test jobs to it"
    return ""


def counted_cases(calls: list, fail_at: str | None = None) -> dict:
    """Ten small cases (train 8, val 1, test 1) whose loads are recorded in ``calls``; loading
    ``fail_at`` is interrupted as by Ctrl-C."""
    def load(i, name):
        calls.append(name)
        if name == fail_at:
            raise KeyboardInterrupt
        hq = np.full((2, 6, 6), 10.0 * i, dtype=np.float32) + np.arange(36, dtype=np.float32).reshape(6, 6)
        return hq * 0.5, hq
    cases = [Case(f"s{i}", 2, lambda i=i, name=f"s{i}": load(i, name)) for i in range(10)]
    return {"train": cases[:8], "val": cases[8:9], "test": cases[9:]}


def prepared_bytes(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*.f32"))}
