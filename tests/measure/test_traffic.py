"""The WKV traffic count: the Triton kernels' stated loads and stores against Triton's interpreter
with every load and store counted, the PyTorch-op counter against hand counts, and the command."""
import numpy as np
import pytest
import torch

from benchmark.measure import traffic
from models.ops.wkv import triton_kernel as wkv_triton

NO_INTERPRETER = wkv_triton.availability("cpu")


@pytest.fixture
def counted_memory(monkeypatch):
    """Bytes the interpreter's masked loads and stores move (unmasked lanes only)."""
    from triton.runtime import interpreter
    moved = {"read": 0, "written": 0}
    load, store = interpreter.InterpreterBuilder.create_masked_load, interpreter.InterpreterBuilder.create_masked_store

    def size(ptrs, mask):
        return int(np.count_nonzero(mask.data)) * np.dtype(interpreter._get_np_dtype(ptrs.get_element_ty())).itemsize

    def counted_load(self, ptrs, mask, *args):
        moved["read"] += size(ptrs, mask)
        return load(self, ptrs, mask, *args)

    def counted_store(self, ptrs, value, mask, *args):
        moved["written"] += size(ptrs, mask)
        return store(self, ptrs, value, mask, *args)

    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_masked_load", counted_load)
    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_masked_store", counted_store)
    return moved


@pytest.mark.skipif(NO_INTERPRETER is not None, reason=str(NO_INTERPRETER))
@pytest.mark.parametrize("variant", wkv_triton.VARIANTS, ids=lambda v: "".join("pfm"[i] for i in range(3) if v[i]))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_kernel_traffic_is_what_the_interpreter_loads_and_stores(counted_memory, variant, dtype):
    rows, tokens, channels = 3, 37, 20          # a ragged last chunk (37 = 2 x 16 + 5) and channel block
    past, future, moment = variant
    X = torch.randn(rows, tokens, channels, dtype=dtype)
    w, u = torch.randn(channels, dtype=dtype) / tokens, torch.randn(channels, dtype=dtype) / tokens
    wkv_triton.decayed_sums(X, w, u, past, future, moment)
    stated = wkv_triton.traffic(rows, tokens, channels, past, future, moment, X.element_size())
    assert counted_memory == {"read": sum(r for r, _ in stated.values()), "written": sum(w for _, w in stated.values())}


def test_the_op_counter_counts_inputs_outputs_and_stored_bytes_only():
    a = torch.empty(4, 5, device="meta")                   # 80 bytes
    row = torch.empty(5, device="meta")                    # 20 bytes, broadcast over a
    with traffic.OpCounter() as counter:
        b = a * row                                        # reads 80 + 20, writes 80
        b[1:3].t().contiguous()                            # views are free; the copy reads 40, writes 40
        torch.empty_like(b)                                # an allocation moves nothing
        row.expand(4, 5).sum()                             # a broadcast reads its 20 stored bytes, writes 4
    assert dict(counter.read) == {"mul": 100, "clone": 40, "sum": 20}
    assert dict(counter.written) == {"mul": 80, "clone": 40, "sum": 4}


@pytest.mark.parametrize("op", ["bi", "uni"])
def test_the_triton_count_adds_one_forward_and_one_backward_launch(op):
    batch, tokens, channels = 2, 100, 24
    counted = traffic.count("triton", op, batch, tokens, channels, span=10.0)
    size = counted["acc"].itemsize
    assert counted["acc"] == (torch.float64 if op == "uni" else torch.float32)
    causal = op == "uni"
    forward = wkv_triton.traffic(2 * batch, tokens, channels, True, not causal, False, size)
    backward = wkv_triton.traffic(2 * batch, tokens, channels, not causal, True, True, size)
    assert counted["kernels"] == {name: tuple(a + b for a, b in zip(forward[name], backward[name])) for name in forward}
    assert counted["floor"] == 8 * batch * tokens * channels * 4
    glue = traffic.total(counted) - sum(r + w for r, w in counted["kernels"].values())
    assert glue > counted["floor"]                          # today's glue alone: the finding
    assert {"exp", "cat", "div"} <= set(counted["torch"])


def test_a_float64_span_doubles_the_bytes_of_bi_wkv():
    narrow, wide = (traffic.count("triton", "bi", 1, 64, 16, span=s) for s in (10.0, 40.0))
    assert narrow["acc"] == torch.float32 and wide["acc"] == torch.float64
    assert sum(r + w for r, w in wide["kernels"].values()) == 2 * sum(r + w for r, w in narrow["kernels"].values())


def test_the_command_prints_each_path_and_its_ratio_to_the_floor(capsys):
    assert traffic.main(["--shapes", "1:1048576:48", "--ops", "bi", "--detail"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| bi |")]
    assert [r.split("|")[2].strip() for r in rows] == ["torch", "triton"]
    for r in rows:
        cells = [c.strip() for c in r.strip("|").split("|")]
        kernels, glue, total, floor, ratio = (float(c) for c in cells[4:])
        assert total == pytest.approx(kernels + glue, abs=2e-3) and floor == pytest.approx(8 * 1048576 * 48 * 4 / 1e9, abs=1e-3)
        assert ratio == pytest.approx(total / floor, abs=0.06)
    assert "kernel chunk_finish" in out and "aten.cumsum" in out


def test_a_bad_shape_is_an_error_naming_it(capsys):
    with pytest.raises(SystemExit):
        traffic.main(["--shapes", "1:64"])
    assert "a shape is B:T:C" in capsys.readouterr().err
