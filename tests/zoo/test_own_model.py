"""A researcher's own model, from their own file: imported by a grid's ``imports:``, by ``--import``
and by an entry point; checked by ``benchmark.checks.check_model``; recorded in the run's id and
environment; refused when its name is taken. The README's example is run as the README prints it."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import models
from benchmark.checks import check_model
from benchmark.harness import run
from benchmark.results import store
from benchmark.harness.grid import load_grid
from models import _registry
from tests.helpers import OWN_MODEL, TINY

ROOT = Path(__file__).resolve().parents[2]
# timm keeps the registrations of earlier tests (ours are reset per test) and warns on the second
pytestmark = [pytest.mark.filterwarnings("ignore:Overwriting .* in registry"), pytest.mark.usefixtures("own_registry")]


def readme_block(language: str, first_line: str) -> str:
    """The README's fenced ``language`` block that starts with ``first_line``, as printed."""
    blocks = re.findall(rf"```{language}\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    matching = [b for b in blocks if b.startswith(first_line)]
    assert len(matching) == 1, f"README: expected one ```{language} block starting with {first_line!r}"
    return matching[0]


def model_file(folder: Path, name: str = "own_net", stem: str | None = None) -> Path:
    path = folder / f"{stem or name}.py"
    path.write_text(OWN_MODEL.format(name=name))
    return path


def test_check_model_passes_a_good_model_and_names_the_failures_of_bad_ones(tmp_path, capsys):
    path = model_file(tmp_path)
    assert check_model.main(["own_net", "--import", str(path), "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "10 of 10 checks passed" in out and "own_net (" + str(path) in out
    assert re.search(r"at 32x32: [0-9.]+ GMACs \(paper\)", out)

    results = {c.name: c for c in check_model.run_checks("own_net")}
    assert all(c.passed for c in results.values())

    models.import_models([str(model_file(tmp_path, "spare_net"))])
    models.register_model(_with_options("spare_net_tiny", unused=True))
    failed = [c for c in check_model.run_checks("spare_net") if not c.passed]
    assert [c.name for c in failed] == ["gradients"]
    assert "no finite gradient for 2 of 6 parameter tensors: spare.weight, spare.bias" in failed[0].detail

    models.import_models([str(model_file(tmp_path, "crop_net"))])
    models.register_model(_with_options("crop_net_tiny", crop=True))
    assert check_model.main(["crop_net", "--size", "32"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  odd sizes    train mode: a (2, 1, 13, 17) batch gave (2, 1, 12, 17); expected the restored batch " \
           "of the same shape" in out
    assert "of 10 checks passed" in out


def _with_options(name, **options):
    """A preset of the last imported Net with options, registered from this test file under ``name``."""
    net = sys.modules[_registry.registered_by(name.removesuffix("_tiny"))].Net
    preset = lambda **extra: net(**{**options, **extra})            # noqa: E731
    preset.__name__ = name
    preset.__module__ = __name__
    _registry._MODULE_OF.pop(name)                                  # replace the file's own tiny preset
    return preset


def test_unknown_model_and_failed_import_exit_2(tmp_path, capsys):
    assert check_model.main(["own_nett"]) == 2
    assert "unknown model 'own_nett'" in capsys.readouterr().err
    broken = tmp_path / "broken.py"
    broken.write_text("import models\nraise RuntimeError('boom')\n")
    with pytest.raises(SystemExit) as exit_info:
        check_model.main(["own_net", "--import", str(broken)])
    assert exit_info.value.code == 2
    assert f"--import: could not import '{broken}': RuntimeError: boom" in capsys.readouterr().err


def test_a_name_taken_by_a_built_in_model_is_refused_naming_both(tmp_path):
    path = tmp_path / "clash.py"
    path.write_text("import models, torch.nn as nn\n\n@models.register_model\ndef swinir(**o):\n    return nn.Identity()\n")
    with pytest.raises(models.ModelImportError) as err:
        models.import_models([str(path)], via="clash.yaml: imports")
    message = str(err.value)
    assert "clash.yaml: imports: could not import" in message and "model 'swinir' is registered twice" in message
    assert "models.swinir (" + str(ROOT / "models" / "swinir.py") + ")" in message and str(path) in message
    assert _registry.registered_by("swinir") == "models.swinir"


def one_cell_grid(folder: Path, imports: str = "") -> Path:
    path = folder / "own.yaml"
    path.write_text(f"name: own\n{imports}base:\n  task: mri_sr\naxes:\n  zip:\n    label: [Mine]\n"
                    "    model.name: [own_net]\n")
    return path


def run_grid(path: Path, tmp_path: Path, *extra: str) -> int:
    argv = ["--grid", str(path), "--out", str(tmp_path / "runs"), "--tables", str(tmp_path / "tables"), "--quiet",
            "--jobs", "1", *extra]
    return run.main(argv + [a for o in TINY for a in ("--set", o)])


def test_a_model_from_a_file_runs_through_a_grid_by_imports_and_by_the_option(tmp_path):
    (tmp_path / "nets").mkdir()
    path = model_file(tmp_path / "nets")
    grid = one_cell_grid(tmp_path, "imports: [nets/own_net.py]\n")          # relative to the grid file
    assert run_grid(grid, tmp_path) == 0
    assert "| Mine |" in (tmp_path / "tables" / "own.md").read_text()
    spec = load_grid(grid, "smoke", TINY).specs[0]
    folder = tmp_path / "runs" / "own" / spec.folder_name
    source = spec.config["model"]["source"]
    assert source["file"] == str(path) and len(source["sha256"]) == 64
    imported = store.read_json(folder / "environment.json")["imports"]
    assert [(i["file"], i["sha256"]) for i in imported] == [(str(path), source["sha256"])]

    # editing the file gives the cell a new id: it runs again; a built-in cell's id does not depend on it
    path.write_text(path.read_text() + "\n# edited\n")
    edited = load_grid(grid, "smoke", TINY).specs[0]
    assert edited.id != spec.id and edited.config["model"]["source"]["sha256"] != source["sha256"]



def test_a_model_from_a_file_runs_through_a_grid_by_the_import_option(tmp_path, capsys):
    (tmp_path / "nets").mkdir()
    path = model_file(tmp_path / "nets")
    grid = one_cell_grid(tmp_path)                                           # no imports: key
    assert run_grid(grid, tmp_path) == 2                                    # own_net is unknown without it
    assert "unknown model 'own_net'" in capsys.readouterr().err
    assert run_grid(grid, tmp_path, "--import", str(path)) == 0
    assert "| Mine |" in (tmp_path / "tables" / "own.md").read_text()
    assert load_grid(grid, "smoke", TINY).specs[0].config["model"]["source"]["file"] == str(path)


def test_a_worker_refuses_a_model_file_that_is_missing_or_changed(tmp_path):
    path = model_file(tmp_path)
    models.import_models([str(path)])
    source = models.model_source("own_net")
    models.ensure_model("own_net", source)                                     # unchanged: fine
    path.write_text(path.read_text() + "\n# edited\n")
    with pytest.raises(models.ModelImportError, match="has changed since this run was configured"):
        models.ensure_model("own_net", source)
    gone = {**source, "module": "medir_user_gone", "file": str(tmp_path / "gone.py")}
    with pytest.raises(models.ModelImportError, match="gone.py, which cannot be imported here .* compute node"):
        models.ensure_model("gone_net", gone)


def test_child_processes_inherit_the_imports(tmp_path):
    path = model_file(tmp_path)
    models.import_models([str(path)])
    code = "import models; print(models.model_source('own_net')['file'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ), cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == str(path), out.stderr


def test_an_entry_point_registers_its_models(tmp_path, monkeypatch):
    package = tmp_path / "site"
    (package / "own_pkg").mkdir(parents=True)
    (package / "own_pkg" / "__init__.py").write_text("")
    (package / "own_pkg" / "nets.py").write_text(OWN_MODEL.format(name="ep_net"))
    info = package / "own_pkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: own-pkg\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[medir_bench.models]\nnets = own_pkg.nets\n")
    monkeypatch.syspath_prepend(str(package))
    records = models.load_entry_points()
    assert [(r["module"], r["via"]) for r in records] == [("own_pkg.nets", "entry point nets = own_pkg.nets of own-pkg")]
    assert "ep_net_tiny" in models.list_models() and models.model_source("ep_net")["module"] == "own_pkg.nets"
    sys.modules.pop("own_pkg.nets"), sys.modules.pop("own_pkg")


def test_the_readme_example_runs_as_printed(tmp_path, capsys):
    source = readme_block("python", "# my_denoiser.py")
    grid = readme_block("yaml", "# my_grid.yaml")
    commands = readme_block("bash", "python -m benchmark.check_model my_denoiser")
    (tmp_path / "my_denoiser.py").write_text(source)
    (tmp_path / "my_grid.yaml").write_text(grid)
    assert len(source.strip().splitlines()) <= 40
    check_argv = commands.splitlines()[0].split()[3:]                         # my_denoiser --import my_denoiser.py
    assert check_model.main([*check_argv[:2], str(tmp_path / check_argv[2]), "--size", "32"]) == 0
    assert "10 of 10 checks passed" in capsys.readouterr().out
    assert commands.splitlines()[1].split()[3:] == ["--grid", "my_grid.yaml"]
    assert run_grid(tmp_path / "my_grid.yaml", tmp_path) == 0
    table = (tmp_path / "tables" / "my_grid.md").read_text()
    assert "| Restore-RWKV |" in table and "| Mine |" in table
    status = json.loads(next((tmp_path / "runs" / "my_grid").glob("mine-*/status.json")).read_text())
    assert status["state"] == "done"


PLAIN = '''
import torch
import torch.nn as nn
import models


class PlainNet(nn.Module):                 # not a RestorationModel: forward(img), no deploy, no in_chans
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.out = nn.Conv2d(4, 2, 3, padding=1)

    def forward(self, img):
        return img + self.out(torch.relu(self.conv(img)))


class TaskNet(PlainNet):
    def forward(self, img, task=None):
        self.seen = task
        return super().forward(img)


@models.register_model
def plain_net(**options):
    return PlainNet()


@models.register_model
def plain_net_tiny(**options):
    return PlainNet()


@models.register_model
def task_net(**options):
    return TaskNet()
'''


def test_a_plain_module_is_adapted_to_the_contract_and_passes_every_check(tmp_path, capsys):
    path = tmp_path / "plain.py"
    path.write_text(PLAIN)
    assert check_model.main(["plain_net", "--import", str(path), "--size", "32"]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "10 of 10 checks passed" in out
    model = models.create_model("plain_net")
    assert isinstance(model, models.RestorationModel) and type(model).__name__ == "PlainNet"
    assert model.in_chans == 2 and model.deploy() is model and model.auxiliary_loss(None) is None
    assert list(model.state_dict()) == ["conv.weight", "conv.bias", "out.weight", "out.bias"]   # keys unchanged
    with pytest.raises(ValueError, match=r"PlainNet expects 2 input channel\(s\)"):
        model(torch.rand(1, 1, 8, 8))
    task = torch.tensor([1])
    with_task = models.create_model("task_net")
    with_task(torch.rand(1, 2, 8, 8), task)
    assert with_task.seen is task                               # passed on where forward accepts it
