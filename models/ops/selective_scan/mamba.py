"""``mamba_ssm``'s CUDA selective scan, when it is installed."""
from __future__ import annotations


def mamba_kernel():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:
        return None
    return selective_scan_fn
