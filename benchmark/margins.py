"""``python -m benchmark.margins --grid token_shift``: every run's learning margin under three reduction orders (``benchmark.harness.margins``)."""
import sys

from benchmark.harness.margins import main

if __name__ == "__main__":
    sys.exit(main())
