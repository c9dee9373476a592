"""``python -m benchmark.margins --grid token_shift``: does every run of a grid learn whatever the
reduction order?

A smoke run's verdict (learned: its best validation PSNR at least ``train.min_gain`` over the
inputs) must not depend on the machine. What changes between machines is the order of float
reductions: the number of threads, and whether convolutions go through oneDNN. This command trains
every run of the grid (or of ``--rows``) once in each setting, each in a store of its own
(``<out>/<setting>/<grid>``: the runs have the same ids), and prints each run's validation gain
over its inputs per setting (a multi-task run: its smallest task's), the smallest, and whether it
clears ``--margin`` (default: each run's ``train.min_gain``):

    threads-1    one thread per run, as many runs at once as there are cores (the main job's way)
    threads-2    two threads per run
    onednn-off   two threads, ``torch.backends.mkldnn.enabled = False``

Only training and validation run (no test): the verdict is the training's. A tuned grid's runs are
the chosen candidates of an existing store (``--store``). The table goes to ``<out>/<grid>_margins.md``.
Exit status: 0 when every run clears the margin in every setting, 1 otherwise, 2 for a bad option.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from benchmark.base import markdown, processes
from benchmark.base.arguments import add_import_option
from benchmark.harness import tuning
from benchmark.harness.config import SCALES, ConfigError
from benchmark.harness.grid import RunSpec, load_grid
from benchmark.results import store

SETTINGS = {"threads-1": (1, True), "threads-2": (2, True), "onednn-off": (2, False)}   # threads, oneDNN


def _train(spec: RunSpec, grid_dir: str, threads: int, onednn: bool) -> None:
    import torch

    from benchmark.harness.pipeline import run_spec
    torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = onednn
    run_spec(spec, grid_dir, progress=False, stages="train")


def train_in_setting(specs: list[RunSpec], grid_dir: Path, threads: int, onednn: bool,
                     say=lambda line: None) -> None:
    """Train the specs in worker processes of ``threads`` threads each, as many at once as the
    cores allow."""
    at_once = max(1, (os.cpu_count() or 1) // threads)
    waiting, active = list(specs), []
    while waiting or active:
        while waiting and len(active) < at_once:
            spec = waiting.pop(0)
            active.append((spec, processes.start(_train, spec, str(grid_dir), threads, onednn)))
        time.sleep(0.2)
        for entry in [e for e in active if not e[1].is_alive()]:
            entry[1].join()
            active.remove(entry)
            say(f"  {entry[0].label} (seed {entry[0].config['seed']}): {store.run_state(grid_dir / entry[0].folder_name)['state']}")


def gain(status: dict) -> tuple[float | None, str]:
    """A trained run's validation gain over its inputs (dB) and, for a multi-task run, the task it
    is smallest on; (None, reason) for a run that did not finish."""
    if status["state"] not in store.FINISHED:
        return None, status.get("reason", status["state"])
    verdict = status.get("health") or {}
    tasks = verdict.get("tasks") or {}
    if tasks:
        task, worst = min(tasks.items(), key=lambda item: item[1]["val_gain_db"])
        return worst["val_gain_db"], task
    return verdict.get("val_gain_db"), ""


def margins_table(specs: list[RunSpec], out: Path, grid_name: str, margin: float | None) -> tuple[str, bool]:
    """The table (markdown) and whether every run cleared its margin in every setting."""
    rows, cleared = [], True
    for spec in specs:
        bar = margin if margin is not None else spec.config["train"]["min_gain"]
        cells, gains = [], []
        for setting in SETTINGS:
            value, note = gain(store.run_state(out / setting / grid_name / spec.folder_name))
            cells.append("failed" if value is None else f"{value:+.2f}" + (f" ({note})" if note else ""))
            gains.append(value)
        smallest = None if None in gains else min(gains)
        ok = smallest is not None and smallest >= bar
        cleared &= ok
        rows.append([spec.label, spec.config["seed"], *cells, "-" if smallest is None else f"{smallest:+.2f}",
                     f"yes (>= {bar:+.1f})" if ok else f"**no** (< {bar:+.1f})"])
    table = markdown.table(["row", "seed", *(f"{s} (dB)" for s in SETTINGS), "smallest", "clears the margin"], rows)
    return table, cleared


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.margins", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n")[1:]))
    parser.add_argument("--grid", required=True, help="a built-in grid by name or a grid file")
    add_import_option(parser)
    parser.add_argument("--scale", choices=list(SCALES), default="smoke")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a configuration value for every run (repeatable)")
    parser.add_argument("--rows", nargs="+", metavar="LABEL", help="only these rows (default: every row)")
    parser.add_argument("--store", help="a tuned grid's store (its chosen candidates are the runs checked)")
    parser.add_argument("--margin", type=float, help="the gain (dB) every run must clear (default: train.min_gain)")
    parser.add_argument("--out", default="runs/margins", help="where the three stores go (default: runs/margins)")
    args = parser.parse_args(argv)
    try:
        grid = load_grid(args.grid, args.scale, args.overrides, imports=args.imports)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    specs = list(grid.specs)
    if grid.tune:
        choice = store.read_tuning(args.store) if args.store else None
        if choice is None:
            print(f"error: {grid.name} is tuned: give --store with its finished tuning (tuning.json), whose chosen "
                  "candidates are the runs checked", file=sys.stderr)
            return 2
        specs = tuning.chosen_specs(tuning.Halving(grid, args.store).extended_grid(), choice)
    if args.rows:
        unknown = sorted(set(args.rows) - {s.label for s in specs})
        if unknown:
            print(f"error: unknown row(s) {', '.join(unknown)}; expected some of "
                  f"{', '.join(dict.fromkeys(s.label for s in specs))}", file=sys.stderr)
            return 2
        specs = [s for s in specs if s.label in args.rows]
    out = Path(args.out)
    for setting, (threads, onednn) in SETTINGS.items():
        grid_dir = out / setting / grid.name
        store.write_grid(grid_dir, grid.metadata())
        print(f"{setting}: {len(specs)} runs -> {grid_dir}", file=sys.stderr, flush=True)
        started = time.time()
        train_in_setting(specs, grid_dir, threads, onednn, say=lambda line: print(line, file=sys.stderr, flush=True))
        print(f"{setting}: {time.time() - started:.0f} s", file=sys.stderr, flush=True)
    table, cleared = margins_table(specs, out, grid.name, args.margin)
    text = (f"# Learning margins of {grid.name} ({grid.scale}) under three reduction orders\n\n"
            f"Validation gain over the inputs of each run (`python -m benchmark.margins --grid {args.grid}`; "
            f"{os.cpu_count()} cores).\n\n{table}\n")
    path = out / f"{grid.name}_margins.md"
    store.write_text(path, text)
    print(text)
    print(path, file=sys.stderr)
    return 0 if cleared else 1
