"""The one description of the machine a number was measured on: CPU model, cores, threads, GPU,
versions. Runs record ``describe`` (``environment.json``, via ``provenance.record``); tables and
benchmark reports name the machine with ``name``."""
from __future__ import annotations

import functools
import os
import platform
import socket
from pathlib import Path


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def name(device=None) -> str:
    """The GPU's name for a CUDA ``device``, else the CPU model and its logical cores."""
    import torch
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_model()} ({os.cpu_count()} logical cores)"


def describe(device) -> dict:
    """Everything a result records of the machine and the software it ran on (torch ``device``)."""
    import numpy as np
    import torch
    device = torch.device(device)
    return {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "platform": platform.platform(), "host": socket.gethostname(), "device": str(device),
            "cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
