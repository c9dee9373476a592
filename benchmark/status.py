"""``python -m benchmark.status``: a grid's runs and their states (``benchmark.harness.status``)."""
import sys

from benchmark.harness.status import main

if __name__ == "__main__":
    sys.exit(main())
