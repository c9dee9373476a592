"""``medir-bench <command> ...``: one console script for the ``python -m`` entry points: each command
maps to the module that ``python -m`` runs (``COMMANDS``), so both spellings call one function.

    medir-bench run --grid token_shift      # = python -m benchmark.run --grid ...
    medir-bench status runs/token_shift
    medir-bench render runs/token_shift
    medir-bench export mlflow runs/token_shift
    medir-bench check-model my_net --import my_model.py
    medir-bench margins --grid token_shift
    medir-bench profile | data | ops | traffic | gpu-static | scan | train-step
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {"run": "benchmark.run", "status": "benchmark.status", "render": "benchmark.render.__main__",
            "export": "benchmark.export.__main__", "profile": "benchmark.profile", "data": "benchmark.data.__main__",
            "ops": "benchmark.measure.ops", "traffic": "benchmark.measure.traffic", "scan": "benchmark.measure.scan",
            "train-step": "benchmark.measure.train_step", "check-model": "benchmark.check_model",
            "gpu-check": "benchmark.gpu_check", "gpu-static": "benchmark.measure.gpu_static",
            "margins": "benchmark.margins"}


USAGE = """usage: medir-bench <command> [options]   (the same as python -m benchmark.<command> [options])

  medir-bench run --grid token_shift
  medir-bench status runs/token_shift
  medir-bench render runs/token_shift
  medir-bench export mlflow runs/token_shift
  medir-bench check-model my_net --import my_model.py
  medir-bench margins --grid token_shift
  medir-bench profile | data | ops | traffic | gpu-static | scan | train-step  (each with --help)
"""


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
