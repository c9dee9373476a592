"""Test-session setup.

Triton's interpreter (which runs the Triton WKV kernel on CPU tensors, tests/test_wkv_triton.py)
must be chosen before Triton is first imported: without a GPU the test session turns it on here.
With a GPU the kernels are compiled and those tests run on CUDA tensors instead.

Generated phantom pairs are cached in a folder of this session (shared by the processes it starts),
never in the user's cache.
"""
import atexit
import os
import shutil
import tempfile

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

if "MEDIR_BENCH_DATA_CACHE" not in os.environ:
    os.environ["MEDIR_BENCH_DATA_CACHE"] = tempfile.mkdtemp(prefix="medir-bench-phantoms-")
    atexit.register(shutil.rmtree, os.environ["MEDIR_BENCH_DATA_CACHE"], True)
