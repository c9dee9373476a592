"""Test-session setup.

Triton's interpreter (which runs the Triton WKV kernel on CPU tensors, tests/ops/test_wkv_triton.py)
must be chosen before Triton is first imported: without a GPU the test session turns it on here.
With a GPU the kernels are compiled and those tests run on CUDA tensors instead.

Reduction orders: ``MEDIR_TEST_THREADS=n`` runs the session with n intra-op threads and
``MEDIR_TEST_MKLDNN=0`` with oneDNN off, which change how floating-point reductions are ordered and
blocked; every tolerance of the suite is derived from the computation (``tests/helpers.py``), so
the suite passes under each (checked with 1, 2 and 4 threads and oneDNN off).

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

if os.environ.get("MEDIR_TEST_THREADS"):
    torch.set_num_threads(int(os.environ["MEDIR_TEST_THREADS"]))
if os.environ.get("MEDIR_TEST_MKLDNN") == "0":
    torch.backends.mkldnn.enabled = False
