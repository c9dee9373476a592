"""Testing: per-image PSNR / SSIM / RMSE of a model's outputs (and of the inputs, for reference) in
physical units with the paper's protocol (``benchmark.results.metrics.evaluate``), averaged per
task; each test image's GLCM complexity (``benchmark.data.complexity``); and a few example images
kept with the run for the visual comparison (``EXAMPLES``)."""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from benchmark.data.complexity import glcm_complexity
from benchmark.harness.inference import TaskData, physical, restore_physical
from benchmark.results import metrics

METRICS = ("psnr", "ssim", "rmse")
# The examples, per task, chosen before any model runs so that every run of a grid keeps the same
# images: the test image whose degraded input has the median PSNR, and the one whose input has the
# lowest (the hardest for the input).
EXAMPLES = ("median input PSNR", "lowest input PSNR")


def example_indices(input_psnr: list[float]) -> list[int]:
    """The positions of the examples (``EXAMPLES``) among a task's test images, without repeats."""
    order = np.argsort(np.asarray(input_psnr), kind="stable")
    median = int(order[(len(order) - 1) // 2])
    return list(dict.fromkeys([median, int(order[0])]))


@torch.no_grad()
def test(model: torch.nn.Module, config: dict, device: torch.device,
         progress: bool = True) -> tuple[list[dict], dict, dict]:
    """(per-image rows, per-task means, the example images) over the test split (the first
    ``test.images`` per task); the examples as arrays for ``store.write_arrays`` (cropped to a common
    size when the tasks' slices differ: ``common_crop``)."""
    model.eval()
    data = TaskData(config, "test", None)
    limit = config["test"]["images"]
    rows, examples = [], {"task": [], "index": [], "lq": [], "hq": [], "output": []}
    start = 0
    total = sum(min(limit or size, size) for size in data.sizes)
    with tqdm(total=total, desc="test", unit="image", leave=False, disable=not progress) as bar:
        for task_id, (task, part, size) in enumerate(zip(data.tasks, data.parts, data.sizes)):
            count = min(limit or size, size)
            inputs_psnr = []
            for index in range(count):                  # the inputs first: which images are the examples
                _, sample = data.item(start + index)
                gt, lq = physical(sample["hq"][0], part.modality), physical(sample["lq"][0], part.modality)
                inputs_psnr.append(metrics.evaluate(lq, gt, part.modality)["psnr"])
            kept = example_indices(inputs_psnr)
            for index in range(count):
                _, sample = data.item(start + index)
                out, gt, lq = restore_physical(model, sample, task_id, part.modality, device)
                if not np.isfinite(out).all():
                    raise FloatingPointError(f"the model's output for {task} test image {index} has NaN or infinite values")
                ours, inputs = metrics.evaluate(out, gt, part.modality), metrics.evaluate(lq, gt, part.modality)
                rows.append({"task": task, "index": index, "subject": sample["subject"], **ours, **{f"input_{k}": v for k, v in inputs.items()},
                             "complexity": glcm_complexity(gt, part.modality)})
                if index in kept:
                    for key, value in (("task", task), ("index", index), ("lq", lq), ("hq", gt), ("output", out)):
                        examples[key].append(value)
                bar.update()
            start += size
    means = {}
    for task in data.tasks:
        mine = [r for r in rows if r["task"] == task]
        means[task] = {"images": len(mine), **{f"{k}": float(np.mean([r[k] for r in mine])) for k in METRICS},
                       **{f"input_{k}": float(np.mean([r[f"input_{k}"] for r in mine])) for k in METRICS}}
    arrays = {"task": np.array(examples["task"], dtype=str), "index": np.array(examples["index"], dtype=np.int64),
              **{k: np.array(common_crop(examples[k]), dtype=np.float32) for k in ("lq", "hq", "output")}}
    return rows, means, arrays


def common_crop(images: list[np.ndarray]) -> list[np.ndarray]:
    """The images centre-cropped to the smallest height and width among them, so that they stack as
    one (k, H, W) array: the examples of a multi-task run whose tasks have other slice sizes (all-in-one
    at paper scale: MRI 256², CT 512², PET 192²). Images of one size are returned as they are."""
    if not images:
        return images
    height, width = min(i.shape[0] for i in images), min(i.shape[1] for i in images)
    out = []
    for image in images:
        top, left = (image.shape[0] - height) // 2, (image.shape[1] - width) // 2
        out.append(image[top:top + height, left:left + width])
    return out
