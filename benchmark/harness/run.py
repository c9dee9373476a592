"""``python -m benchmark.run --grid <name or file>``: run a grid, then render its table.

    python -m benchmark.run --grid token_shift                 # smoke scale, phantoms
    python -m benchmark.run --grid token_shift --dry-run       # list the runs
    python -m benchmark.run --grid mri_sr --scale paper --set data.sources.mri_sr=data/mri
    python -m benchmark.run --grid components --set train.iters=1000 --jobs 2
    python -m benchmark.run --grid mri_sr --scale paper --executor slurm --cluster example-gpu
    python -m benchmark.run --grid mri_sr --scale paper --plan --cluster example-gpu   # cost first
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
from pathlib import Path

from benchmark.results import store
from benchmark.base.arguments import add_import_option
from benchmark.harness import campaign
from benchmark.harness.config import SCALES, ConfigError
from benchmark.harness.grid import describe, load_grid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.run", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n".join(__doc__.split("\n")[1:]))
    parser.add_argument("--grid", required=True, help="a built-in grid by name (token_shift, mri_sr, ...: benchmark/grids/) or a grid file")
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
    parser.add_argument("--cluster", default="dev", help="slurm: a cluster profile: a path, slurm/<name>.yaml "
                                                         "here, or a shipped one (dev, example-gpu; default: dev)")
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
    if args.executor == "slurm":
        from benchmark.harness.executors import slurm
        try:
            executor = campaign.SlurmExecutor(grid_dir, slurm.load_profile(args.cluster), wait=not args.no_wait)
        except slurm.SlurmError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    else:
        executor = campaign.LocalExecutor(grid_dir, args.jobs, progress=not args.quiet)
    try:
        outcome = campaign.run_grid(grid, grid_dir, executor, keep_stale=args.keep_stale)
    except campaign.CampaignError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.code
    if outcome.submitted:
        return 0
    print(outcome.summary(grid.name), file=sys.stderr, flush=True)
    unlearned = campaign.not_learned(grid, grid_dir)
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
              + (f"  {campaign.health_line(unlearned, len(outcome.tested), curves)}\n" if unlearned else ""))
        for path in paths:
            print(path)
    elif unlearned:
        print(campaign.health_line(unlearned, len(outcome.tested), None), file=sys.stderr)
    return outcome.exit_code


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

