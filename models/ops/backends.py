"""The kernel ops, their backends, and which backend a model's kernel ops run, chosen per model
and recorded from it.

Each op registers its kind and its backends here (``register_op``: ``"wkv"`` in ``ops/wkv/``,
``"scan"`` in ``ops/selective_scan/``): the one vocabulary that the ops, the models, the run
configuration (``train.<kind>_backend``) and the benchmarks check names against. Choosing a backend
has one mechanism: ``backend=`` on an op call, which a model's layers take from their
``KernelChoice``: the backend its calls ask for (None: ``"auto"``, the kernel of the tensors'
device, else the PyTorch path), the set of backends they actually ran and the dtypes they computed
in (``precision.py``).
The layer passes it as the op's ``record=``. ``RestorationModel.set_backends(wkv=...,
scan=...)`` sets every layer of a model; ``RestorationModel.used_backends()`` collects them, so a
run records what trained and tested *its* model, whatever else ran in the process.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

OPS: dict[str, tuple[str, ...]] = {}          # kind -> its backends, "auto" first (register_op)
_RESOLVERS: dict[str, Callable] = {}


def register_op(kind: str, names: tuple[str, ...], resolve: Callable[[str | None, object], str]) -> tuple[str, ...]:
    """Declare a kernel op's kind, its backends and its ``resolve(backend, device)`` (what a call
    would run); its package does, once. Returns ``names``."""
    if names[0] != "auto" or "torch" not in names:
        raise ValueError(f"{kind}: backends must start with 'auto' and include 'torch'; got {names}")
    OPS[kind], _RESOLVERS[kind] = tuple(names), resolve
    return OPS[kind]


def resolve(kind: str, backend: str | None, device) -> str:
    """The backend a call of ``kind`` asking for ``backend`` (None: "auto") runs on ``device``."""
    _check_kind(kind)
    return _RESOLVERS[kind](backend, device)


def _check_kind(kind: str) -> None:
    if kind not in OPS:
        raise ValueError(f"unknown kernel kind {kind!r}; expected one of {', '.join(OPS)}")


def check_backend(kind: str, backend: str) -> str:
    """``backend`` if ``kind`` has it, else a ``ValueError`` naming both and the choices."""
    _check_kind(kind)
    if backend not in OPS[kind]:
        raise ValueError(f"unknown {kind} backend {backend!r}; expected one of {', '.join(OPS[kind])}")
    return backend


class KernelChoice:
    """The backend of one layer's calls of one kind of kernel op, and the backends they ran."""

    def __init__(self, kind: str):
        _check_kind(kind)
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
    for kind, backend in backends.items():
        _check_kind(kind)
        if backend is not None:
            check_backend(kind, backend)
    for choice in _choices(model):
        if choice.kind in backends:
            choice.backend = backends[choice.kind]
    return model


def kernel_ops(model: nn.Module) -> list[str]:
    """The kinds of kernel op that ``model``'s layers call, sorted (what the model declares it uses)."""
    return sorted({choice.kind for choice in _choices(model)})


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
