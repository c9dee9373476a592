"""Testing: per-image PSNR / SSIM / RMSE of a model's outputs (and of the inputs, for reference) in
physical units with the paper's protocol (``benchmark.results.metrics.evaluate``), averaged per task."""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from benchmark.results import metrics
from benchmark.harness.inference import TaskData, restore_physical

METRICS = ("psnr", "ssim", "rmse")


@torch.no_grad()
def test(model: torch.nn.Module, config: dict, device: torch.device, progress: bool = True) -> tuple[list[dict], dict]:
    """(per-image rows, per-task means) over the test split (the first ``test.images`` per task)."""
    model.eval()
    data = TaskData(config, "test", None)
    limit = config["test"]["images"]
    rows = []
    start = 0
    total = sum(min(limit or size, size) for size in data.sizes)
    with tqdm(total=total, desc="test", unit="image", leave=False, disable=not progress) as bar:
        for task_id, (task, part, size) in enumerate(zip(data.tasks, data.parts, data.sizes)):
            for index in range(min(limit or size, size)):
                _, sample = data.item(start + index)
                out, gt, lq = restore_physical(model, sample, task_id, part.modality, device)
                if not np.isfinite(out).all():
                    raise FloatingPointError(f"the model's output for {task} test image {index} has NaN or infinite values")
                ours, inputs = metrics.evaluate(out, gt, part.modality), metrics.evaluate(lq, gt, part.modality)
                rows.append({"task": task, "index": index, **ours, **{f"input_{k}": v for k, v in inputs.items()}})
                bar.update()
            start += size
    means = {}
    for task in data.tasks:
        mine = [r for r in rows if r["task"] == task]
        means[task] = {"images": len(mine), **{f"{k}": float(np.mean([r[k] for r in mine])) for k in METRICS},
                       **{f"input_{k}": float(np.mean([r[f"input_{k}"] for r in mine])) for k in METRICS}}
    return rows, means
