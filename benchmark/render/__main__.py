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
    for grid_dir in args.stores:                   # one unreadable store does not stop the others
        try:
            render = render_efficiency if (Path(grid_dir) / "efficiency.json").is_file() else render_grid
            for path in render(grid_dir, args.out):
                print(path)
        except (OSError, store.StoreError) as err:
            print(f"error: {err}", file=sys.stderr)
            code = 2
    return code


if __name__ == "__main__":
    sys.exit(main())
