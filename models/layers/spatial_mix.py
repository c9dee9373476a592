"""Spatial mix (Restore-RWKV Eq. 1-4) with every WKV ablation of Tables 5-7.

- ``wkv='uni'``: one causal WKV pass over the H-scan sequence (RWKV).
- ``wkv='bi'``:  one Bi-WKV pass (Vision-RWKV, Eq. 8) over ``first_scan``.
- ``wkv='re'``:  Re-WKV (Eq. 9-10), laid out by ``scan``:
    * ``recurrent`` - M passes inside the block, each taking the previous result as its values,
      the direction alternating from ``first_scan`` (H, V, H, ...);
    * ``alternate`` - one pass per block, H in even blocks and V in odd ones (Table 7, row 1);
    * ``sum``       - an H pass and a V pass on the same K, V, summed (Table 7, row 2; RWKV-IR's
      Cross-Bi-WKV).
Decay ``w`` and bonus ``u`` are per pass and per channel, divided by T before the op (Eq. 8).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn

from ..schema import check_choice
from ..ops.backends import KernelChoice
from ..ops.wkv import bi_wkv, uni_wkv
from .token_shift import build_token_shift

WKV_KINDS = ("uni", "bi", "re")
SCANS = ("recurrent", "alternate", "sum")
SCAN_DIRECTIONS = ("h", "v")


@dataclass(frozen=True)
class ScanPlan:
    """The WKV passes of one block: their directions and whether they chain or sum."""
    directions: tuple[str, ...]
    causal: bool = False
    summed: bool = False


def plan_scans(wkv: str, recurrence: int | None, scan: str, first_scan: str, block_index: int) -> ScanPlan:
    """Resolve the ablation options of one block into its WKV passes. Combinations without a
    meaning are rejected with an error that says which option to change."""
    check_choice("wkv", wkv, WKV_KINDS)
    check_choice("scan", scan, SCANS)
    check_choice("first_scan", first_scan, SCAN_DIRECTIONS)
    if recurrence is not None and (isinstance(recurrence, bool) or not isinstance(recurrence, int) or recurrence < 1):
        raise ValueError(f"recurrence must be an integer M >= 1; got {recurrence!r}")
    other = "v" if first_scan == "h" else "h"
    if wkv != "re":
        if scan != "recurrent":
            raise ValueError(f"scan={scan!r} applies to wkv='re' only; got wkv={wkv!r}")
        if recurrence not in (None, 1):
            raise ValueError(f"recurrence={recurrence}: wkv={wkv!r} makes one pass; use wkv='re' for M passes")
        if wkv == "uni":
            if first_scan != "h":
                raise ValueError("wkv='uni' scans the H-scan sequence only; got first_scan='v'")
            return ScanPlan(("h",), causal=True)
        return ScanPlan((first_scan,))
    if scan != "recurrent":
        if recurrence is not None:
            raise ValueError(f"recurrence={recurrence} applies to scan='recurrent'; scan={scan!r} fixes the passes")
        if scan == "alternate":
            return ScanPlan((first_scan if block_index % 2 == 0 else other,))
        return ScanPlan((first_scan, other), summed=True)
    m = 2 if recurrence is None else recurrence
    return ScanPlan(tuple(first_scan if j % 2 == 0 else other for j in range(m)))


def _to_scan(t: torch.Tensor, direction: str) -> torch.Tensor:
    """(B, H, W, C) -> (B, T, C) in H-scan (row-major) or V-scan (column-major) order."""
    if direction == "v":
        t = t.transpose(1, 2)
    return t.reshape(t.shape[0], -1, t.shape[-1])


def _from_scan(t: torch.Tensor, direction: str, height: int, width: int) -> torch.Tensor:
    if direction == "v":
        return t.reshape(t.shape[0], width, height, -1).transpose(1, 2)
    return t.reshape(t.shape[0], height, width, -1)


class SpatialMix(nn.Module):
    def __init__(self, dim: int, plan: ScanPlan, shift: str = "omni", shift_kernel: int = 5, reparam: bool = True):
        super().__init__()
        self.plan = plan
        self.shift = build_token_shift(shift, dim, n_out=3, kernel=shift_kernel, reparam=reparam)
        self.key = nn.Linear(dim, dim, bias=False)
        self.value = nn.Linear(dim, dim, bias=False)
        self.receptance = nn.Linear(dim, dim, bias=False)
        self.output = nn.Linear(dim, dim, bias=False)
        passes = len(plan.directions)
        self.decay = nn.Parameter(torch.randn(passes, dim))                     # w, one row per pass
        self.bonus = nn.Parameter(torch.randn(passes, dim))                     # u
        self.kernel = KernelChoice("wkv")                                       # set_backends / used_backends

    def extra_repr(self) -> str:                # the scan plan is not in any parameter's shape
        return (f"directions={''.join(self.plan.directions)}, causal={self.plan.causal}, "
                f"summed={self.plan.summed}")

    def _wkv(self, j: int, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        tokens = k.shape[1]
        op = uni_wkv if self.plan.causal else bi_wkv
        return op(self.decay[j] / tokens, self.bonus[j] / tokens, k, v,          # Eq. 8: w / T, u / T
                  backend=self.kernel.backend, record=self.kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H, W, C), already layer-normalised -> (B, H, W, C)."""
        B, H, W, C = x.shape
        xk, xv, xr = self.shift(x)
        k, v, r = self.key(xk), self.value(xv), self.receptance(xr)            # (B, H, W, C) each
        if self.plan.summed:
            wkv = sum(_from_scan(self._wkv(j, _to_scan(k, d), _to_scan(v, d)), d, H, W)
                      for j, d in enumerate(self.plan.directions))
        else:
            wkv = v
            for j, d in enumerate(self.plan.directions):                         # Eq. 9: wkv^(j)
                wkv = _from_scan(self._wkv(j, _to_scan(k, d), _to_scan(wkv, d)), d, H, W)
        return self.output(torch.sigmoid(r) * wkv)                               # Eq. 4
