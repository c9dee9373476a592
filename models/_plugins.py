"""Models from outside this package, and where every registered model comes from.

A researcher's model registers itself with ``models.register_model`` in its own module, which
reaches the registry in one of three ways:

- ``import_models(["path/to/my_model.py", "my_package.models"])``: what a grid's ``imports:`` list
  and the ``--import`` option of every command do (a ``.py`` path is imported as a file, anything
  else as a module name);
- an installed package that declares an entry point in the group ``medir_bench.models`` (its
  value a module, or a callable that registers models when called), loaded by ``import models``;
- importing the module yourself before calling the harness's functions.

Every item imported by ``import_models`` is also added to the environment variable
``MEDIR_BENCH_IMPORTS`` (``os.pathsep``-separated), which ``import models`` reads: processes started
from this one (the grid's parallel workers, the profiler's one-process-per-measurement) import the
same modules.

``model_source(name)`` says which module registered a model outside the package, with the file
and a SHA-256 of its source: a run records it in its configuration (so editing the file gives the
run a new id) and ``ensure_model`` imports it again in a worker process or a SLURM job.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import warnings
from importlib import metadata
from pathlib import Path

from ._registry import list_models, module_file, registered_by

ENTRY_POINT_GROUP = "medir_bench.models"
ENVIRONMENT = "MEDIR_BENCH_IMPORTS"
_PACKAGE = __name__.rsplit(".", 1)[0]                  # "models": the built-in families
_IMPORTED: dict[str, dict] = {}                      # module name -> its record


class ModelImportError(ImportError):
    """A model module that could not be imported, named with what was asked for."""


def _sha256(path: str | None) -> str | None:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest() if path and Path(path).is_file() else None


def _record(module: str, via: str) -> dict:
    file = module_file(module)
    record = {"module": module, "file": str(Path(file).resolve()) if file else None, "sha256": _sha256(file),
              "via": via}
    _IMPORTED[module] = record
    return record


def _module_name_for(path: Path) -> str:
    """A module name of its own for a file (never shadowing an installed module): the stem and a
    hash of the resolved path, so that importing the same file again finds the same module."""
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    return f"medir_user_{stem}_{digest}"


def _import_file(path: Path, reload: bool) -> str:
    name = _module_name_for(path)
    if name in sys.modules and not reload:
        return name
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ModelImportError(f"{path}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))            # its sibling modules import, as with `python file.py`
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return name


def import_models(items, base: str | Path | None = None, via: str = "--import", reload: bool = False) -> list[dict]:
    """Import each item (a path to a ``.py`` file, relative to ``base`` or the working folder, or a
    module name) so that its models register; returns their records. Any failure, a model name
    already taken included, is a ``ModelImportError`` that names the item and ``via``."""
    if items is None:
        return []
    if isinstance(items, str) or not all(isinstance(item, str) and item for item in items):
        raise ModelImportError(f"{via}: expected a list of module names or paths to .py files; got {items!r}")
    records = []
    for item in items:
        is_path = item.endswith(".py") or "/" in item or "\\" in item
        try:
            if is_path:
                path = (Path(base or ".") / Path(item).expanduser()).resolve()
                if not path.is_file():
                    raise FileNotFoundError(f"no such file {path}")
                module = _import_file(path, reload)
            else:
                module = importlib.import_module(item).__name__
        except Exception as err:                       # the model's own code failed: say which import
            raise ModelImportError(f"{via}: could not import {item!r}: {type(err).__name__}: {err}") from err
        records.append(_record(module, via))
        _export(str(path) if is_path else item)
    return records


def _export(item: str) -> None:
    exported = [i for i in os.environ.get(ENVIRONMENT, "").split(os.pathsep) if i]
    if item not in exported:
        os.environ[ENVIRONMENT] = os.pathsep.join([*exported, item])


def load_inherited() -> list[dict]:
    """Import what ``MEDIR_BENCH_IMPORTS`` names (set by the process that started this one); a
    failure is a warning, so that the built-in models stay usable."""
    records = []
    for item in filter(None, os.environ.get(ENVIRONMENT, "").split(os.pathsep)):
        try:
            records += import_models([item], via=ENVIRONMENT)
        except ModelImportError as err:
            warnings.warn(str(err), stacklevel=2)
    return records


def load_entry_points() -> list[dict]:
    """Import the models of every installed package with a ``medir_bench.models`` entry point. A
    broken one is a warning (the built-in models stay usable), never an error."""
    records = []
    for point in metadata.entry_points(group=ENTRY_POINT_GROUP):
        origin = f"entry point {point.name} = {point.value}" + (f" of {point.dist.name}" if point.dist else "")
        try:
            loaded = point.load()
            if callable(loaded):
                loaded()
            records.append(_record(point.module, origin))
        except Exception as err:
            warnings.warn(f"{origin}: could not load its models ({type(err).__name__}: {err})", stacklevel=2)
    return records


def imported_modules() -> list[dict]:
    """The records of every model module imported from outside the package in this process."""
    return [dict(record) for record in _IMPORTED.values()]


def model_source(name: str) -> dict | None:
    """Where ``name`` comes from when it is not a built-in model: ``{"module", "file", "sha256"}``."""
    module = registered_by(name)
    if module == _PACKAGE or module.startswith(_PACKAGE + "."):
        return None
    record = _IMPORTED.get(module) or _record(module, "imported by the caller")
    return {"module": module, "file": record["file"], "sha256": record["sha256"]}


def ensure_model(name: str, source: dict | None) -> None:
    """Make ``name`` available in this process as the run recorded it: import its module (from its
    file where the file is here, else by module name), and refuse a source that has changed since
    the run's configuration was made (the run's id promises that code)."""
    if source is None:
        return
    where = source.get("file") or source["module"]
    if name not in list_models():
        try:
            if source.get("file") and Path(source["file"]).is_file():
                import_models([source["file"]], via="the run's model.source")
            else:
                import_models([source["module"]], via="the run's model.source")
        except ModelImportError as err:
            raise ModelImportError(f"model {name!r} comes from {where}, which cannot be imported here ({err}); the "
                                   "module must be importable where the run executes (on SLURM: on the compute "
                                   "node, e.g. on a shared file system)") from None
    if name not in list_models():
        raise ModelImportError(f"model {name!r}: importing {where} did not register it")
    current = _sha256(module_file(registered_by(name)))
    if source.get("sha256") and current != source["sha256"]:
        raise ModelImportError(f"model {name!r}: {where} has changed since this run was configured (sha256 "
                               f"{source['sha256'][:12]} -> {(current or 'unreadable')[:12]}); run the command "
                               "again so that the run gets the id of the new code")
