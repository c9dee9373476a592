"""The pieces of the R-RWKV block: token shifts, spatial mix (WKV), channel mix."""
from .block import RRWKVBlock
from .channel_mix import ChannelMix
from .spatial_mix import SCAN_DIRECTIONS, SCANS, WKV_KINDS, ScanPlan, SpatialMix, plan_scans
from .token_shift import OMNI_KERNELS, SHIFTS, OmniShift, QuadShift, UniShift, build_token_shift

__all__ = ["RRWKVBlock", "ChannelMix", "SpatialMix", "ScanPlan", "plan_scans", "OmniShift", "QuadShift",
           "UniShift", "build_token_shift", "SHIFTS", "OMNI_KERNELS", "WKV_KINDS", "SCANS", "SCAN_DIRECTIONS"]
