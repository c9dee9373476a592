"""A network's identity: two models with the same signature compute the same function of the
same parameters (the same module tree, each module's configuration as its ``extra_repr`` says it,
the same parameter and buffer names, shapes and dtypes). The harness records it per run so that
tables can say when two rows build one network at a scale (e.g. a tiny preset with one block per
stage cannot alternate its scan direction between blocks)."""
from __future__ import annotations

import hashlib

from torch import nn


def network_signature(model: nn.Module) -> str:
    """A 16-hex-digit digest of the model's structure and parameter shapes (not their values)."""
    lines = [f"{name}:{type(module).__module__}.{type(module).__qualname__}({module.extra_repr()})"
             for name, module in model.named_modules()]
    lines += [f"{name}:{tuple(tensor.shape)}:{tensor.dtype}"
              for name, tensor in [*model.named_parameters(), *model.named_buffers()]]
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
