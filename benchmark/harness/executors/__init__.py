"""Where specs run: ``local`` (``benchmark.harness.executors.local``: in this process, or ``jobs`` worker
processes) and ``slurm`` (``benchmark.harness.executors.slurm``: job arrays through submitit). Every executor
calls the same ``benchmark.harness.pipeline.run_spec``. Nothing is imported here, so that reading SLURM job
states (``benchmark.harness.status``) does not import torch and the models."""
