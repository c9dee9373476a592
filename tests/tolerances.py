"""Float tolerances derived from the computation, never from what one machine happens to give.

Two kinds (issue 30: the suite failed on an AMD CPU at a fixed 1e-5 that held on the Intel one):

- ``rounding_bound``: a worst-case bound on the rounding error of a float computation whose longest
  chain of dependent operations (a sum, a scan) has ``depth`` steps on values of magnitude
  ``scale``: ``depth x eps x scale`` (Higham, *Accuracy and Stability of Numerical Algorithms*,
  Sec. 4.2: a recursive sum of n terms errs by at most (n - 1) u sum |x_i|, u = eps / 2, in any
  order of the additions). Another CPU, thread count or oneDNN setting changes the order and the
  blocking of the reductions, never the bound.
- ``float64_spread``: for a whole model, whose depth is not a single number, the float32 error of
  the computation measured against the same model in float64 on the same input; two float32
  evaluations that differ only in the order of their operations (another backend, another padding,
  a re-parameterised form) each lie within that error of the float64 result, so they differ by at
  most a small multiple of it.
"""
from __future__ import annotations

import copy

import torch


def eps(dtype: torch.dtype) -> float:
    return torch.finfo(dtype).eps


def rounding_bound(dtype: torch.dtype, depth: float, scale: float) -> float:
    return float(depth) * eps(dtype) * float(scale)


def wkv_depth(w: torch.Tensor, k: torch.Tensor, tokens: int, gradient: bool = False) -> float:
    """The error depth of a WKV output (a weighted mean of v over ``tokens``): the sum over the
    tokens (twice for a gradient: the forward's sums and the backward's), the rounding of the
    exponents (|k| and |w| x distance, whose absolute error becomes a relative error of the weight),
    and a few operations per term (exp, the ratio)."""
    exponent = float(k.abs().max()) + float(w.abs().max()) * tokens
    return (2 if gradient else 1) * tokens + exponent + 16


def float64_spread(model: torch.nn.Module, x: torch.Tensor, factor: float = 4.0, **kwargs) -> float:
    """``factor`` times the largest difference between ``model(x)`` in float32 and the same model
    (a deep copy) in float64, plus a float32 ulp of the output's scale (so that an exact computation
    still gets a nonzero tolerance)."""
    with torch.no_grad():
        single = model(x, **kwargs).double()
        double = copy.deepcopy(model).double()(x.double(), **kwargs)
    return factor * float((single - double).abs().max()) + eps(torch.float32) * float(double.abs().max())
