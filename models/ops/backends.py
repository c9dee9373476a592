"""Which backend a model's kernel ops run, chosen per model and recorded from it.

Each layer that calls a kernel op holds a ``KernelChoice`` (kind ``"wkv"`` or ``"scan"``): the
backend its calls ask for (None: the op's default, ``"auto"`` unless ``use_backend`` says
otherwise), the set of backends they actually ran and the dtypes they computed in (``precision.py``).
The layer passes it as the op's ``record=``. ``RestorationModel.set_backends(wkv=...,
scan=...)`` sets every layer of a model; ``RestorationModel.used_backends()`` collects them, so a
run records what trained and tested *its* model, whatever else ran in the process.
"""
from __future__ import annotations

import torch
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
        self.computed: set[str] = set()          # compute dtypes, e.g. "float32"

    def __repr__(self) -> str:
        return f"KernelChoice({self.kind}: {self.backend or 'default'}, ran {sorted(self.used)})"


def note(record: "KernelChoice | set | None", backend: str, dtype: torch.dtype | None = None) -> None:
    """What an op call ran, into its ``record=``: a ``KernelChoice`` (backend and compute dtype) or
    a plain set (the backend)."""
    if isinstance(record, KernelChoice):
        record.used.add(backend)
        if dtype is not None:
            record.computed.add(str(dtype).removeprefix("torch."))
    elif record is not None:
        record.add(backend)


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


def _collect(model: nn.Module, field: str, reset: bool) -> dict[str, list[str]]:
    """``{kind: sorted names}`` from the ``field`` set ("used" or "computed") of every choice."""
    found: dict[str, set[str]] = {}
    for choice in _choices(model):
        names = getattr(choice, field)
        if names:
            found.setdefault(choice.kind, set()).update(names)
        if reset:
            names.clear()
    return {kind: sorted(names) for kind, names in sorted(found.items())}


def used_backends(model: nn.Module, reset: bool = False) -> dict[str, list[str]]:
    """``{kind: sorted backends}`` that the model's kernel ops have run (kinds it never called are
    absent); ``reset`` clears the record."""
    return _collect(model, "used", reset)


def kernel_dtypes(model: nn.Module, reset: bool = False) -> dict[str, list[str]]:
    """``{kind: sorted dtypes}`` that the model's kernel ops have computed in; ``reset`` clears it."""
    return _collect(model, "computed", reset)
