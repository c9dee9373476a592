"""``python -m benchmark.run --grid ablations/<name>.yaml``: run a grid, then render its table.

    python -m benchmark.run --grid ablations/token_shift.yaml                 # smoke scale, phantoms
    python -m benchmark.run --grid ablations/token_shift.yaml --dry-run       # list the runs
    python -m benchmark.run --grid ablations/mri_sr.yaml --scale paper --set data.sources.mri_sr=data/mri
    python -m benchmark.run --grid ablations/components.yaml --set train.iters=1000 --jobs 2
    python -m benchmark.run --grid ablations/mri_sr.yaml --scale paper --executor slurm --cluster example-gpu
    python -m benchmark.run --grid ablations/mri_sr.yaml --scale paper --plan --cluster example-gpu   # cost first
    python -m benchmark.run --grid my_grid.yaml --import my_model.py         # a model from your own file

Runs land in ``<out>/<grid name>/`` (one folder per run, see ``benchmark.results.store``); finished runs are
skipped and interrupted ones resumed when the same command is run again. A finished run made with
other code than the current (``benchmark.base.provenance``: models, ops, kernels, data, training,
scoring; not rendering) is stale and runs again, unless ``--keep-stale`` keeps it (its table then
says so). The table and the ERF
figures go to ``<tables>/<grid name>.md``, ``<tables>/<grid name>_curves.png`` (training curves)
and ``<tables>/<grid name>_erf.png``; the console ends with the table's headline (best row, the
reference, the rows whose interval excludes 0) and the runs that did not learn. Exit status: 0 when
every run is done, 1 when some failed (the others are still rendered), 2 for a bad grid or option.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from benchmark.results import health, store
from benchmark.base import provenance
from benchmark.base.arguments import add_import_option
from benchmark.harness.config import SCALES, ConfigError
from benchmark.harness import tuning
from benchmark.harness.grid import describe, load_grid
from benchmark.harness.status import environment_if_changed, environment_or_none


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.run", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n")[1:]))
    parser.add_argument("--grid", required=True, help="a grid file, e.g. ablations/token_shift.yaml")
    add_import_option(parser)
    parser.add_argument("--scale", choices=list(SCALES), default="smoke",
                        help="smoke (default: tiny presets, phantom data, a few hundred iterations) or paper")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a configuration field for every run, e.g. --set train.iters=500 (repeatable)")
    parser.add_argument("--out", default="runs", help="the store's root folder (default: runs)")
    parser.add_argument("--tables", default="tables", help="where the table and figure go (default: tables)")
    parser.add_argument("--jobs", default="auto",
                        help="runs at once, each in its own process with its share of the CPU threads; auto "
                             "(default): one per CPU core without a GPU (small models use many processes better "
                             "than many threads), 1 with a GPU")
    parser.add_argument("--executor", choices=["local", "slurm"], default="local",
                        help="local (default) or slurm: job arrays through submitit")
    parser.add_argument("--cluster", default="dev", help="slurm: a profile in slurm/ (name or path; default: dev)")
    parser.add_argument("--no-wait", action="store_true",
                        help="slurm: submit and return (monitor with python -m benchmark.status, rerun to render)")
    parser.add_argument("--dry-run", action="store_true", help="print the expanded grid and exit")
    parser.add_argument("--plan", action="store_true",
                        help="train nothing: measure each model of the grid here and write <tables>/<grid>_plan.md "
                             "(device-hours per run and for the grid, peak memory against --gpu-memory, the SLURM "
                             "array and time limit for --cluster)")
    parser.add_argument("--gpu-memory", type=float, nargs="+", default=[40.0, 80.0], metavar="GB",
                        help="--plan: GPU memory sizes to check each model against (default: 40 80)")
    parser.add_argument("--keep-stale", action="store_true",
                        help="keep finished runs made with other code than the current (default: run them again); "
                             "the table says which are kept")
    parser.add_argument("--no-render", action="store_true", help="do not render the table at the end")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.jobs != "auto" and not (args.jobs.isdigit() and int(args.jobs) >= 1):
        parser.error(f"--jobs must be a positive integer or auto; got {args.jobs!r}")
    try:
        grid = load_grid(args.grid, args.scale, args.overrides, imports=args.imports)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(describe(grid))
        return 0
    if args.plan:
        return _plan(grid, args)
    grid_dir = Path(args.out) / grid.name
    try:
        store.write_grid(grid_dir, grid.metadata())
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    states = {s.folder_name: store.run_state(grid_dir / s.folder_name) for s in grid.specs}
    stale = [s for s in grid.specs if provenance.is_stale(states[s.folder_name], environment_if_changed(
        states[s.folder_name], grid_dir / s.folder_name))]
    if stale:
        print(stale_line(stale, grid_dir, args.keep_stale), file=sys.stderr, flush=True)
        if not args.keep_stale:
            reset_stale(stale, grid_dir)
    start = time.time()
    profile, submit_errors = None, ()
    if args.executor == "slurm":
        from benchmark.harness.executors import slurm
        submit_errors = (slurm.SlurmError,)
        try:
            profile = slurm.load_profile(args.cluster)
        except slurm.SlurmError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2

    def execute(specs: list, stages: str) -> dict | None:
        """Run ``specs`` here or on SLURM; None when they were only submitted (--no-wait)."""
        if args.executor == "slurm":
            from benchmark.harness.executors import slurm
            from benchmark.harness.executors.local import report
            results = slurm.run_slurm(specs, grid_dir, profile, wait_for_results=not args.no_wait, report=report,
                                      stages=stages)
            return None if args.no_wait else results
        from benchmark.harness.executors.local import auto_jobs, run_local
        jobs = auto_jobs(len(specs)) if args.jobs == "auto" else int(args.jobs)
        return run_local(specs, grid_dir, jobs, progress=not args.quiet, stages=stages)

    results: dict = {}
    tested = list(grid.specs)
    if grid.tune:                      # first every candidate of every row and seed, trained only
        untrained = [s for s in grid.specs if store.run_state(grid_dir / s.folder_name)["state"]
                     not in ("trained", "done")]
        rows = len({s.label for s in grid.specs})
        print(f"grid {grid.name}: {rows} rows, {len(grid.specs)} runs with their tune: candidates, "
              f"{len(untrained)} to train -> {grid_dir}", file=sys.stderr, flush=True)
        try:
            trained = execute(untrained, "train") if untrained else {}
        except submit_errors as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        if trained is None:
            print(f"submitted the candidates; run the same command again to choose and test, or monitor with: "
                  f"python -m benchmark.status {grid_dir}", file=sys.stderr)
            return 0
        results.update(trained)
        choice = tuning.choose(grid, grid_dir)
        if choice is None:
            print("error: some candidates have no outcome (another process runs them?); rerun to choose",
                  file=sys.stderr)
            return 1
        print("chosen on validation: " + "; ".join(f"{label} {row['chosen'] or 'none (every candidate failed)'}"
                                                  for label, row in choice.items()), file=sys.stderr, flush=True)
        tested = tuning.chosen_specs(grid, choice)
    todo = [s for s in tested if store.run_state(grid_dir / s.folder_name)["state"] != "done"
            or store.unreadable(grid_dir / s.folder_name) is not None]      # done, but a result file is bad
    if grid.tune:
        todo = [s for s in todo if store.run_state(grid_dir / s.folder_name)["state"] != "failed"]
    print(f"grid {grid.name}: {len(tested)} runs at scale {grid.scale}, {len(tested) - len(todo)} already "
          f"done, {len(todo)} to run -> {grid_dir}", file=sys.stderr, flush=True)
    try:
        ran = execute(todo, "all")
    except submit_errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if ran is None:
        print(f"submitted; monitor with: python -m benchmark.status {grid_dir}", file=sys.stderr)
        return 0
    results.update(ran)
    todo = [s for s in grid.specs if s.id in results]
    failed = [s for s in todo if results[s.id]["state"] not in ("done", "trained", "busy")]
    busy = [s for s in todo if results[s.id]["state"] == "busy"]
    print(f"grid {grid.name}: {len(todo) - len(failed) - len(busy)} runs finished, {len(failed)} failed"
          + (f", {len(busy)} skipped (another process is running them)" if busy else "")
          + f" in {time.time() - start:.0f} s", file=sys.stderr, flush=True)
    unlearned = not_learned(grid, grid_dir)
    if not args.no_render:
        from benchmark.render import render_grid
        headline: list[str] = []
        try:
            paths = render_grid(grid_dir, args.tables, headline)
        except OSError as err:                   # e.g. the disk is full: the store is intact, rerender later
            print(f"error: the table was not rendered: {err}", file=sys.stderr)
            return 1
        curves = next((str(p) for p in paths if p.name.endswith("_curves.png")), None)
        print(f"\n{grid.name}:\n" + "".join(f"  {line}\n" for line in headline)
              + (f"  {health_line(unlearned, len(tested), curves)}\n" if unlearned else ""))
        for path in paths:
            print(path)
    elif unlearned:
        print(health_line(unlearned, len(tested), None), file=sys.stderr)
    return 1 if failed or busy else 0


def _plan(grid, args) -> int:
    """``--plan``: measure and write the grid's plan (``benchmark.harness.plan``)."""
    from benchmark.harness import plan
    from benchmark.harness.executors import slurm
    try:
        profile = slurm.load_profile(args.cluster)
    except slurm.SlurmError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    command = f"python -m benchmark.run --grid {grid.file} --scale {grid.scale} --plan --cluster {args.cluster}"
    try:
        path = plan.make_plan(grid, Path(args.out), Path(args.tables), args.gpu_memory, profile, command)
    except OSError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(path)
    return 0


def stale_line(stale: list, grid_dir: Path, keep: bool) -> str:
    """What the console says of the grid's stale runs, and why they are stale."""
    reasons = [provenance.stale_reason(store.run_state(grid_dir / s.folder_name), environment_or_none(grid_dir / s.folder_name))
               for s in stale]
    why = "; ".join(dict.fromkeys(reasons))
    action = "kept (--keep-stale); the table says so" if keep else "running them again (--keep-stale keeps them)"
    return f"{len(stale)} finished run(s) are stale: {why}; {action}"


def reset_stale(stale: list, grid_dir: Path) -> None:
    """Clear the results of stale runs so that they run again from scratch (a run that another
    process holds is left to it)."""
    for spec in stale:
        folder = grid_dir / spec.folder_name
        try:
            with store.run_lock(folder):
                store.clear_results(folder)
        except store.RunBusy:
            pass


def not_learned(grid, grid_dir: Path) -> list[str]:
    """"k=5 (seed 0), +0.0 dB" for each finished run of the grid that did not learn."""
    out = []
    chosen = {r["id"] for r in store.chosen_runs(grid_dir, store.read_grid(grid_dir))}
    for spec in [s for s in grid.specs if s.id in chosen]:
        status = store.run_state(grid_dir / spec.folder_name)
        if status["state"] == "done" and not health.learned(status):
            out.append(f"{spec.label} (seed {spec.config['seed']}), {status['health']['val_gain_db']:+.1f} dB")
    return out


def health_line(unlearned: list[str], runs: int, curves: str | None) -> str:
    """"1 of 12 runs did not learn: k=5 (seed 0), +0.0 dB; see tables/token_shift_curves.png"."""
    where = f"; see {curves}" if curves else ""
    return f"{len(unlearned)} of {runs} runs {health.DID_NOT_LEARN}: {'; '.join(unlearned)}{where}"


if __name__ == "__main__":
    sys.exit(main())
