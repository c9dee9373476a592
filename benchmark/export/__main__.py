"""``python -m benchmark.export mlflow <store> [<store> ...] [--tracking-uri URI] [--tables DIR]``:
log every finished (and failed) run of the grid stores to MLflow, once each (``tracking``)."""
from __future__ import annotations

import argparse
import sys

from benchmark.export import tracking
from benchmark.results import store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark.export", description=__doc__.split("\n")[0])
    parser.add_argument("target", choices=["mlflow"], help="where to export (mlflow)")
    parser.add_argument("stores", nargs="+", help="grid store folders, e.g. runs/token_shift")
    parser.add_argument("--tracking-uri", default=tracking.DEFAULT_URI,
                        help=f"an MLflow tracking URI (default: {tracking.DEFAULT_URI}, a local store in the working "
                             "folder, its artifacts in ./mlartifacts)")
    parser.add_argument("--tables", default="tables", help="where the grids' tables and figures are (default: tables)")
    args = parser.parse_args(argv)
    try:
        import mlflow  # noqa: F401
    except ImportError:
        print("error: MLflow is not installed; pip install -e \".[track]\"", file=sys.stderr)
        return 2
    code = 0
    for grid_dir in args.stores:
        try:
            logged, kept = tracking.export_grid(grid_dir, args.tracking_uri, args.tables)
            print(f"{grid_dir}: {logged} runs logged, {kept} already in {args.tracking_uri}")
        except (OSError, FileNotFoundError, store.StoreError) as err:
            print(f"error: {err}", file=sys.stderr)
            code = 2
    return code


if __name__ == "__main__":
    sys.exit(main())
