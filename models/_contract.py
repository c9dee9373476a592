"""The model contract: what the harness relies on, and all it relies on. Every registered model is a
``RestorationModel`` (``tests/test_registry.py`` checks the whole registry):

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
"""
from __future__ import annotations

import torch
import torch.nn as nn

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
