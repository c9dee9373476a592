"""Test-session setup.

Triton's interpreter (which runs the Triton WKV kernel on CPU tensors, tests/test_wkv_triton.py)
must be chosen before Triton is first imported: without a GPU the test session turns it on here.
With a GPU the kernels are compiled and those tests run on CUDA tensors instead.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
