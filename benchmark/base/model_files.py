"""Which model families a run's numbers can depend on, read from the source without importing it.

A *family* is a module ``models/<name>.py`` that registers presets (``@register_model``). A run that
built ``drmc_tiny`` ran the code of ``models/drmc.py`` and of every module that file imports,
directly or through other modules (``amir.py`` imports ``restormer.py``); the other families' files
cannot change its numbers, so a change to them leaves it fresh (``provenance.run_files``). Files
that are not families (the registry, ``_unet.py``, ``layers/``, ``ops/``) always count. Only import
statements are followed, not a package's implicit ``__init__``: ``models/__init__.py`` imports every
family to register them, which runs no family's code in another's model.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = "models"


def _registers(node: ast.AST) -> bool:
    """Whether a function definition is decorated with ``register_model`` (bare or called)."""
    for decorator in getattr(node, "decorator_list", []):
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", None)
        if name == "register_model":
            return True
    return False


def _module_path(parts: list[str], root: Path) -> str | None:
    """The file of the dotted module ``parts`` under ``root`` (a module or a package), or None."""
    for candidate in (Path(*parts).with_suffix(".py"), Path(*parts) / "__init__.py"):
        if (root / candidate).is_file():
            return candidate.as_posix()
    return None


def _imports(tree: ast.Module, path: str, root: Path) -> set[str]:
    """The files under ``models/`` that the module ``path`` (parsed: ``tree``) imports (absolute or
    relative imports)."""
    package = Path(path).parent.parts              # a module's package (a package's own, for __init__.py)
    found = set()
    for node in ast.walk(tree):
        targets: list[list[str]] = []
        if isinstance(node, ast.Import):
            targets = [alias.name.split(".") for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = list(package[:len(package) - node.level + 1]) if node.level else []
            module = base + (node.module.split(".") if node.module else [])
            targets = [module] + [module + [alias.name] for alias in node.names]   # ``from . import x``
        for parts in targets:
            if parts and parts[0] == PACKAGE:
                hit = _module_path(parts, root)
                if hit is not None:
                    found.add(hit)
    found.discard(path)
    return found


@functools.lru_cache(maxsize=4)
def _graph(root: Path) -> tuple[dict[str, str], dict[str, frozenset[str]]]:
    """({registered preset name: its family's file}, {file: the files it imports}) over ``models/``."""
    registered, edges = {}, {}
    for file in sorted((root / PACKAGE).rglob("*.py")):
        path = file.relative_to(root).as_posix()
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=path)
        edges[path] = frozenset(_imports(tree, path, root))
        if file.parent == root / PACKAGE:
            for node in tree.body:
                if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and _registers(node):
                    registered[node.name] = path
    return registered, edges


def families(root: Path) -> set[str]:
    """The family files (``models/<name>.py`` that register presets)."""
    return set(_graph(Path(root))[0].values())


def used_families(model: str, root: Path) -> set[str] | None:
    """The family files whose code a run of the preset ``model`` ran (its own and those reached by
    its imports); None when ``model`` is registered by no file under ``models/`` (a model imported
    from outside: then every file counts)."""
    registered, edges = _graph(Path(root))
    if model not in registered:
        return None
    reached, todo = set(), [registered[model]]
    while todo:
        path = todo.pop()
        if path not in reached:
            reached.add(path)
            todo += edges.get(path, ())
    return reached & families(root)
