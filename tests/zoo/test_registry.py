"""The registry: names, overrides, errors, the timm bridge, and the model contract."""
import ast
import re
from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn

import models
from benchmark.checks import check_model
from models import create_model, list_models, register_model
from models._contract import RestorationModel
from models.restore_rwkv import RestoreRWKV


def test_list_models_and_patterns():
    names = list_models()
    assert {"restore_rwkv", "restore_rwkv_light", "restore_rwkv_tiny"} <= set(names)
    assert names == sorted(names)
    assert list_models("restore_rwkv_t*") == ["restore_rwkv_tiny"]
    assert list_models("no_such_*") == []


def test_none_overrides_are_ignored():
    model = create_model("restore_rwkv_tiny", wkv=None, shift=None, recurrence=None)
    plan = model.encoder1[0].spatial_mix.plan
    assert plan.directions == ("h", "v") and not plan.causal           # the defaults: Re-WKV, M = 2


def test_overrides_reach_the_constructor():
    model = create_model("restore_rwkv_tiny", wkv="bi", first_scan="v")
    assert model.encoder1[0].spatial_mix.plan.directions == ("v",)


def test_unknown_model_suggests_close_names():
    with pytest.raises(ValueError, match="unknown model 'restore_rwvk'; did you mean restore_rwkv"):
        create_model("restore_rwvk")


def test_timm_creates_every_registered_model():
    model = timm.create_model("restore_rwkv_tiny", wkv="uni", recurrence=None)
    assert isinstance(model, RestoreRWKV) and model.encoder1[0].spatial_mix.plan.causal
    for name in list_models():
        assert timm.is_model(name), name
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("restore_rwkv_tiny", pretrained=True)


def test_duplicate_registration_is_an_error():
    def restore_rwkv_tiny():
        return nn.Identity()
    with pytest.raises(ValueError, match="registered twice"):
        register_model(restore_rwkv_tiny)
    assert isinstance(models.create_model("restore_rwkv_tiny"), RestoreRWKV)


@pytest.mark.parametrize("name", models.list_models("*_tiny"))
def test_every_model_accepts_and_ignores_a_task_id(name):
    """The harness passes the task id of each sample (all-in-one); no shipped design uses it."""
    torch.manual_seed(0)
    model = models.create_model(name).eval()
    x = torch.rand(2, 1, 24, 24)
    with torch.no_grad():
        plain = model(x)
        labelled = model(x, task=torch.tensor([0, 2]))
    assert torch.equal(plain, labelled)


FAMILIES = sorted({n.removesuffix("_tiny").removesuffix("_light") for n in models.list_models()})


@pytest.mark.parametrize("name", FAMILIES)
def test_every_registered_family_passes_check_model(name):
    """``benchmark.checks.check_model``'s checks (the contract: forward(x, task=None) at odd sizes, input
    rules, a gradient for every parameter, deploy() keeps the outputs, a few training steps learn,
    MACs with no uncounted op) on the family's tiny preset; every preset is a RestorationModel."""
    assert all(isinstance(models.create_model(n), RestorationModel) for n in models.list_models(f"{name}*"))
    failed = [f"{c.name}: {c.detail}" for c in check_model.run_checks(name) if not c.passed]
    assert failed == []


def named_in_code(path: Path, names: list[str]) -> list[str]:
    """The ``names`` that a module's code uses as an identifier or inside a string; docstrings and
    comments (which may show an example) do not count."""
    tree = ast.parse(path.read_text())
    bare = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}   # docstrings
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in bare:
            texts.append(node.value)
        elif isinstance(node, ast.Name):
            texts.append(node.id)
        elif isinstance(node, ast.Attribute):
            texts.append(node.attr)
        elif isinstance(node, ast.alias):
            texts.append(node.name)
    return sorted({n for n in names for text in texts if re.search(rf"(?<![A-Za-z0-9]){n}(?![A-Za-z0-9])", text)})


def test_the_harness_names_no_model():
    """Model-specific behaviour lives in the model's file, behind the contract and the registry's
    metadata: no module of benchmark/ names a model family or a family's own hooks in its code."""
    root = Path(__file__).resolve().parents[2] / "benchmark"
    names = FAMILIES + ["reparameterize", "contrastive_logits", "aux_loss"]
    found = {str(p.relative_to(root)): named_in_code(p, names) for p in sorted(root.rglob("*.py"))}
    assert {f: n for f, n in found.items() if n} == {}


def test_the_guard_sees_a_name_in_code_but_not_in_a_docstring(tmp_path):
    path = tmp_path / "bench.py"
    path.write_text('"""Times mambair."""\nimport models\n\n\ndef f():\n    """mambair again."""\n'
                    '    return models.create_model("mambair_tiny")  # mambair\n')
    assert named_in_code(path, ["mambair", "restormer"]) == ["mambair"]
    path.write_text('"""Times mambair."""\n# mambair\nx = 1\n')
    assert named_in_code(path, ["mambair"]) == []
