"""``python -m benchmark.render <store> [--out tables]``: re-render a grid's table and figure, or an
efficiency record's (a folder with ``efficiency.json``, written by ``python -m benchmark.profile``)."""
from __future__ import annotations

import argparse
import sys

from pathlib import Path

from benchmark.results import store
from benchmark.render import render_grid
from benchmark.render.efficiency import render_efficiency


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.render", description=__doc__)
    parser.add_argument("stores", nargs="+", help="store folders, e.g. runs/token_shift runs/efficiency")
    parser.add_argument("--out", default="tables", help="folder for <grid>.md and <grid>_erf.png (default: tables)")
    args = parser.parse_args(argv)
    code = 0
    grids = [g for g in args.stores if not (Path(g) / "efficiency.json").is_file()]
    for grid_dir in args.stores:                   # one unreadable store does not stop the others
        try:
            if grid_dir in grids:                  # the ledger, leaderboard and page once, with the last grid
                paths = render_grid(grid_dir, args.out, summaries=grid_dir == grids[-1])
            else:
                paths = render_efficiency(grid_dir, args.out)
            for path in paths:
                print(path)
        except (OSError, store.StoreError) as err:
            print(f"error: {err}", file=sys.stderr)
            code = 2
    return code


if __name__ == "__main__":
    sys.exit(main())
