"""A static performance report of the Triton WKV kernels, with no GPU: every launch of one forward +
backward (``triton_launch.recorded_launches``) compiled for sm_80 / sm_90 with the launcher's exact
specialisation, its SASS read with the ``cuobjdump`` and ``nvdisasm`` that ship inside Triton's NVIDIA
backend, and the time the GPU would need just to *issue* those instructions, against the memory floor.

Per launch: registers, spill bytes (the local memory and stack frame per thread that ptxas reserves
for spills: ``ptxas -v`` reports the same bytes), blocks per SM, and from the SASS the
instructions outside loops and inside each loop (a loop is a backward branch; its mean trip count per
program comes from the launcher, ``Launch.loop_trips``), with barriers (``BAR``), shuffles (``SHFL``)
and special-function operations (``MUFU``: exp, log, reciprocal) counted apart.

Issue-bound time: warp-instructions (per warp: outside loops + sum of loop bodies x trips; times the
warps of a program and the programs of the grid), summed over the launches, over what the GPU can
issue: one instruction per scheduler per clock, 4 schedulers per SM. It is a lower bound of the time
(dependencies, memory latency and a partial last wave come on top) and the right measure for a kernel
whose arithmetic, not its bytes, binds. The floor is the bytes any implementation must move (8 tensors
of B x T x C in the inputs' dtype, ``traffic.floor_bytes``) over the memory bandwidth.

    python -m benchmark.measure.gpu_static                       # sm_80 and sm_90, the three shapes
    python -m benchmark.measure.gpu_static --sm 90 --out tables/gpu_static.md --check
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import astuple, dataclass

import torch

from models.ops.wkv import limits

from ..base import markdown
from . import traffic

# The GPUs of each compute capability: SMs, boost clock, memory bandwidth a copy reaches (about 90%
# of the data sheet's: H100 SXM 3.35 TB/s, A100 SXM 80 GB 2.04 TB/s), registers and shared memory per SM.
GPUS = {
    90: dict(name="H100 SXM", sms=132, clock_hz=1.755e9, bandwidth=3.0e12, registers=65536, shared=233472),
    80: dict(name="A100 SXM 80 GB", sms=108, clock_hz=1.41e9, bandwidth=1.8e12, registers=65536, shared=167936),
}
SCHEDULERS_PER_SM = 4
MAX_BLOCKS_PER_SM, MAX_WARPS_PER_SM = 32, 64
SHAPES = ((1, 128 ** 2, 48), (4, 128 ** 2, 384), (1, 1024 ** 2, 48))
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp64": torch.float64}
GOAL = 3.0                                                  # issue-bound / floor (issue 42)


def _tool(name: str) -> str:
    import triton
    path = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", name)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{name} is not inside Triton's NVIDIA backend ({path}); this Triton cannot "
                                "read the SASS of its kernels")
    return path


@dataclass
class Sass:
    """What the SASS of one compiled kernel holds."""
    registers: int
    spill_bytes: int                     # local memory per thread (spills and stack)
    shared_bytes: int
    outside: "Counts"                    # instructions outside every loop
    loops: list                          # one Counts per loop body


@dataclass
class Counts:
    instructions: int = 0
    barriers: int = 0
    shuffles: int = 0
    special: int = 0

    def add(self, opcode: str) -> None:
        self.instructions += 1
        self.barriers += opcode.startswith("BAR")
        self.shuffles += opcode.startswith("SHFL")
        self.special += opcode.startswith("MUFU")

    def scaled(self, factor: float) -> "Counts":
        return Counts(*(n * factor for n in astuple(self)))

    def __add__(self, other: "Counts") -> "Counts":
        return Counts(*(a + b for a, b in zip(astuple(self), astuple(other))))


_INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)(.*);")
_LABEL = re.compile(r"^\s*(\.L_x_\d+):")
_TARGET = re.compile(r"`\((\.L_x_\d+)\)")


def parse_sass(text: str) -> tuple[Counts, list[Counts]]:
    """(instructions outside loops, one Counts per loop) of ``nvdisasm -c`` output. A loop is a branch
    to an earlier address; its body runs from that address to the branch. Loops must not nest (the
    kernels have none; a nested one raises, since one trip count per loop could not describe it).
    The trap after the last EXIT (a branch to itself) and the NOP padding are not code that runs."""
    instructions, labels, pending = [], {}, []
    for line in text.splitlines():
        label = _LABEL.match(line)
        if label:
            pending.append(label.group(1))
            continue
        match = _INSTRUCTION.search(line)
        if match:
            address = int(match.group(1), 16)
            labels.update({name: address for name in pending})
            pending = []
            instructions.append((address, match.group(2), match.group(3)))
    loops = []
    for address, opcode, operands in instructions:
        target = _TARGET.search(operands)
        if opcode.startswith("BRA") and target and labels[target.group(1)] < address:
            loops.append((labels[target.group(1)], address))
    for (a0, a1), (b0, b1) in zip(loops, loops[1:]):
        if b0 <= a1:
            raise ValueError(f"nested or overlapping loops at {a0:#x}-{a1:#x} and {b0:#x}-{b1:#x}")
    outside, bodies = Counts(), [Counts() for _ in loops]
    for address, opcode, operands in instructions:
        target = _TARGET.search(operands)
        if opcode == "NOP" or (opcode.startswith("BRA") and target and labels[target.group(1)] == address):
            continue
        inside = [i for i, (start, end) in enumerate(loops) if start <= address <= end]
        (bodies[inside[0]] if inside else outside).add(opcode)
    return outside, bodies


def read_cubin(cubin: bytes) -> Sass:
    with tempfile.NamedTemporaryFile(suffix=".cubin") as handle:
        handle.write(cubin)
        handle.flush()
        usage = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", handle.name], capture_output=True,
                               text=True, check=True).stdout
        sass = subprocess.run([_tool("nvdisasm"), "-c", handle.name], capture_output=True, text=True,
                              check=True).stdout
    fields = {key: int(value) for key, value in re.findall(r"\b(REG|STACK|SHARED|LOCAL):(\d+)", usage)}
    outside, loops = parse_sass(sass)
    return Sass(fields["REG"], fields.get("LOCAL", 0) + fields.get("STACK", 0), fields.get("SHARED", 0), outside, loops)


def blocks_per_sm(sass: Sass, warps: int, capability: int) -> int:
    """Resident blocks per SM: the hardware's limits, registers (allocated per warp in units of 256)
    and shared memory."""
    gpu = GPUS[capability]
    per_warp = -(-sass.registers * 32 // 256) * 256
    by_registers = gpu["registers"] // (per_warp * warps)
    by_shared = gpu["shared"] // sass.shared_bytes if sass.shared_bytes else MAX_BLOCKS_PER_SM
    return min(MAX_BLOCKS_PER_SM, MAX_WARPS_PER_SM // warps, by_registers, by_shared)


_compiled: dict = {}


def analyse_launch(launch, capability: int) -> dict:
    """One launch's static facts and its warp-instructions in total (all programs and warps)."""
    from models.ops.wkv import triton_launch
    key = (triton_launch.variant_key(launch), capability)
    if key not in _compiled:
        compiled = triton_launch.compile_launch(launch, capability)
        _compiled[key] = (read_cubin(compiled.asm["cubin"]), compiled.metadata.num_warps)
    sass, warps = _compiled[key]
    trips = launch.loop_trips
    per_warp = sass.outside + sum((body.scaled(trips) for body in sass.loops), Counts())
    return dict(name=launch.name, sass=sass, warps=warps, trips=trips, per_warp=per_warp,
                blocks_per_sm=blocks_per_sm(sass, warps, capability),
                warp_instructions=per_warp.scaled(warps * launch.programs))


def analyse(op: str, dtype: str, shape: tuple, capability: int) -> dict:
    """The static estimate of one forward + backward of ``op`` (``bi`` / ``uni``) at ``shape`` inputs of
    ``dtype``: every launch analysed, the issue-bound time, the floor and their ratio."""
    from models.ops.wkv import triton_launch
    launches = triton_launch.recorded_launches(*shape, op == "uni", DTYPES[dtype])
    rows = [analyse_launch(launch, capability) for launch in launches]
    gpu = GPUS[capability]
    total = sum((row["warp_instructions"] for row in rows), Counts())
    issue_s = total.instructions / (SCHEDULERS_PER_SM * gpu["sms"] * gpu["clock_hz"])
    floor_s = traffic.floor_bytes(*shape, DTYPES[dtype].itemsize) / gpu["bandwidth"]
    elements = shape[0] * shape[1] * shape[2]
    return dict(op=op, dtype=dtype, shape=shape, sm=capability, launches=rows, issue_ms=issue_s * 1e3,
                floor_ms=floor_s * 1e3, ratio=issue_s / floor_s, per_element=total.scaled(1 / elements),
                registers=max(r["sass"].registers for r in rows), spill_bytes=max(r["sass"].spill_bytes for r in rows))


def variant_name(result: dict) -> str:
    """``bi_wkv fp32 in, fp32 sums``: the sums' dtype as the dispatch chooses it for the Triton path."""
    inputs = torch.empty(0, dtype=DTYPES[result["dtype"]])
    sums = limits.accumulation_dtype("triton", result["op"] == "uni", None, inputs, inputs)
    return f"{result['op']}_wkv {result['dtype']} in, {next(n for n, d in DTYPES.items() if d == sums)} sums"


def summary_table(results: list[dict]) -> str:
    cells = [[variant_name(r), str(r["sm"]), ",".join(str(n) for n in r["shape"]), str(r["registers"]),
              str(r["spill_bytes"]), f"{r['per_element'].instructions:.1f}", f"{r['issue_ms']:.3f}",
              f"{r['floor_ms']:.3f}", f"{r['ratio']:.1f}"] for r in results]
    header = ["variant", "sm", "B,T,C", "registers", "spill bytes", "warp-instructions per element",
              "issue-bound ms", "floor ms", "issue-bound / floor"]
    return markdown.table(header, cells, "llrrrrrrr")


def launch_table(results: list[dict]) -> str:
    """Per launch of each variant and capability (at the first shape analysed): the static facts,
    per program trip (loop) and per element."""
    seen, cells = set(), []
    for r in results:
        if (variant_name(r), r["sm"]) in seen:
            continue
        seen.add((variant_name(r), r["sm"]))
        elements = r["shape"][0] * r["shape"][1] * r["shape"][2]
        for row in r["launches"]:
            sass = row["sass"]
            loops = " + ".join(str(body.instructions) for body in sass.loops) or "-"
            per = row["warp_instructions"].scaled(1 / elements)
            cells.append([variant_name(r), str(r["sm"]), row["name"], str(sass.registers), str(sass.spill_bytes),
                          str(row["blocks_per_sm"]), str(row["warps"]), str(sass.outside.instructions),
                          f"{loops} (x {row['trips']:.0f})", f"{per.instructions:.2f}", f"{per.barriers:.2f}",
                          f"{per.shuffles:.2f}", f"{per.special:.2f}"])
    header = ["variant", "sm", "launch", "registers", "spill bytes", "blocks / SM", "warps", "SASS outside loops",
              "SASS per loop trip (x trips)", "warp-instr. / element", "barriers / element", "shuffles / element",
              "MUFU / element"]
    return markdown.table(header, cells, "lllrrrrrlrrrr")


def report(ops=("bi", "uni"), dtypes=("fp32", "bf16", "fp64"), shapes=SHAPES, capabilities=(80, 90),
           progress=None) -> list[dict]:
    results = []
    for capability in capabilities:
        for op in ops:
            for dtype in dtypes:
                for shape in shapes:
                    if progress:
                        progress(f"sm_{capability} {op}_wkv {dtype} {shape}")
                    results.append(analyse(op, dtype, shape, capability))
    return results


def over_goal(results: list[dict], goal: float = GOAL) -> list[str]:
    """Each variant that spills or is issue-bound beyond ``goal`` times its floor, as a sentence."""
    return [f"{variant_name(r)} sm_{r['sm']} {r['shape']}: " + ", ".join(
        ([f"spills {r['spill_bytes']} bytes"] if r["spill_bytes"] else [])
        + ([f"issue-bound {r['ratio']:.1f}x the floor (goal {goal:g}x)"] if r["ratio"] > goal else []))
        for r in results if r["spill_bytes"] or r["ratio"] > goal]


def render(results: list[dict]) -> str:
    gpus = "; ".join(f"sm_{cap}: {g['name']}, {g['sms']} SMs at {g['clock_hz'] / 1e9:.3g} GHz, "
                     f"{g['bandwidth'] / 1e12:.2g} TB/s" for cap, g in GPUS.items()
                     if any(r["sm"] == cap for r in results))
    return "\n".join([
        "# The Triton WKV, static performance report", "",
        "Compiled without a GPU for each capability with the launcher's specialisation "
        "(`python -m benchmark.measure.gpu_static`); one forward + backward. Issue-bound: warp-instructions "
        f"over {SCHEDULERS_PER_SM} schedulers x SMs x clock; floor: 8 tensors of B x T x C in the inputs' dtype "
        f"over the bandwidth ({gpus}). Goal: issue-bound at most {GOAL:g}x the floor, no spills.", "",
        summary_table(results), "", "Per launch (at the first shape of each variant):", "", launch_table(results), ""])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.measure.gpu_static", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sm", type=int, nargs="+", default=[80, 90], choices=sorted(GPUS), help="compute capabilities")
    parser.add_argument("--ops", nargs="+", default=["bi", "uni"], choices=["bi", "uni"])
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES), help="input dtypes")
    parser.add_argument("--shapes", nargs="+", type=traffic.parse_shape, default=list(SHAPES), help="B:T:C")
    parser.add_argument("--out", help="also write the report as markdown to this path")
    parser.add_argument("--check", action="store_true",
                        help=f"exit 1 when a variant spills or is issue-bound beyond {GOAL:g}x its floor")
    args = parser.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        parser.error("unset TRITON_INTERPRET: the report compiles the kernels for a GPU")
    results = report(args.ops, args.dtypes, args.shapes, args.sm,
                     progress=lambda what: print(f"compiling and reading {what}", file=sys.stderr))
    text = render(results)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text)
    failures = over_goal(results)
    for failure in failures:
        print(f"over the goal: {failure}", file=sys.stderr)
    return 1 if args.check and failures else 0


if __name__ == "__main__":
    sys.exit(main())
