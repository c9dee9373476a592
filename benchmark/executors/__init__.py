"""Where specs run: ``local`` (in this process, or ``jobs`` worker processes). Every executor calls
the same ``benchmark.pipeline.run_spec``."""
from .local import report, run_local

__all__ = ["report", "run_local"]
