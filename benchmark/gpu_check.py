"""``python -m benchmark.gpu_check``: the GPU check: kernel tests, WKV and training-step times on a GPU (``benchmark.measure.gpu_check``)."""
import sys

from benchmark.measure.gpu_check import main

if __name__ == "__main__":
    sys.exit(main())
