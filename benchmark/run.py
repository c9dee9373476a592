"""``python -m benchmark.run``: run a grid (local or SLURM) and render its table (``benchmark.harness.run``)."""
import sys

from benchmark.harness.run import main

if __name__ == "__main__":
    sys.exit(main())
