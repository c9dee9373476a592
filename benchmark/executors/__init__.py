"""Where specs run: ``local`` (``benchmark.executors.local``: in this process, or ``jobs`` worker
processes) and ``slurm`` (``benchmark.executors.slurm``: job arrays through submitit). Every executor
calls the same ``benchmark.pipeline.run_spec``. Nothing is imported here, so that reading SLURM job
states (``benchmark.status``) does not import torch and the models."""
