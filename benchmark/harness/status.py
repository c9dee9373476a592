"""``python -m benchmark.status <grid store>``: the state of every run of a grid.

Reads the store (pending, submitted, running, done, ``did not learn`` for a finished run whose best
validation PSNR stayed under ``train.min_gain`` dB above its inputs', ``stale`` for a finished run
made with other code than the current (``benchmark.base.provenance``: the files that changed are named),
failed with reason and log; ``stopped`` for a run whose process is gone, ``broken`` for one with an
unreadable file, named) and, for runs sent to SLURM, the job's state from ``sacct``. Rerunning the
grid's command resubmits only what is not done (and not still queued or running), and runs the
stale ones again unless ``--keep-stale``.
"""
from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from benchmark.base import markdown
from benchmark.results import health, staleness, store
from benchmark.results.store import RunState

STALE = "stale"


def rows(grid_dir) -> list[dict]:
    """One row per run in grid order; a tuned grid's candidates under their row (label [candidate]),
    each saying whether it was chosen once the choice is made (``harness.tuning``)."""
    grid_dir = Path(grid_dir)
    metadata = store.read_grid(grid_dir)
    chosen = None
    if metadata.get("tune"):
        try:
            tuning = store.read_tuning(grid_dir)
        except store.StoreError as err:
            print(f"warning: {err}", file=sys.stderr)
            tuning = None
        chosen = None if tuning is None else store.chosen_ids(tuning)
    records, problems = {}, {}
    for r in metadata["runs"]:
        try:
            records[r["id"]] = store.read_json(grid_dir / r["folder"] / "slurm.json")
        except store.StoreError as err:
            records[r["id"]], problems[r["id"]] = None, str(err)
    slurm_states = {}
    jobs = [r["job_id"] for r in records.values() if r]
    if jobs:
        from benchmark.harness.executors import slurm
        try:
            slurm_states = slurm.job_states(jobs)
        except (slurm.SlurmError, OSError) as err:
            print(f"warning: no SLURM job states ({err})", file=sys.stderr)
    out = []
    for run in metadata["runs"]:
        status = store.run_state(grid_dir / run["folder"])
        record = records[run["id"]] or {}
        problem = store.unreadable(grid_dir / run["folder"]) if status["state"] == RunState.DONE else problems.get(run["id"])
        if problem:
            status = {**status, "state": store.BROKEN, "reason": problem}
        detail = status.get("reason", "")
        if status["state"] == RunState.RUNNING and status.get("host") == socket.gethostname() \
                and not store.is_live(grid_dir / run["folder"]):
            # (a run on another host keeps "running": file locks need not be visible across hosts)
            status = {**status, "state": RunState.STOPPED}
            detail = f"pid {status.get('pid')} is gone; rerun the grid's command to resume it"
        if status["state"] == RunState.FAILED:
            detail += f" (log: {status.get('log') or record.get('stderr', '-')})"
        state = status["state"]
        if state in (RunState.DONE, RunState.TRAINED):                 # trained: a tuned grid's candidate, not tested
            detail = health.describe(status)
            if state == "done":
                state = "done" if health.learned(status) else health.DID_NOT_LEARN
            if staleness.is_stale(status, grid_dir / run["folder"]):
                detail = f"{staleness.reason(status, grid_dir / run['folder'])}; {detail}"
                state = STALE
        if state == RunState.PARTIAL:                  # a rung of successive halving
            detail = f"trained to iteration {status.get('iteration')}, best validation PSNR {status.get('val_psnr', 0):.2f} dB"
        if "candidate" in run:
            choice = "not chosen yet" if chosen is None else "chosen" if run["id"] in chosen else "not chosen"
            detail = f"{choice}; {detail}" if detail else choice
        label = f"{run['label']} [{run['candidate']}]" if "candidate" in run else run["label"]
        out.append({"index": run["index"], "label": label, "state": state,
                    "job": record.get("job_id", "-"), "slurm": slurm_states.get(record.get("job_id"), "-"),
                    "folder": run["folder"], "detail": detail})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.status", description=__doc__.split("\n")[0])
    parser.add_argument("store", help="a grid store folder, e.g. runs/token_shift")
    args = parser.parse_args(argv)
    try:
        table = rows(args.store)
    except (FileNotFoundError, store.StoreError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(markdown.table(["#", "run", "state", "SLURM job", "SLURM state", "folder", "detail"],
                         [[r["index"] + 1, *(r[k] for k in ("label", "state", "job", "slurm", "folder", "detail"))]
                          for r in table], "rllllll"))
    counts = {}
    for r in table:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    print("\n" + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    return 0

