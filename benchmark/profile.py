"""``python -m benchmark.profile``: params, MACs, latency and memory of backbones (``benchmark.measure.costs``);
by default every backbone of the grids of Tables 1-4 (``benchmark.harness.grid.table_backbones``)."""
import sys

from benchmark.harness.grid import table_backbones
from benchmark.measure.costs import main as _main


def main(argv=None) -> int:
    return _main(argv, default_models=table_backbones)


if __name__ == "__main__":
    sys.exit(main())
