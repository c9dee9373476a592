"""Where specs run: ``local`` (in this process, or ``jobs`` worker processes). Every executor calls
the same ``benchmark.pipeline.run_spec``."""
from .local import run_local

__all__ = ["run_local"]
