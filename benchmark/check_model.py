"""``python -m benchmark.check_model``: check that a registered model keeps the harness contract (``benchmark.checks.check_model``)."""
import sys

from benchmark.checks.check_model import main

if __name__ == "__main__":
    sys.exit(main())
