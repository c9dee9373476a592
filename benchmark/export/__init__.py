"""Results where researchers look: a grid's store exported to an experiment tracker.

    python -m benchmark.export mlflow runs/token_shift                    # ./mlflow.db and ./mlartifacts
    python -m benchmark.export mlflow runs/token_shift --tracking-uri http://mlflow.example:5000

The store stays the source of truth; an export only copies it (``tracking``).
"""
