"""The model contract: what the harness relies on, and all it relies on. Every registered model is a
``RestorationModel`` (``tests/zoo/test_registry.py`` checks the whole registry):

- ``forward(x, task=None)``: a (B, C, H, W) image batch in [0, 1] -> the restored batch of the same
  shape, at any H, W (odd sizes included). ``in_chans`` (1 unless the model says otherwise) is C;
  a batch of another shape or dtype is a ``ValueError`` that names what was expected
  (``models.check_image`` does it). ``task`` is a (B,) tensor of task
  ids (0 = MRI, 1 = CT, 2 = PET in all-in-one training) or None; single-task models ignore it.
- ``deploy()``: turn the model, in place, into the form that is tested and profiled (Restore-RWKV
  folds its multi-branch Omni-Shift into one convolution; most models have nothing to do) and
  return it. The outputs stay the same up to float rounding.
- ``auxiliary_loss(lq)``: the extra training loss of the last training forward on the batch
  ``lq`` (AMIR's mixture-of-experts load balancing, AirNet's contrastive degradation loss), or
  None. The harness adds ``train.aux_weight`` times it to the restoration loss.

- ``takes_regions`` (False by default): a model that sets it takes ``forward(x, task, regions=...)``,
  an indexed region mask (B, H, W) per image; the harness passes the data's masks to it when the
  data has them (a prepared dataset made from a source with a ``regions/`` folder) and to no other.
- ``set_backends(wkv=..., scan=...)`` / ``used_backends()``: the backend of the model's kernel ops
  (WKV, selective scan), chosen for this model, and the backends they ran (``models.ops.backends``);
  a model without kernel ops has nothing to set and reports ``{}``.

A model with its own training loss implements ``auxiliary_loss`` in its own file; the harness never
names a model. ``python -m benchmark.check_model NAME`` checks all of this for one model.

A registered preset may return any ``nn.Module`` whose ``forward`` takes the image: ``adapt`` makes it
a ``RestorationModel`` in place (its class, weights and state_dict keys unchanged), as timm's
registry takes any module: ``task`` is passed only to a ``forward`` that accepts it, the input is
checked (``check_image``), ``deploy()`` is the model itself when it has none, there is no auxiliary
loss, and ``in_chans`` is the first convolution's or linear layer's input channels when not set.
"""
from __future__ import annotations

import inspect

import torch
import torch.nn as nn

from ._input import check_image
from .ops import backends as backends_module


class RestorationModel(nn.Module):
    """Base class of every registered model: the defaults of the contract above."""

    in_chans: int = 1
    takes_regions: bool = False

    def forward(self, x: torch.Tensor, task: torch.Tensor | None = None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def deploy(self) -> "RestorationModel":
        """The inference form, in place (nothing to do by default); returns the model."""
        return self

    def auxiliary_loss(self, lq: torch.Tensor) -> torch.Tensor | None:
        """The extra loss of the last training forward on ``lq`` (None by default)."""
        return None

    def set_backends(self, **backends: str | None) -> "RestorationModel":
        """The backend of every kernel op of this model by kind (``wkv``, ``scan``); returns the model."""
        return backends_module.set_backends(self, **backends)

    def used_backends(self, reset: bool = False) -> dict[str, list[str]]:
        """``{kind: backends}`` that this model's kernel ops have run since built (or the last reset)."""
        return backends_module.used_backends(self, reset)

    def kernel_dtypes(self, reset: bool = False) -> dict[str, list[str]]:
        """``{kind: dtypes}`` that this model's kernel ops have computed in (``models/ops/precision.py``)."""
        return backends_module.kernel_dtypes(self, reset)


def _input_channels(module: nn.Module) -> int:
    first = next((m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))), None)
    if isinstance(first, nn.Conv2d):
        return first.in_channels
    return first.in_features if isinstance(first, nn.Linear) else 1


def adapt(module: nn.Module) -> RestorationModel:
    """``module`` as a ``RestorationModel`` (itself when it already is one); see the docstring above."""
    if isinstance(module, RestorationModel):
        return module
    if not isinstance(module, nn.Module):
        raise TypeError(f"a registered preset must return an nn.Module; got {type(module).__name__}")
    cls = type(module)
    takes_task = "task" in inspect.signature(module.forward).parameters
    in_chans = getattr(module, "in_chans", None) or _input_channels(module)

    def forward(self, x, task=None, **kwargs):
        dtype = next((p.dtype for p in self.parameters()), torch.float32)
        check_image(cls.__name__, x, self.in_chans, dtype)
        return cls.forward(self, x, task=task, **kwargs) if takes_task else cls.forward(self, x, **kwargs)

    module.__class__ = type(cls.__name__, (cls, RestorationModel),
                            {"forward": forward, "__module__": cls.__module__, "__doc__": cls.__doc__,
                             "__qualname__": cls.__qualname__})
    module.in_chans = in_chans
    return module
