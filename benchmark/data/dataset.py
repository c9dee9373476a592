"""Training and evaluation samples, normalised to [0, 1] with the paper's ranges.

``open_dataset(source, split)`` accepts a prepared folder (``python -m benchmark.data prepare``), an
all-in-one folder, or ``phantom-<modality>`` (generated in memory, no files). Each item is a dict
``{"lq": (1, h, w), "hq": (1, h, w), "task": str, "index": int, "subject": str}`` (the images float32
tensors; ``subject``: the case the slice was cut from, an IXI subject, an AAPM patient, a PET file,
or for phantoms the phantom itself, each generated on its own). Training
(``crop`` set) takes a random crop of both images at the same place, optionally flipped / rotated
(off by default: the paper uses none); crops depend only on (seed, epoch, index), so they are the
same with any number of loader workers. Evaluation (``crop=None``) returns whole slices in order.
"""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from benchmark.data import cache, prepared, sources
from benchmark.data.io import DataError
from benchmark.base.vocabulary import ALL_IN_ONE, RANGES



def normalize(image, modality: str):
    low, high = RANGES[modality]
    return (image - low) / (high - low)


def denormalize(image, modality: str):
    low, high = RANGES[modality]
    return image * (high - low) + low


class PairedSlices(torch.utils.data.Dataset):
    def __init__(self, lq: np.ndarray, hq: np.ndarray, modality: str, task: str, crop: int | None = None,
                 augment: bool = False, seed: int = 0, regions=None, subjects: list[str] | None = None):
        if modality not in RANGES:
            raise ValueError(f"unknown modality {modality!r}; expected one of {', '.join(RANGES)}")
        if lq.shape != hq.shape or lq.ndim != 3:
            raise DataError(f"{task}: lq and hq must be (N, H, W) of one shape; got {lq.shape}, {hq.shape}")
        if crop is not None and (crop < 1 or crop > min(lq.shape[1:])):
            raise ValueError(f"crop {crop} does not fit slices of {lq.shape[1:]}")
        if regions is not None and regions.shape != lq.shape:
            raise DataError(f"{task}: region masks of shape {regions.shape} for slices of {lq.shape}")
        if subjects is not None and len(subjects) != lq.shape[0]:
            raise DataError(f"{task}: {len(subjects)} subject names for {lq.shape[0]} slices")
        self.lq, self.hq, self.modality, self.task, self.regions = lq, hq, modality, task, regions
        self.subjects = subjects if subjects is not None else [f"{task}-{i}" for i in range(lq.shape[0])]
        self.crop, self.augment, self.seed, self.epoch = crop, augment, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """New random crops for a new epoch (call it from the training loop)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.lq.shape[0]

    def __getitem__(self, index: int) -> dict:
        """``lq``, ``hq`` (1, H, W) in [0, 1]; ``regions`` (H, W) int64 labels where the data has them,
        cropped and augmented with the images."""
        images = [np.asarray(self.lq[index]), np.asarray(self.hq[index])]
        if self.regions is not None:
            images.append(np.asarray(self.regions[index]))
        if self.crop is not None:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            top = rng.integers(0, images[0].shape[0] - self.crop + 1)
            left = rng.integers(0, images[0].shape[1] - self.crop + 1)
            images = [a[top:top + self.crop, left:left + self.crop] for a in images]
            if self.augment:
                turns, flip = rng.integers(0, 4), rng.integers(0, 2)
                images = [np.rot90(a, turns) for a in images]
                if flip:
                    images = [a[:, ::-1] for a in images]
        as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(normalize(a, self.modality), dtype=np.float32))[None]  # noqa: E731
        sample = {"lq": as_tensor(images[0]), "hq": as_tensor(images[1]), "task": self.task, "index": index,
                  "subject": self.subjects[index]}
        if self.regions is not None:
            sample["regions"] = torch.from_numpy(np.ascontiguousarray(images[2], dtype=np.int64))
        return sample


@functools.lru_cache(maxsize=6)
def phantom_split(modality: str, split: str, size: int = 128, seed: int = 0,
                  ct_dose: float = sources.CT_PHANTOM_DOSE) -> tuple[np.ndarray, np.ndarray]:
    """The phantom pairs of a split, generated once per machine (``cache``) and kept per process."""
    def make():
        cases = sources.phantom_cases(modality, size=size, seed=seed, ct_dose=ct_dose)[split]
        pairs = [case.load() for case in cases]
        return np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])
    counts = "-".join(map(str, sources.PHANTOM_COUNTS))
    dose = f"-dose{ct_dose:g}" if modality == "ct" and ct_dose != sources.CT_PHANTOM_DOSE else ""
    return cache.arrays(f"{modality}-{split}-size{size}-seed{seed}-counts{counts}{dose}", make)


def open_dataset(source: str, split: str, crop: int | None = None, augment: bool = False, seed: int = 0,
                 phantom_size: int = 128, phantom_seed: int = 0, modality: str | None = None,
                 phantom_ct_dose: float = sources.CT_PHANTOM_DOSE) -> torch.utils.data.Dataset:
    """``seed`` draws the training crops; ``phantom_seed`` the phantom images (fixed across a grid's
    seeds, so that every run of a grid is tested on the same images); ``phantom_ct_dose`` the low
    dose of ``phantom-ct`` pairs (a fraction of the full dose). An all-in-one folder gives
    all its components (a ``ConcatDataset``), or with ``modality`` the one component of that
    modality (so that the harness can take each task's data from it)."""
    if split not in sources.SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(sources.SPLITS)}")
    if str(source).startswith("phantom-"):
        generated = str(source).removeprefix("phantom-")          # (not the ``modality`` argument)
        if generated not in RANGES:
            raise ValueError(f"unknown phantom source {source!r}; expected phantom-ct, phantom-mri or phantom-pet")
        lq, hq = phantom_split(generated, split, phantom_size, phantom_seed, phantom_ct_dose)
        cases = sources.phantom_cases(generated, size=phantom_size, seed=phantom_seed)[split]   # names only: lazy
        return PairedSlices(lq, hq, generated, str(source), crop, augment, seed,
                            subjects=slice_subjects([{"name": c.name, "slices": c.slices} for c in cases]))
    folder = Path(source)
    manifest = prepared.read_manifest(folder)
    if manifest["task"] in (ALL_IN_ONE, "all-in-one"):           # "all-in-one": manifests of earlier versions
        components = manifest["components"]
        if modality is not None:
            components = [c for c in components if c["modality"] == modality]
            if len(components) != 1:
                raise DataError(f"{folder}: an all-in-one dataset with {len(components)} {modality} components; "
                                f"expected one (it has {', '.join(c['modality'] for c in manifest['components'])})")
            return open_dataset(components[0]["path"], split, crop, augment, seed)
        parts = [open_dataset(c["path"], split, crop, augment, seed) for c in components]
        return torch.utils.data.ConcatDataset(parts)
    if modality is not None and manifest["modality"] != modality:
        raise DataError(f"{folder}: a {manifest['modality']} dataset where {modality} data is expected")
    lq, hq = prepared.open_split(folder, split)
    return PairedSlices(lq, hq, manifest["modality"], manifest["task"], crop, augment, seed,
                        regions=prepared.open_regions(folder, split),
                        subjects=slice_subjects(manifest["splits"][split].get("cases") or []) or None)


def slice_subjects(cases: list[dict]) -> list[str]:
    """Each slice's subject, in slice order, from a split's cases (``{"name", "slices"}``, in the
    order their slices were written: ``prepared.write``)."""
    return [case["name"] for case in cases for _ in range(case["slices"])]


def write_all_in_one(out, components: list[str]) -> dict:
    """An all-in-one dataset: a manifest naming prepared datasets (their data is not copied)."""
    out = Path(out)
    if out.exists():
        raise DataError(f"{out}: already exists; remove it or choose another --out")
    if len(components) < 2:
        raise DataError("all-in-one needs at least two prepared datasets (--from A B ...)")
    parts = []
    for path in components:
        manifest = prepared.read_manifest(path)
        if manifest["task"] in (ALL_IN_ONE, "all-in-one"):
            raise DataError(f"{path}: is itself all-in-one; list its components instead")
        parts.append({"task": manifest["task"], "modality": manifest["modality"], "path": str(Path(path).resolve()),
                      "splits": {s: e["count"] for s, e in manifest["splits"].items()}})
    manifest = {"format": prepared.FORMAT, "task": ALL_IN_ONE, "modality": "mixed", "components": parts,
                "splits": {s: {"count": sum(p["splits"].get(s, 0) for p in parts)} for s in sources.SPLITS},
                "skipped": []}
    prepared.write_manifest(out, manifest)
    return manifest
