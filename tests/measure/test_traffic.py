"""The WKV traffic count: the Triton kernels' stated loads and stores against Triton's interpreter
with every load and store counted, the PyTorch-op counter against hand counts, and the command."""
import numpy as np
import pytest
import torch

from benchmark.measure import traffic
from models.ops.wkv import triton_launch as wkv_triton

NO_INTERPRETER = wkv_triton.availability("cpu")


@pytest.fixture
def counted_memory(monkeypatch):
    """Bytes the interpreter's masked loads and stores move (unmasked lanes only), each address once
    per program: what a program reads again (its chunk's tokens, visited several times) or reads back
    after writing it (bi_wkv's gradients, the future's part, then the past's added) comes from its
    caches, not from memory. A launch starts at program (0, 0, 0)."""
    from triton.runtime import interpreter
    touched = {"read": {}, "written": {}}
    program = {"launch": -1, "index": None}
    load, store = interpreter.InterpreterBuilder.create_masked_load, interpreter.InterpreterBuilder.create_masked_store
    set_grid_idx = interpreter.InterpreterBuilder.set_grid_idx

    def counted_grid_idx(self, x, y, z):
        program["launch"] += (x, y, z) == (0, 0, 0)
        program["index"] = (program["launch"], x, y, z)
        return set_grid_idx(self, x, y, z)

    def note(kind, ptrs, mask):
        itemsize = np.dtype(interpreter._get_np_dtype(ptrs.get_element_ty())).itemsize
        for address in np.asarray(ptrs.data)[np.asarray(mask.data, dtype=bool)].ravel().tolist():
            if kind == "read" and (program["index"], address) in touched["written"]:
                continue                                    # its own write, read back from the cache
            touched[kind][program["index"], address] = itemsize

    def counted_load(self, ptrs, mask, *args):
        note("read", ptrs, mask)
        return load(self, ptrs, mask, *args)

    def counted_store(self, ptrs, value, mask, *args):
        note("written", ptrs, mask)
        return store(self, ptrs, value, mask, *args)

    monkeypatch.setattr(interpreter.InterpreterBuilder, "set_grid_idx", counted_grid_idx)
    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_masked_load", counted_load)
    monkeypatch.setattr(interpreter.InterpreterBuilder, "create_masked_store", counted_store)

    class Moved(dict):
        def __getitem__(self, kind):
            return sum(touched[kind].values())
    return Moved(touched)


@pytest.mark.skipif(NO_INTERPRETER is not None, reason=str(NO_INTERPRETER))
@pytest.mark.parametrize("causal", [False, True], ids=["bi", "uni"])
@pytest.mark.parametrize("dtype,acc", [(torch.float32, torch.float32), (torch.bfloat16, torch.float64)],
                         ids=["fp32", "bf16-in-fp64"])
@pytest.mark.parametrize("block,group,batch,tokens", [(8, 2, 2, 40), (None, None, 1, 100)],
                         ids=["three-levels", "defaults"])
def test_kernel_traffic_is_what_the_interpreter_loads_and_stores(counted_memory, monkeypatch, causal, dtype, acc,
                                                                 block, group, batch, tokens):
    """One forward and one backward on 20 channels (a ragged last channel block): 40 tokens in chunks
    of 8 and groups of 2 (5 chunks: the boundary scan has three levels), and 100 tokens at the
    kernels' defaults (64 tokens per chunk: a ragged second chunk, one level)."""
    if block is not None:
        monkeypatch.setattr(wkv_triton, "BLOCK_T", block)
        monkeypatch.setattr(wkv_triton, "GROUP", group)
    channels = 20
    g = torch.Generator().manual_seed(0)
    k, v = (torch.randn(batch, tokens, channels, generator=g).to(dtype).requires_grad_() for _ in range(2))
    w, u = (torch.randn(channels, generator=g, dtype=acc) / tokens for _ in range(2))
    wkv_triton.wkv(w, u, k, v, causal, acc).sum().backward()
    stated = wkv_triton.traffic(batch, tokens, channels, causal, k.element_size(), acc.itemsize)
    assert (counted_memory["read"], counted_memory["written"]) == (sum(r for r, _ in stated.values()),
                                                                   sum(w for _, w in stated.values()))


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
def test_the_triton_count_is_its_kernels_and_almost_no_glue(op):
    batch, tokens, channels = 2, 100, 24
    counted = traffic.count("triton", op, batch, tokens, channels, span=10.0)
    acc = counted["acc"]
    assert acc == torch.float32                             # at any span, for both ops
    assert counted["kernels"] == wkv_triton.traffic(batch, tokens, channels, op == "uni", 4, acc.itemsize)
    assert counted["floor"] == 8 * batch * tokens * channels * 4
    # around the kernels: w and u converted, the per-chunk partials of gw and gu summed; no B x T x C
    # tensor is made or read by PyTorch (y is written in the inputs' dtype)
    glue = traffic.moved(counted, "torch")
    assert glue < counted["floor"] / 32
    assert not {"cat", "exp", "amax"} & set(counted["torch"])


@pytest.mark.parametrize("op", ["bi", "uni"])
@pytest.mark.parametrize("shape", [(1, 128 ** 2, 48), (4, 128 ** 2, 384), (1, 1024 ** 2, 48)], ids=str)
def test_the_triton_path_moves_at_most_twice_the_floor(op, shape):
    """Issue 34's goal at its three shapes, float32 inputs and sums: the forward reads k, v twice and writes y; the backward reads k, v, gy twice (it
    recomputes y and log den from the forward's chunk states) and writes gk, gv: 13 tensors, and the
    chunk states and their scan about 2 more at 64 tokens per chunk."""
    counted = traffic.count("triton", op, *shape, span=10.0)
    assert traffic.total(counted) <= 2 * counted["floor"]


def test_bfloat16_inputs_move_their_own_bytes_with_float32_sums():
    single, half = (traffic.count("triton", "bi", 1, 64, 16, span=40.0, dtype=d) for d in (torch.float32, torch.bfloat16))
    assert single["acc"] == half["acc"] == torch.float32
    single_bytes, half_bytes = (traffic.moved(c, "kernels") for c in (single, half))
    assert single_bytes / 2 < half_bytes < single_bytes    # k, v, gk, gv halve; the float32 states do not


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
    assert "kernel backward finish" in out and "aten.cumsum" in out


def test_a_bad_shape_is_an_error_naming_it(capsys):
    with pytest.raises(SystemExit):
        traffic.main(["--shapes", "1:64"])
    assert "a shape is B:T:C" in capsys.readouterr().err
