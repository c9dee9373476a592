"""Restoring images: the samples of a run's task(s) (``TaskData``) and the model's output on them,
in the network's range (``restore``) and in physical units (``restore_physical``). Training,
testing and the ERF use it as peers."""
from __future__ import annotations

import functools

import numpy as np
import torch

from benchmark.base import vocabulary
from benchmark.data import dataset


class TaskData:
    """The samples of a run's task(s) for one split: one dataset per task, indexed as one."""

    def __init__(self, config: dict, split: str, crop: int | None):
        self.tasks = vocabulary.TASKS[config["task"]]
        sources = config["data"]["sources"]
        self.parts = [dataset.open_dataset(sources[task], split, crop=crop, seed=config["seed"],
                                           phantom_size=config["data"]["phantom_size"],
                                           phantom_seed=config["data"]["seed"], modality=vocabulary.MODALITY[task],
                                           phantom_ct_dose=config["data"].get("phantom_ct_dose", dataset.sources.CT_PHANTOM_DOSE))
                      for task in self.tasks]
        self.sizes = [len(p) for p in self.parts]
        self.seed = config["seed"]

    def __len__(self) -> int:
        return sum(self.sizes)

    def item(self, index: int, epoch: int = 0) -> tuple[int, dict]:
        """(task id, sample) of the global ``index``."""
        for task_id, (part, size) in enumerate(zip(self.parts, self.sizes)):
            if index < size:
                part.set_epoch(epoch)
                return task_id, part[index]
            index -= size
        raise IndexError(index)

    @functools.lru_cache(maxsize=2)
    def _order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng((self.seed, epoch)).permutation(len(self))

    def batch(self, iteration: int, batch: int):
        """The training batch of ``iteration``: sample ``s = iteration * batch + j`` is position
        ``s mod N`` of a permutation drawn from (seed, epoch = s div N). Returns (lq, hq, task ids,
        region masks or None: None unless every sample of the batch has them)."""
        samples, task_ids = [], []
        for s in range(iteration * batch, (iteration + 1) * batch):
            epoch, position = divmod(s, len(self))
            task_id, sample = self.item(int(self._order(epoch)[position]), epoch)
            samples.append(sample)
            task_ids.append(task_id)
        regions = (torch.stack([s["regions"] for s in samples]) if all("regions" in s for s in samples) else None)
        return (torch.stack([s["lq"] for s in samples]), torch.stack([s["hq"] for s in samples]),
                torch.tensor(task_ids), regions)


def restore(model: torch.nn.Module, lq: torch.Tensor, task_ids: torch.Tensor,
            regions: torch.Tensor | None = None) -> torch.Tensor:
    """The model's output (the contract's ``forward(x, task)``); the data's region masks go to a
    model that takes them (``takes_regions``), and nowhere else."""
    if regions is not None and getattr(model, "takes_regions", False):
        return model(lq, task=task_ids, regions=regions)
    return model(lq, task=task_ids)


def physical(image: torch.Tensor, modality: str) -> np.ndarray:
    """An (H, W) image in the network's range as a float64 array in physical units."""
    return dataset.denormalize(image.double().cpu().numpy(), modality)


@torch.no_grad()
def restore_physical(model: torch.nn.Module, sample: dict, task_id: int, modality: str,
                     device: torch.device) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(output, ground truth, input) of one sample as float64 arrays in physical units."""
    regions = sample["regions"][None].to(device) if "regions" in sample else None
    pred = restore(model, sample["lq"][None].to(device), torch.tensor([task_id], device=device), regions)
    return physical(pred[0, 0], modality), physical(sample["hq"][0], modality), physical(sample["lq"][0], modality)
