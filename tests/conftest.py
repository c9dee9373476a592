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
import sys
import tempfile

import pytest
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


@pytest.fixture
def own_registry(monkeypatch):
    """A test that registers models does so into a copy of the registry, and imports nothing into
    later tests."""
    from models import _plugins, _registry
    for table in ("_ENTRYPOINTS", "_MODULE_OF", "_PAPER"):
        monkeypatch.setattr(_registry, table, dict(getattr(_registry, table)))
    monkeypatch.setattr(_plugins, "_IMPORTED", {})
    monkeypatch.setenv(_plugins.ENVIRONMENT, "")
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith("medir_user_"):
            del sys.modules[name]
