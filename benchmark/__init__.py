"""The medir-bench harness. Run ``python -m benchmark.ops`` for the WKV scaling benchmark."""
