"""Local execution: the specs one after another in this process (default), or ``jobs`` at a time,
each in its own process with its share of the CPU threads (``executors.processes``: a run that
crashes its process, or is killed by the out-of-memory killer, takes no other run with it; a
worker whose parent dies ends too)."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from benchmark.results import health, store
from benchmark.results.store import OUTCOMES, RunState
from benchmark.base import processes
from benchmark.harness.grid import RunSpec
from benchmark.harness.pipeline import run_spec


def _process_body(spec: RunSpec, grid_dir: str, threads: int, stages: str = "all", until: int | None = None) -> None:
    torch.set_num_threads(threads)
    run_spec(spec, grid_dir, progress=False, stages=stages, until=until)


def report(spec: RunSpec, status: dict) -> None:
    """One line on stderr when a run ends."""
    detail = f"{status['seconds']:.0f} s" if "seconds" in status else ""
    verdict = health.describe(status) if status["state"] in (RunState.DONE, RunState.TRAINED) else ""
    if status["state"] == RunState.PARTIAL:
        verdict = f"trained to iteration {status['iteration']}, best validation PSNR {status['val_psnr']:.2f} dB"
    if verdict:
        detail += f", {verdict}"
    if status["state"] == RunState.FAILED:
        detail = f"{status['reason']} (see {status.get('log', '-')})"
    elif status["state"] == RunState.BUSY:
        detail = f"skipped: {status['reason']}"
    name = f"{spec.label} [{spec.candidate}]" if spec.candidate else spec.label
    print(f"[{spec.index + 1}] {name}: {status['state']} {detail}".rstrip(), file=sys.stderr, flush=True)


def _finish(spec: RunSpec, grid_dir: Path, exitcode: int | None) -> dict:
    folder = grid_dir / spec.folder_name
    status = store.run_state(folder)
    if status["state"] not in OUTCOMES and store.is_live(folder):   # another process runs it
        return {"state": RunState.BUSY, "id": spec.id, "label": spec.label,
                "reason": f"{folder}: pid {status.get('pid', '?')} on {status.get('host', '?')} is running this run"}
    if status["state"] not in OUTCOMES:   # the process died without recording an outcome
        status = {**status, "state": RunState.FAILED, "log": str(folder),
                  "reason": f"the worker process exited with code {exitcode}"
                            + (" (killed: out of memory?)" if processes.out_of_memory(exitcode) else
                               " without recording an outcome (see its messages above)" if exitcode == 0 else "")}
        try:
            store.write_json(folder / "status.json", status)
        except OSError as err:                      # e.g. the disk is full: still report, go on
            status["reason"] += f"; status.json could not be written: {err}"
    return status


def auto_jobs(runs: int) -> int:
    """Runs at once by default: one per CPU core on a CPU-only machine (a tiny model's step is mostly
    per-op overhead, so two single-threaded runs train almost twice as fast as one run on two
    threads), one on a GPU machine (the runs share the one device)."""
    if torch.cuda.is_available():
        return 1
    return max(1, min(os.cpu_count() or 1, runs))


def run_local(specs: list[RunSpec], grid_dir, jobs: int = 1, progress: bool = True,
              stages: str = "all", until: dict[str, int] | None = None) -> dict[str, dict]:
    """Run every spec (its ``stages`` and, by spec id, the iteration to train ``until``: see
    ``pipeline.run_spec``); returns {spec id: final status}. A failed run is recorded and the rest go on."""
    grid_dir = Path(grid_dir)
    until = until or {}
    results = {}
    if jobs <= 1:
        for spec in specs:
            results[spec.id] = run_spec(spec, grid_dir, progress, stages, until.get(spec.id))
            report(spec, results[spec.id])
        return results
    threads = max(1, (os.cpu_count() or 1) // jobs)
    waiting, active = list(specs), {}
    bar = tqdm(total=len(specs), desc=f"runs ({jobs} at once)", unit="run", disable=not progress)
    while waiting or active:
        while waiting and len(active) < jobs:
            spec = waiting.pop(0)
            process = processes.start(_process_body, spec, str(grid_dir), threads, stages, until.get(spec.id))
            active[spec.id] = (spec, process)
        time.sleep(0.2)
        for key, (spec, process) in list(active.items()):
            if not process.is_alive():
                process.join()
                results[key] = _finish(spec, grid_dir, process.exitcode)
                bar.clear()
                report(spec, results[key])
                bar.update()
                del active[key]
    bar.close()
    return results
