"""``medir-bench <command> ...``: one console script for the ``python -m benchmark.<command>`` entry
points (which stay as they are).

    medir-bench run --grid ablations/token_shift.yaml      # = python -m benchmark.run --grid ...
    medir-bench status runs/token_shift
    medir-bench render runs/token_shift
    medir-bench check-model my_net --import my_model.py
    medir-bench profile | data | ops | scan | train-step
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {"run": "benchmark.run", "status": "benchmark.status", "render": "benchmark.render.__main__",
            "profile": "benchmark.profile", "data": "benchmark.data.__main__", "ops": "benchmark.ops",
            "scan": "benchmark.scan", "train-step": "benchmark.train_step", "check-model": "benchmark.check_model",
            "gpu-check": "benchmark.gpu_check"}


USAGE = """usage: medir-bench <command> [options]   (the same as python -m benchmark.<command> [options])

  medir-bench run --grid ablations/token_shift.yaml
  medir-bench status runs/token_shift
  medir-bench render runs/token_shift
  medir-bench check-model my_net --import my_model.py
  medir-bench profile | data | ops | scan | train-step  (each with --help)
"""


def add_import_option(parser: argparse.ArgumentParser) -> None:
    """``--import``: the same option on every command that builds models."""
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE_OR_FILE",
                        help="import a module (a name, or a path to a .py file) that registers models with "
                             "models.register_model, before anything else (repeatable)")


def import_or_exit(parser: argparse.ArgumentParser, imports: list[str]) -> None:
    """Import the ``--import`` items, or exit with the parser's error (status 2) naming the one that failed."""
    import models
    try:
        models.import_models(imports, via="--import", reload=True)
    except models.ModelImportError as err:
        parser.error(str(err))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE + f"\ncommands: {', '.join(COMMANDS)}")
        return 0
    if argv[0] not in COMMANDS:
        print(USAGE + f"\nerror: unknown command {argv[0]!r}; expected one of {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return importlib.import_module(COMMANDS[argv[0]]).main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
