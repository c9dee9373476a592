"""The medir-bench harness. Run ``python -m benchmark.measure.ops`` for the WKV scaling benchmark."""
