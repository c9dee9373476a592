"""Which backend a model's kernel ops run, chosen per model and recorded from it.

Each layer that calls a kernel op holds a ``KernelChoice`` (kind ``"wkv"`` or ``"scan"``): the
backend its calls ask for (None: the op's default, ``"auto"`` unless ``use_backend`` says
otherwise) and the set of backends they actually ran. ``RestorationModel.set_backends(wkv=...,
scan=...)`` sets every layer of a model; ``RestorationModel.used_backends()`` collects them, so a
run records what trained and tested *its* model, whatever else ran in the process.
"""
from __future__ import annotations

import torch.nn as nn

KINDS = ("wkv", "scan")


class KernelChoice:
    """The backend of one layer's calls of one kind of kernel op, and the backends they ran."""

    def __init__(self, kind: str):
        if kind not in KINDS:
            raise ValueError(f"unknown kernel kind {kind!r}; expected one of {', '.join(KINDS)}")
        self.kind = kind
        self.backend: str | None = None
        self.used: set[str] = set()

    def __repr__(self) -> str:
        return f"KernelChoice({self.kind}: {self.backend or 'default'}, ran {sorted(self.used)})"


def _choices(model: nn.Module):
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, KernelChoice):
                yield value


def set_backends(model: nn.Module, **backends: str | None) -> nn.Module:
    """Set the backend of every kernel op of ``model`` by kind, e.g. ``wkv="cpp", scan="auto"``
    (None: the op's default); each name is checked against its op's backends."""
    from . import selective_scan, wkv
    valid = {"wkv": wkv.BACKENDS, "scan": selective_scan.BACKENDS}
    for kind, backend in backends.items():
        if kind not in KINDS:
            raise ValueError(f"unknown kernel kind {kind!r}; expected one of {', '.join(KINDS)}")
        if backend is not None and backend not in valid[kind]:
            raise ValueError(f"unknown {kind} backend {backend!r}; expected one of {', '.join(valid[kind])}")
    for choice in _choices(model):
        if choice.kind in backends:
            choice.backend = backends[choice.kind]
    return model


def used_backends(model: nn.Module, reset: bool = False) -> dict[str, list[str]]:
    """``{kind: sorted backends}`` that the model's kernel ops have run (kinds it never called are
    absent); ``reset`` clears the record."""
    used: dict[str, set[str]] = {}
    for choice in _choices(model):
        if choice.used:
            used.setdefault(choice.kind, set()).update(choice.used)
        if reset:
            choice.used.clear()
    return {kind: sorted(names) for kind, names in sorted(used.items())}
