"""The house's layering, read from every module's imports (top-level and inside functions).

``benchmark/`` is in rooms by job; a room imports only itself and the rooms below it:

    base      what every room uses: arguments, files, the vocabulary, markdown, the machine,
              the process runner, provenance, the configuration schema's YAML
    results   the store, the metrics, statistics and training health
    data      phantoms, real formats, degradations            (imports neither harness nor measurement)
    render    tables and figures from the store                (never imports the harness)
    measure   profiling, timing, the op / scan / step benchmarks, the GPU check
    checks    check_model
    harness   configuration, grids, training, evaluation, ERF, executors, run, status, plans
    export    a grid's store to an experiment tracker (MLflow)        (reads the store and the tables)

The entry points (``python -m benchmark.run`` and the like, the ``medir-bench`` console script)
sit above every room. ``models`` never imports ``benchmark``.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROOMS = ("base", "results", "data", "render", "measure", "checks", "harness", "export")
MAY_IMPORT = {
    "base": set(),
    "results": {"base"},
    "data": {"base", "results"},
    "render": {"base", "results"},
    "measure": {"base", "results", "render"},
    "checks": {"base", "results", "render", "measure"},
    "harness": {"base", "results", "data", "render", "measure"},
    "export": {"base", "results", "render"},
}
ENTRY_POINTS = {"__init__", "cli", "run", "status", "profile", "gpu_check", "check_model", "margins"}


def modules(package: str) -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imported(name: str, path: Path) -> set[str]:
    """Every absolute module name ``path`` imports (relative imports resolved)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]).strip(".") \
                if node.level else node.module
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return found


def room(name: str) -> str | None:
    parts = name.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ROOMS) else None


def test_every_module_of_benchmark_is_in_a_room_or_is_an_entry_point():
    loose = [n for n in modules("benchmark") if n != "benchmark" and room(n) is None
             and n.split(".")[1] not in ENTRY_POINTS]
    assert loose == []


def test_rooms_import_only_downward():
    climbing = []
    for name, path in modules("benchmark").items():
        here = room(name)
        if here is None:
            continue                                           # an entry point: may use every room
        for target in imported(name, path):
            there = room(target) if target.startswith("benchmark.") else None
            if target.startswith("benchmark.") and there is None and target.split(".")[1] in ENTRY_POINTS:
                climbing.append(f"{name} -> {target} (an entry point)")
            elif there is not None and there != here and there not in MAY_IMPORT[here]:
                climbing.append(f"{name} -> {target}")
    assert climbing == []


def test_models_never_import_the_benchmark():
    assert [f"{n} -> {t}" for n, p in modules("models").items() for t in imported(n, p)
            if t == "benchmark" or t.startswith("benchmark.")] == []


def test_the_layering_test_sees_a_climbing_import(tmp_path):
    """The scanner itself: a render module importing the harness, inside a function, is found."""
    path = tmp_path / "tables.py"
    path.write_text("def f():\n    from ..harness import grid\n    import benchmark.measure.timing\n")
    targets = imported("benchmark.render.tables", path)
    assert {"benchmark.harness.grid", "benchmark.measure.timing"} <= targets
    assert room("benchmark.harness.grid") not in MAY_IMPORT["render"]


def test_no_test_file_imports_another():
    """What tests share lives in modules that are not test files (tests/helpers.py, the real-layout
    generators of tests/layouts.py, the rehearsal of tests/rehearsal.py) and conftest.py's fixtures."""
    found = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found += [f"{name} -> {t}" for t in imported(name, path)
                  if t.startswith("tests.") and t.rsplit(".", 1)[-1].startswith("test_")]
    assert found == []


def test_each_command_has_one_spelling():
    """``medir-bench <command>`` runs the module that ``python -m`` runs; the rooms' modules behind
    the entry points are not runnable themselves (no third spelling)."""
    from benchmark import cli
    runnable = {".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__main__")
                for p in (ROOT / "benchmark").rglob("*.py") if 'if __name__ == "__main__":' in p.read_text()}
    commands = {module.removesuffix(".__main__") for module in cli.COMMANDS.values()}
    assert commands <= runnable
    assert not runnable & {"benchmark.harness.run", "benchmark.harness.status", "benchmark.measure.costs",
                           "benchmark.checks.check_model", "benchmark.measure.gpu_check"}
    assert runnable - commands == {"benchmark.cli"}, f"runnable without a medir-bench command: {runnable - commands}"
