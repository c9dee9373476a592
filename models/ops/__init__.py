"""Kernel ops, one folder each (``wkv/``, ``selective_scan/``): the float64 reference, the PyTorch
path, the compiled kernels' bindings and the dispatch; ``backends`` holds their one vocabulary of
backends and the per-model choice. Importing this package registers both ops."""
from . import selective_scan, wkv  # noqa: F401  (each registers its backends)
