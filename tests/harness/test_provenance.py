"""Provenance: the code a run ran with, stale runs found and rerun (or kept and footnoted), and the
provenance line of a table."""
import shutil
import subprocess
import sys
from pathlib import Path

from benchmark.base import machine, provenance
from benchmark.harness import run, status
from benchmark.results import store
from benchmark.harness.grid import load_grid

from tests.helpers import TINY, TWO_CELLS, grid_file

ROOT = Path(__file__).resolve().parents[2]


def test_the_code_hash_follows_result_code_and_ignores_rendering(tmp_path):
    for path in ("models/net.py", "csrc/wkv.cpp", "benchmark/harness/train.py", "benchmark/render/tables.py", "README.md"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("x = 1\n")
    before = provenance.code_files(tmp_path)
    assert set(before) == {"models/net.py", "csrc/wkv.cpp", "benchmark/harness/train.py"}
    (tmp_path / "benchmark/render/tables.py").write_text("x = 2\n")          # the renderer: no change
    (tmp_path / "README.md").write_text("more docs\n")
    assert provenance.combined(provenance.code_files(tmp_path)) == provenance.combined(before)
    (tmp_path / "models/net.py").write_text("x = 2\n")                       # a model: a new hash
    after = provenance.code_files(tmp_path)
    assert provenance.combined(after) != provenance.combined(before)
    assert [p for p in after if after[p] != before[p]] == ["models/net.py"]


def test_every_module_a_run_imports_is_result_code_or_declared_not():
    """A new module that the pipeline imports must be hashed (or be declared as changing no number)."""
    code = ("import sys, benchmark.harness.pipeline; print('\\n'.join(m.__file__ for n, m in sys.modules.items() "
            "if n.split('.')[0] in ('benchmark', 'models') and getattr(m, '__file__', None)))")
    files = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout.split()
    hashed = set(provenance.code_files())
    not_results = {"benchmark/__init__.py", "benchmark/harness/grid.py", "benchmark/results/store.py",
                   "benchmark/base/provenance.py", "benchmark/base/model_files.py", "benchmark/base/processes.py",
                   "benchmark/base/arguments.py", "benchmark/base/machine.py", "benchmark/base/yamlfile.py",
                   "benchmark/base/markdown.py", "benchmark/base/files.py",       # atomic writes, locks
                   "benchmark/harness/events.py"}                 # TensorBoard events: written, never read
    not_results |= {f"benchmark/{package}/__init__.py" for package in ("base", "harness", "measure", "results")}
    imported = {Path(f).resolve().relative_to(ROOT).as_posix() for f in files}
    assert imported - hashed - not_results == set()


def _stale_by_a_model_change(folder: Path) -> None:
    """What a run looks like after models/restore_rwkv.py changed since it ran: its recorded code
    differs from the current code in that file."""
    status_ = store.read_json(folder / "status.json")
    environment = store.read_json(folder / "environment.json")
    environment["code_files"]["models/restore_rwkv.py"] = "0" * 16
    status_["code_hash"] = environment["code_hash"] = provenance.combined(environment["code_files"])
    store.write_json(folder / "environment.json", environment)
    store.write_json(folder / "status.json", status_)


def test_a_stale_run_is_shown_rerun_alone_or_kept_with_a_footnote(tmp_path, capsys):
    path = grid_file(tmp_path, TWO_CELLS, "prov")
    argv = ["--grid", str(path), "--out", str(tmp_path / "runs"), "--tables", str(tmp_path / "tables"), "--quiet",
            "--jobs", "1"] + [a for o in TINY for a in ("--set", o)]
    assert run.main(argv) == 0
    grid_dir = tmp_path / "runs" / "prov"
    first, second = (grid_dir / s.folder_name for s in load_grid(path, "smoke", TINY).specs)
    env = store.read_json(first / "environment.json")
    assert env["code_hash"] == provenance.code_hash() == store.read_json(first / "status.json")["code_hash"]
    assert env["cpu"] and env["threads"] >= 1 and "git_commit" in env and "git_dirty" in env
    table = (tmp_path / "tables" / "prov.md").read_text()
    assert "Provenance of the 2 finished runs: commit " in table and f"machine {machine.cpu_model()}" in table
    assert "kept with `--keep-stale`" not in table

    _stale_by_a_model_change(first)
    untouched = store.read_json(second / "status.json")
    capsys.readouterr()
    assert status.main([str(grid_dir)]) == 0
    out = capsys.readouterr().out
    assert "| 1 | k=3 | stale |" in out and "models/restore_rwkv.py changed" in out
    assert "| 2 | Q-Shift | stale |" not in out                            # tiny runs: done or did not learn

    # --keep-stale: nothing runs, and the table names the kept run
    assert run.main(argv + ["--keep-stale"]) == 0
    err = capsys.readouterr().err
    assert "1 finished run(s) are stale" in err and "kept (--keep-stale)" in err and "0 to run" in err
    table = (tmp_path / "tables" / "prov.md").read_text()
    assert "**1 of these runs were made with other code" in table and "kept with `--keep-stale`: k=3 (seed 0)" in table

    # by default: exactly the stale run runs again, with the current code
    assert run.main(argv) == 0
    err = capsys.readouterr().err
    assert "running them again" in err and "1 already done, 1 to run" in err
    assert store.read_json(first / "status.json")["code_hash"] == provenance.code_hash()
    assert store.read_json(second / "status.json") == untouched
    assert "kept with `--keep-stale`" not in (tmp_path / "tables" / "prov.md").read_text()


def test_a_run_resumed_with_other_code_starts_over(tmp_path, capsys):
    path = grid_file(tmp_path, "  label: [k=3]\n  model.options: [{shift_kernel: 3}]\n", "resume")
    spec = load_grid(path, "smoke", TINY).specs[0]
    folder = tmp_path / "runs" / "resume" / spec.folder_name
    folder.mkdir(parents=True)
    # an interrupted run that began with other code, with a checkpoint of that code
    store.write_json(folder / "status.json", {"state": "running", "pid": 1, "host": "elsewhere", "code_hash": "0" * 12})
    (folder / "checkpoint.pt").write_bytes(b"from other code")
    from benchmark.harness.pipeline import run_spec
    result = run_spec(spec, tmp_path / "runs" / "resume", progress=False)
    assert result["state"] == "done" and result["code_hash"] == provenance.code_hash()
    assert "it starts over" in capsys.readouterr().err
    assert store.read_json(folder / "train.json").get("resumed_from") in (None, 0)
    shutil.rmtree(tmp_path / "runs")


def _run_made_with(files: dict, backends) -> tuple[dict, dict]:
    """The status and environment of a finished run that ran with ``files`` and ``backends``."""
    environment = {"code_files": files, "code_hash": provenance.combined(files)}
    if backends is not None:
        environment["backends"] = backends
    return {"state": "done", "code_hash": environment["code_hash"]}, environment


def test_a_kernel_change_stales_only_the_runs_that_used_its_backend():
    now = provenance.current_files()
    triton = "models/ops/wkv/triton_launch.py"
    assert triton in now and "csrc/wkv_cpu.cpp" in now and "models/ops/wkv/__init__.py" in now

    def made_before(path, backends):      # the run recorded another version of ``path``
        return _run_made_with({**now, path: "0" * 16}, backends)

    assert not provenance.is_stale(*_run_made_with(now, {"wkv": "cpp"}))            # the current code
    assert not provenance.is_stale(*made_before(triton, {"wkv": "cpp"}))             # a GPU kernel: not a CPU run's code
    assert not provenance.is_stale(*made_before(triton, {}))                         # a model without WKV
    assert provenance.is_stale(*made_before(triton, {"wkv": "triton"}))
    assert "models/ops/wkv/triton_launch.py changed" in provenance.stale_reason(*made_before(triton, {"wkv": "triton"}))
    assert provenance.is_stale(*made_before("csrc/wkv_cpu.cpp", {"wkv": "cpp"}))
    assert not provenance.is_stale(*made_before("csrc/wkv_cpu.cpp", {"wkv": "triton"}))
    assert provenance.is_stale(*made_before("models/ops/wkv/__init__.py", {"wkv": "cpp"}))   # shared dispatch
    assert provenance.is_stale(*made_before("csrc/simd.h", {}))                       # shared by the CPU kernels
    # a new Triton file (present now, absent from the run's record) is no CPU run's code either
    files = {p: h for p, h in now.items() if p != triton}
    assert not provenance.is_stale(*_run_made_with(files, {"wkv": "cpp", "scan": "cpp"}))
    assert provenance.is_stale(*_run_made_with(files, {"wkv": "triton"}))
    # a run that did not record its backends, or whose files do not give its hash, counts every file
    assert provenance.is_stale(*made_before(triton, None))
    status_, environment = made_before(triton, {"wkv": "cpp"})
    assert provenance.is_stale({**status_, "code_hash": "0" * 12}, environment)
    assert provenance.is_stale(status_) and not provenance.is_stale({**status_, "state": "running"}, environment)


def test_a_model_file_change_stales_only_the_runs_of_that_model_and_of_models_importing_it():
    now = provenance.current_files()

    def stale(model, path):              # a CPU run of ``model`` that recorded another version of ``path``
        return provenance.is_stale(*_run_made_with({**now, path: "0" * 16}, {"wkv": "cpp", "scan": "cpp"}), model)

    assert stale("drmc_tiny", "models/drmc.py")
    assert not stale("redcnn_tiny", "models/drmc.py")            # another family's file
    assert not stale("restore_rwkv_tiny", "models/drmc.py")
    assert stale("amir_tiny", "models/restormer.py")             # amir.py imports restormer.py
    assert not stale("restormer_tiny", "models/amir.py")
    assert stale("eformer_tiny", "models/swinir.py")             # eformer.py imports swinir.py
    for shared in ("models/_unet.py", "models/_registry.py", "models/__init__.py", "models/layers/block.py"):
        assert stale("drmc_tiny", shared) and stale("redcnn_tiny", shared)
    assert stale(None, "models/drmc.py") and stale("a_plugin_net", "models/drmc.py")   # unknown: every file counts
    reason = provenance.stale_reason(*_run_made_with({**now, "models/drmc.py": "0" * 16}, {}), "drmc_tiny")
    assert "models/drmc.py changed" in reason


def test_the_families_read_from_the_source_are_the_modules_that_register_each_preset():
    """The static reading (no import) against the registry's record of where each preset was defined."""
    import models
    from models import _registry
    from benchmark.base import model_files

    for name in models.list_models():
        module = _registry._MODULE_OF[name]
        if not module.startswith("models."):
            continue                                                # a plugin registered by another test
        own = Path(sys.modules[module].__file__).resolve().relative_to(ROOT).as_posix()
        used = model_files.used_families(name, ROOT)
        assert used is not None and own in used, name
    assert model_files.used_families("drmc_tiny", ROOT) == {"models/drmc.py"}
    assert model_files.used_families("amir_tiny", ROOT) == {"models/amir.py", "models/restormer.py"}
    assert model_files.families(ROOT) >= {"models/drmc.py", "models/restore_rwkv.py", "models/rat.py"}
    assert not model_files.families(ROOT) & {"models/_unet.py", "models/__init__.py", "models/layers/block.py"}
