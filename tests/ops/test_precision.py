"""Mixed precision: ``train.precision: bf16`` (bfloat16 autocast around the training step, the kernel
ops in float32 inside; models/ops/precision.py), checked on the CPU against float32."""
import pytest
import torch
import torch.nn.functional as F

import models
from benchmark.results import store
from benchmark.harness.grid import load_grid, spec_id
from benchmark.harness.pipeline import run_spec
from models.ops import precision
from models.ops.selective_scan import selective_scan
from models.ops.wkv import bi_wkv, uni_wkv
from tests.helpers import TINY, grid_file
from tests.helpers import random_inputs



def bf16_tolerance(model: torch.nn.Module) -> float:
    """Relative error a bf16 autocast step may have against float32: every convolution and linear
    layer rounds its operands to bfloat16 (unit roundoff u = 2^-8, twice per product) and
    accumulates in float32; over the model's L such layers independent rounding errors add as a
    random walk, 2 u sqrt(L) (the first-order worst case, 2 u L, is 6-11x looser). Derived from the
    model, not measured on one machine (a per-parameter worst case is not bounded at all: a parameter
    whose gradient nearly cancels has any relative error; the whole gradient's is checked instead)."""
    layers = sum(isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) for m in model.modules())
    return 2 * 2 ** -8 * layers ** 0.5


def test_compute_dtype_policy():
    half, single, double = (torch.zeros(1, dtype=d) for d in (torch.bfloat16, torch.float32, torch.float64))
    assert precision.compute_dtype(half) == torch.float32
    assert precision.compute_dtype(single, half) == torch.float32
    assert precision.compute_dtype(single, double) == torch.float64
    assert precision.compute_dtype(half, needs_float64=True) == torch.float64


@pytest.mark.parametrize("op", [bi_wkv, uni_wkv], ids=["bi", "uni"])
@pytest.mark.parametrize("backend", ["torch", "cpp"])
def test_kernel_ops_compute_in_float32_under_autocast(op, backend):
    """Under bfloat16 autocast the WKV gives the float32 result for the same (bfloat16) inputs."""
    w, u, k, v = random_inputs(2, 50, 4, k_scale=20.0, dtype=torch.bfloat16)
    expected = op(w.float(), u.float(), k.float(), v.float(), backend=backend)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = op(w, u, k, v, backend=backend)
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), expected, rtol=2 ** -8, atol=2 ** -8 * float(v.abs().max()))


def test_selective_scan_computes_in_float32_under_autocast():
    gen = torch.Generator().manual_seed(0)
    b, d, n, length = 1, 4, 3, 20
    u, delta = torch.randn(b, d, length, generator=gen), torch.rand(b, d, length, generator=gen)
    A = -torch.rand(d, n, generator=gen)
    B, C = torch.randn(b, n, length, generator=gen), torch.randn(b, n, length, generator=gen)
    expected = selective_scan(u, delta, A, B, C, backend="torch")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = selective_scan(u.bfloat16(), delta, A, B, C, backend="torch")
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, expected, rtol=0, atol=2 ** -8 * float(expected.abs().max()) * 4)


@pytest.mark.parametrize("name", ["restore_rwkv_tiny", "restormer_tiny", "mambair_tiny"])
def test_a_bf16_training_step_is_finite_and_close_to_fp32(name):
    torch.manual_seed(0)
    model = models.create_model(name)
    x = torch.rand(2, 1, 24, 24)
    target = torch.rand(2, 1, 24, 24)
    results = {}
    for mode in ("fp32", "bf16"):
        model.zero_grad(set_to_none=True)
        with precision.training_autocast(mode, torch.device("cpu")):
            out = model(x)
            loss = F.mse_loss(out, target)      # smooth: L1's sign flips would dominate
        loss.float().backward()
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        results[mode] = out.detach().float(), grads
    assert results["bf16"][0].dtype == torch.float32
    (ref, ref_grads), (ours, grads) = results["fp32"], results["bf16"]
    assert torch.isfinite(ours).all() and all(torch.isfinite(g).all() for g in grads.values())
    tolerance = bf16_tolerance(model)         # 0.083 (restore_rwkv_tiny), 0.059 (restormer), 0.063 (mambair)
    assert float((ours - ref).abs().max()) <= tolerance * float(ref.abs().max())
    assert grads.keys() == ref_grads.keys()
    whole = torch.cat([(grads[n].float() - g).flatten() for n, g in ref_grads.items()]).norm()
    assert float(whole) <= tolerance * float(torch.cat([g.flatten() for g in ref_grads.values()]).norm())
    relative = torch.tensor([float((grads[n].float() - g).norm() / g.norm().clamp_min(1e-12))
                             for n, g in ref_grads.items() if g.norm() > 0])
    assert float(relative.median()) <= tolerance, relative
    assert model.kernel_dtypes().get("wkv", ["float32"]) != ["bfloat16"]


def test_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="unknown train.precision 'fp16'; expected one of fp32, bf16"):
        precision.training_autocast("fp16", torch.device("cpu"))


def test_a_bf16_run_is_recorded_and_keeps_fp32_ids_unchanged(tmp_path):
    path = grid_file(tmp_path, "  label: [k=3]\n  model.options: [{shift_kernel: 3}]\n", name="bf16")
    fp32 = load_grid(path, "smoke", TINY).specs[0]
    bf16 = load_grid(path, "smoke", TINY + ["train.precision=bf16"]).specs[0]
    assert fp32.config["train"]["precision"] == "fp32" and bf16.id != fp32.id
    without_key = {**fp32.config, "train": {k: v for k, v in fp32.config["train"].items() if k != "precision"}}
    assert spec_id(without_key) == fp32.id          # stores written before the key existed keep their ids
    assert run_spec(bf16, tmp_path / "runs", progress=False)["state"] == "done"
    summary = store.read_json(tmp_path / "runs" / bf16.folder_name / "train.json")
    assert summary["precision"] == "bf16" and summary["kernel_dtypes"] == {"wkv": ["float32"]}
    assert summary["final_loss"] == summary["final_loss"]                             # finite, not NaN


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_bf16_training_on_cuda_runs_the_kernels_in_float32():
    torch.manual_seed(0)
    model = models.create_model("restore_rwkv_tiny").cuda()
    x = torch.rand(2, 1, 32, 32, device="cuda")
    with precision.training_autocast("bf16", "cuda"):
        loss = F.mse_loss(model(x), x)
    loss.float().backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.used_backends() == {"wkv": ["triton"]} and model.kernel_dtypes() == {"wkv": ["float32"]}
