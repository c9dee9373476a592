"""What a registration declares beside the builder: the kernel ops a model calls (which the op
benchmarks and the GPU check select models by) and its checkpoint converter; checked against the
built model by check_model."""
import pytest
import torch
import torch.nn as nn

import models
from benchmark.checks import check_model
from models.ops import backends, selective_scan


def test_the_declared_ops_are_the_ones_the_layers_call():
    for name in models.list_models("*_tiny"):                  # (a family's presets share its layers)
        info = models.model_info(name)
        assert sorted(info.ops) == backends.kernel_ops(models.create_model(name)), name
        assert models.model_info(info.family).ops == info.ops, name
    assert models.models_using("scan") == ["mambair", "mambair_tiny"]
    assert {"restore_rwkv", "rwkv_ir_tiny"} <= set(models.models_using("wkv"))
    assert "srcnn" not in models.models_using("wkv") + models.models_using("scan")


class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)


@pytest.mark.filterwarnings("ignore:Overwriting .* in registry")
def test_check_model_fails_a_wrong_declaration_and_names_the_fix(own_registry):
    def declared_wkv_tiny():
        return Plain()                                    # calls no kernel op

    models.register_model(ops=("wkv",))(declared_wkv_tiny)
    checks = {c.name: c for c in check_model.run_checks("declared_wkv_tiny")}
    assert not checks["metadata"].passed
    assert "registered with ops=('wkv',) but its layers call ()" in checks["metadata"].detail
    assert checks["contract"].passed and checks["trains"].passed          # the other checks still run
    assert check_model.run_checks("srcnn")[-1].detail.startswith("kernel ops none; no checkpoint converter")


def test_the_scan_records_the_shapes_of_its_calls_for_any_model():
    model = models.create_model("mambair_tiny").eval().set_backends(scan="torch")
    with torch.no_grad(), selective_scan.recording_calls() as calls:
        model(torch.rand(1, 1, 16, 16))
    assert calls and all(len(c) == 5 for c in calls)                    # (b, d, l, n, groups)
    b, d, length, n, groups = calls[0]
    assert b == 1 and length == 16 * 16 and d % groups == 0
    with selective_scan.recording_calls() as none:
        pass
    assert none == []
