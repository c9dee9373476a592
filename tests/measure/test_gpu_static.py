"""The static performance report: its SASS reading against hand-counted listings, its occupancy
against the hardware's rules, the launcher's specialisation against Triton's rule written out, and
(compiled for sm_80 / sm_90 in a child process, no GPU needed) the kernels against the goal."""
import json
import os
import subprocess
import sys

import pytest
import torch

from benchmark.measure import gpu_static
from models.ops.wkv import triton_launch as wkv_triton

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# nvdisasm -c layout: a prologue, a loop of 4 instructions (LDG, FFMA, MUFU, the branch back), a
# barrier and a shuffle outside, a second loop of 2, EXIT, then the trap (a branch to itself) and padding.
LISTING = """
        .text.k:
        /*0000*/                   LDC R1, c[0x0][0x28] ;
        /*0010*/                   S2R R0, SR_TID.X ;
.L_x_0:
        /*0020*/                   LDG.E R2, desc[UR4][R4.64] ;
        /*0030*/                   FFMA R3, R2, R2, R3 ;
        /*0040*/                   MUFU.EX2 R3, R3 ;
        /*0050*/               @P0 BRA `(.L_x_0) ;
        /*0060*/                   BAR.SYNC.DEFER_BLOCKING 0x0 ;
        /*0070*/                   SHFL.BFLY PT, R5, R3, 0x1, 0x1f ;
        /*0080*/              @!P1 BRA `(.L_x_2) ;
.L_x_1:
        /*0090*/                   FADD R3, R3, R5 ;
        /*00a0*/               @P2 BRA `(.L_x_1) ;
.L_x_2:
        /*00b0*/                   EXIT ;
.L_x_3:
        /*00c0*/                   BRA `(.L_x_3);
        /*00d0*/                   NOP;
        /*00e0*/                   NOP;
"""


def test_sass_is_split_into_straight_code_and_loops():
    outside, loops = gpu_static.parse_sass(LISTING)
    assert [body.instructions for body in loops] == [4, 2]
    assert (loops[0].special, loops[0].barriers, loops[1].special) == (1, 0, 0)
    # LDC, S2R, BAR, SHFL, the forward branch, EXIT: the trap and the NOPs do not run
    assert (outside.instructions, outside.barriers, outside.shuffles, outside.special) == (6, 1, 1, 0)


def test_nested_loops_are_refused():
    nested = LISTING.replace("@P2 BRA `(.L_x_1)", "@P2 BRA `(.L_x_0)")
    with pytest.raises(ValueError, match="nested or overlapping"):
        gpu_static.parse_sass(nested + "        /*00f0*/               @P3 BRA `(.L_x_0) ;\n")


@pytest.mark.parametrize("registers,warps,shared,expected", [
    (32, 4, 0, 16),        # 64 warps per SM at most: 16 blocks of 4
    (64, 4, 0, 8),         # 64 x 32 x 4 = 8192 registers a block: 65536 / 8192
    (223, 4, 1024, 2),     # 223 -> 224 x 32 = 7168 a warp, 28672 a block: 2 blocks
    (40, 1, 0, 32),        # at most 32 blocks per SM
    (32, 1, 120000, 1),    # shared memory: 233472 / 120000
])
def test_blocks_per_sm_follow_the_hardware_limits(registers, warps, shared, expected):
    sass = gpu_static.Sass(registers, 0, shared, gpu_static.Counts(), [])
    assert gpu_static.blocks_per_sm(sass, warps, 90) == expected


def test_the_report_specialises_as_triton_does_at_launch():
    """R = 1 becomes a constant; ints divisible by 16 and 16-byte-aligned pointers get divisibility
    16 (Triton's JIT rule, written out here), the others nothing."""
    for batch, channels in ((1, 48), (3, 20)):
        launch = wkv_triton.recorded_launches(batch, 150, channels, causal=False)[0]
        signature, constexprs, attrs = wkv_triton.specialization(launch)
        names = launch.kernel.arg_names
        divisible = {names[i] for (i,), spec in attrs.items() if spec == [["tt.divisibility", 16]]}
        for name, arg in zip(names, launch.args):
            if isinstance(arg, torch.Tensor):
                assert signature[name].startswith("*") and (name in divisible) == (arg.data_ptr() % 16 == 0)
            elif arg == 1:
                assert signature[name] == "constexpr" and constexprs[name] == 1
            else:
                assert signature[name] == "i32" and (name in divisible) == (arg % 16 == 0)
        assert ("R" in constexprs) == (batch == 1)


def test_recorded_launches_are_the_launchers_grids():
    """Forward: summaries, a scan up and down per side (bi_wkv), finish; the backward the same. At
    T = 150 with chunks of 64: 3 chunks (the last of 22 tokens), one group, so no scan up. A sweep
    program takes 2 chunks of 16 channels (2 x 2 programs per row for 20 channels) and loops over its
    first chunk's sub-blocks of 8 tokens: 8, then 3; a scan program takes 32 channels."""
    assert (wkv_triton.BLOCK_T, wkv_triton.SUB_T, wkv_triton.BLOCK_C, wkv_triton.CHUNKS) == (64, 8, 16, 2)
    launches = wkv_triton.recorded_launches(2, 150, 20, causal=False)
    assert [launch.name for launch in launches] == (
        ["forward summaries"] + ["forward scan down"] * 2 + ["forward finish"]
        + ["backward summaries"] + ["backward scan down"] * 2 + ["backward finish"])
    assert launches[0].grid == (2, 2, 2) and launches[0].loop_trips == pytest.approx((8 + 3) / 2)
    assert launches[1].grid == (1, 1, 2) and launches[1].loop_trips == 3
    assert all(launch.flags["num_warps"] == 1 for launch in launches)


def _report_in_a_child(args):
    """The report's JSON from a process without Triton's interpreter (it compiles for a GPU)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    code = ("import json, sys; from benchmark.measure import gpu_static as g; "
            f"r = g.report(**{args!r}); "
            "print(json.dumps([dict(name=g.variant_name(x), sm=x['sm'], shape=x['shape'], ratio=x['ratio'], "
            "spill=x['spill_bytes'], registers=x['registers'], per_element=x['per_element'].instructions, "
            "launches=[(l['name'], l['sass'].registers, [b.instructions for b in l['sass'].loops]) "
            "for l in x['launches']]) for x in r]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_estimate_counts_every_launch_with_its_trips():
    """bi_wkv at (1, 128^2, 48) on sm_90: the warp-instructions per element are the launches' (outside
    loops + loop bodies x trips) x warps x programs, summed, and every launch of the op is there."""
    (result,) = _report_in_a_child(dict(ops=("bi",), dtypes=("fp32",), shapes=((1, 128 ** 2, 48),), capabilities=(90,)))
    names = [name for name, _, _ in result["launches"]]
    assert names.count("forward finish") == names.count("backward finish") == 1
    assert result["registers"] == max(regs for _, regs, _ in result["launches"]) and result["per_element"] > 0
    assert result["ratio"] == pytest.approx(result["per_element"] * 128 ** 2 * 48 / (4 * 132 * 1.755e9)
                                            / (8 * 128 ** 2 * 48 * 4 / 3.0e12), rel=1e-9)


GOAL_SHAPES = ((4, 128 ** 2, 384), (1, 1024 ** 2, 48))


def _over_the_goal(results):
    return [f"{r['name']} sm_{r['sm']} {r['shape']}: {r['ratio']:.2f}x, {r['spill']} bytes spilled"
            for r in results if r["spill"] or r["ratio"] > gpu_static.GOAL]


def test_float32_variants_meet_the_goal_without_spills():
    """bi_wkv and uni_wkv with float32 inputs on sm_90 at the goal's shapes: issue-bound at most 3x the
    floor (measured 2.7x and 1.4x; the kernels of b46f48b: 130x and 64x), nothing spilled."""
    results = _report_in_a_child(dict(dtypes=("fp32",), shapes=GOAL_SHAPES, capabilities=(90,)))
    assert len(results) == 4 and not _over_the_goal(results), "\n".join(_over_the_goal(results))


@pytest.mark.xfail(strict=True, reason="issue 42, not met yet for bfloat16 inputs: against bfloat16's own floor "
                   "(2-byte tensors) bi_wkv is issue-bound at 5.8-5.9x and uni_wkv at 3.0-3.1x, since the kernels do "
                   "float32's work on half the bytes (float32: 2.7x and 1.4x). Strict: this fails CI once every "
                   "variant meets the goal, so the mark is removed then")
def test_every_variant_meets_the_goal_without_spills():
    """The goal's own scope: sm_90, (4, 128^2, 384) and (1, 1024^2, 48), float32 and bfloat16 inputs."""
    results = _report_in_a_child(dict(dtypes=("fp32", "bf16"), shapes=GOAL_SHAPES, capabilities=(90,)))
    failures = _over_the_goal(results)
    assert not failures, "\n".join(failures)
