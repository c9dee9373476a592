"""Restore-RWKV (Yang et al., Sec. 3): a 4-level U-Net of R-RWKV blocks, every ablation an option.

Architecture (checked against the authors' public code): a 3x3 input projection to ``dim``
channels; encoder levels of ``num_blocks`` blocks at dim, 2dim, 4dim, 8dim; down = 3x3 conv halving
the channels + pixel-unshuffle, up = 3x3 conv doubling them + pixel-shuffle; skips concatenated with
1x1 reductions at levels 3 and 2 (level 1 keeps 2dim), ``num_refinement_blocks`` more at 2dim, a 3x3
output projection and the global residual ``I_HQ = I_LQ + I_R``.

Parameter count (deploy form, Omni-Shift as one 5x5 conv): ``restore_rwkv`` has 27,846,625. The
paper's 27.9140M adds 67,392 = 9 x 7,488: an unused 3x3 depth-wise kernel per block (``att.dwconv``)
in an older version of the authors' code, 7,488 being the channel sum over all 44 blocks.
"""
from __future__ import annotations

import re
from typing import Mapping, Sequence

import torch
import torch.nn as nn

from .schema import check_choice
from ._registry import register_model
from ._unet import RestormerUNet
from .layers.block import RRWKVBlock
from .layers.spatial_mix import plan_scans
from .layers.token_shift import SHIFTS, OmniShift

__all__ = ["RestoreRWKV", "convert_official_state_dict"]


class _Stage(nn.Sequential):
    """A run of R-RWKV blocks on an NCHW feature map (the blocks work channels-last)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)                                                # (B, H, W, C)
        for block in self:
            x = block(x)
        return x.permute(0, 3, 1, 2)


class RestoreRWKV(RestormerUNet):
    """Restore-RWKV. Ablation options (validated; errors list the valid values):

    - ``wkv``: ``'uni'`` | ``'bi'`` | ``'re'`` (Table 5); ``recurrence``: M >= 1 for ``'re'`` (Table 6,
      default 2); ``first_scan``: ``'h'`` | ``'v'`` (Table 6, M=1 V-scan); ``scan``: ``'recurrent'`` |
      ``'alternate'`` | ``'sum'`` (Table 7).
    - ``shift``: ``'uni'`` | ``'quad'`` | ``'omni'`` (Table 5); for omni, ``shift_kernel`` in
      {1, 3, 5, 7, 9} and ``reparam`` (Table 8): True trains the multi-branch form, which
      ``reparameterize()`` folds into one kxk conv; False trains a single kxk conv.
    - ``hidden_ratio``: channel-mix MLP width (4 in the paper).

    Input ``(B, in_chans, H, W)`` of the model's dtype; any H, W (padded by reflection to a multiple
    of 8, output cropped back). Output has the input's shape.
    """

    def __init__(self, in_chans: int = 1, out_chans: int = 1, dim: int = 48,
                 num_blocks: Sequence[int] = (4, 6, 6, 8), num_refinement_blocks: int = 4,
                 hidden_ratio: float = 4, wkv: str = "re", recurrence: int | None = None,
                 scan: str = "recurrent", first_scan: str = "h", shift: str = "omni",
                 shift_kernel: int | None = None, reparam: bool | None = None):
        check_choice("shift", shift, SHIFTS)
        if shift != "omni" and (shift_kernel is not None or reparam is not None):
            raise ValueError(f"shift_kernel and reparam apply to shift='omni' only; got shift={shift!r}")
        if dim < 2 or dim % 2:
            raise ValueError(f"dim must be a positive even number (down-sampling halves it); got {dim}")
        if len(num_blocks) != 4 or min(num_blocks) < 1 or num_refinement_blocks < 0:
            raise ValueError(f"num_blocks must be 4 positive counts and num_refinement_blocks >= 0; "
                             f"got {tuple(num_blocks)}, {num_refinement_blocks}")
        options = dict(hidden_ratio=hidden_ratio, shift=shift,
                       shift_kernel=5 if shift_kernel is None else shift_kernel,
                       reparam=True if reparam is None else bool(reparam))

        def stage(level: int, channels: int, depth: int) -> _Stage:
            return _Stage(*(RRWKVBlock(channels, plan_scans(wkv, recurrence, scan, first_scan, i), **options)
                            for i in range(depth)))

        # the authors' U-Net: the same layout as Restormer's, with biased embedding, reductions, output
        super().__init__("RestoreRWKV", in_chans, out_chans, dim, num_blocks, num_refinement_blocks, stage, bias=True)

    @torch.no_grad()
    def reparameterize(self) -> "RestoreRWKV":
        """Fold every multi-branch Omni-Shift into one kxk depth-wise conv (deploy form). Outputs are
        unchanged up to float rounding; idempotent; returns the model."""
        for module in self.modules():
            if isinstance(module, OmniShift):
                module.reparameterize()
        return self

    def deploy(self) -> "RestoreRWKV":
        """The tested and profiled form (the paper's): ``reparameterize()``."""
        return self.reparameterize()


# --- the authors' checkpoints -------------------------------------------------------------------

_OFFICIAL_RENAMES = [  # (pattern on the authors' key, replacement), applied in order
    (r"^encoder_level(\d)\.", r"encoder\1."),
    (r"^decoder_level(\d)\.", r"decoder\1."),
    (r"^down(\d)_\d\.body\.0\.", r"down\1.0."),
    (r"^up(\d)_(\d)\.body\.0\.", r"up\2.0."),
    (r"^reduce_chan_level(\d)\.", r"reduce\1."),
    (r"\.ln(\d)\.", r".norm\1."),
    (r"\.att\.", r".spatial_mix."),
    (r"\.ffn\.", r".channel_mix."),
    (r"\.spatial_decay$", r".decay"),
    (r"\.spatial_first$", r".bonus"),
    (r"\.omni_shift\.conv1x1\.", r".shift.branches.0."),
    (r"\.omni_shift\.conv3x3\.", r".shift.branches.1."),
    (r"\.omni_shift\.conv5x5\.", r".shift.branches.2."),
    (r"\.omni_shift\.alpha$", r".shift.alpha"),
    (r"\.omni_shift\.conv5x5_reparam\.", r".shift.conv."),
]


def convert_official_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a state_dict of the authors' ``Restore_RWKV`` onto :class:`RestoreRWKV` (the ``restore_rwkv``
    preset). A ``module.`` prefix (DataParallel) is stripped.

    - Checkpoints with the Omni-Shift branches (``conv1x1``/``conv3x3``/``conv5x5``/``alpha``) load
      into the multi-branch form; their ``conv5x5_reparam`` is dropped, since the authors' code
      recomputes it from the branches at the first ``eval()`` call.
    - Checkpoints with only ``conv5x5_reparam`` load into the deploy form: call
      ``model.reparameterize()`` before ``model.load_state_dict(...)``.
    - The unused ``att.dwconv`` kernels of the older code version are dropped.
    """
    keys = [k.removeprefix("module.") for k in state_dict]
    branch_form = any(".omni_shift.conv5x5." in k for k in keys)
    converted: dict[str, torch.Tensor] = {}
    unknown = []
    for key, value in zip(keys, state_dict.values()):
        if key.endswith(".att.dwconv.weight") or (branch_form and ".omni_shift.conv5x5_reparam." in key):
            continue
        new = key
        for pattern, replacement in _OFFICIAL_RENAMES:
            new = re.sub(pattern, replacement, new)
        if not re.match(r"^(patch_embed|encoder\d|decoder\d|latent|refinement|down\d|up\d|reduce\d|output)\.", new):
            unknown.append(key)
        converted[new] = value
    if unknown:
        raise ValueError(f"convert_official_state_dict: keys that are not from the authors' Restore_RWKV: "
                         f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
    return converted


# --- presets ---------------------------------------------------------------------------------------

def _create(defaults: dict, overrides: dict) -> RestoreRWKV:
    return RestoreRWKV(**{**defaults, **overrides})


@register_model(paper="Restore-RWKV", ops=("wkv",), converter=convert_official_state_dict)
def restore_rwkv(**kwargs) -> RestoreRWKV:
    """The paper's model: dim 48, blocks [4, 6, 6, 8], 4 refinement, Re-WKV M=2, Omni-Shift k=5.
    27,846,625 parameters in deploy form (27,996,737 in the multi-branch training form)."""
    return _create({}, kwargs)


@register_model(ops=("wkv",), converter=convert_official_state_dict)
def restore_rwkv_light(**kwargs) -> RestoreRWKV:
    """The abstract's 1.16M variant; its configuration is unpublished. Our choice: dim 12 and a
    channel-mix ratio of 1, i.e. 1,144,129 parameters in deploy form, or 1,160,977 (1.16M) in the
    paper's counting convention (which adds the unused 3x3 kernel per block, see module docstring)."""
    return _create(dict(dim=12, hidden_ratio=1), kwargs)


@register_model(ops=("wkv",), converter=convert_official_state_dict)
def restore_rwkv_tiny(**kwargs) -> RestoreRWKV:
    """For CPU smoke runs and tests: dim 8, one block per level, one refinement block."""
    return _create(dict(dim=8, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1, hidden_ratio=2), kwargs)
