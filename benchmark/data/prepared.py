"""Prepared datasets on disk: what ``python -m benchmark.data prepare`` writes and training reads.

Layout of ``<out>/``::

    manifest.json          task, modality, source, per split: counts, shape, files, sha256,
                           cases; value ranges; skipped inputs
    train/lq.f32 hq.f32    raw float32 slices (N, H, W), C order, read with np.memmap
    val/...  test/...

Slices are appended while cases are read, so memory stays at one case; the files are written in a
temporary sibling folder that is renamed to ``<out>`` only when everything succeeded, so an
interrupted preparation never leaves a folder that looks complete.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .io import DataError
from .sources import SPLITS, Case

FORMAT = "medir-bench prepared dataset v1"
MANIFEST = "manifest.json"


class _SplitWriter:
    def __init__(self, folder: Path):
        folder.mkdir(parents=True)
        self.folder = folder
        self.files = {name: open(folder / f"{name}.f32", "wb") for name in ("lq", "hq")}
        self.digests = {name: hashlib.sha256() for name in self.files}
        self.count, self.shape, self.cases = 0, None, []
        self.low, self.high = {n: np.inf for n in self.files}, {n: -np.inf for n in self.files}

    def add(self, case: str, lq: np.ndarray, hq: np.ndarray) -> None:
        if lq.shape != hq.shape:
            raise DataError(f"{case}: low- and high-quality slices differ in shape: {lq.shape} vs {hq.shape}")
        if self.shape is None:
            self.shape = lq.shape[1:]
        elif lq.shape[1:] != self.shape:
            raise DataError(f"{case}: slices of {lq.shape[1:]} where the dataset has {self.shape}; "
                            "all slices of a prepared dataset share one size")
        for name, array in (("lq", lq), ("hq", hq)):
            if not np.isfinite(array).all():
                raise DataError(f"{case}: the {name} slices contain NaN or infinite values")
            data = np.ascontiguousarray(array, dtype=np.float32).tobytes()
            self.files[name].write(data)
            self.digests[name].update(data)
            self.low[name] = min(self.low[name], float(array.min()))
            self.high[name] = max(self.high[name], float(array.max()))
        self.count += lq.shape[0]
        self.cases.append({"name": case, "slices": int(lq.shape[0])})

    def close(self) -> dict:
        for f in self.files.values():
            f.close()
        return {"count": self.count, "shape": list(self.shape) if self.shape else None,
                "files": {n: f"{self.folder.name}/{n}.f32" for n in self.files},
                "sha256": {n: d.hexdigest() for n, d in self.digests.items()},
                "value_range": {n: [self.low[n], self.high[n]] for n in self.files if self.count},
                "cases": self.cases}


def write(out, cases: dict[str, list[Case]], *, task: str, modality: str, source: str,
          skip_bad: bool = False, progress: bool = True) -> dict:
    """Read every case and write the prepared dataset to ``out``; returns the manifest."""
    out = Path(out)
    if out.exists():
        raise DataError(f"{out}: already exists; remove it or choose another --out")
    temporary = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    skipped = []
    total = sum(c.slices for split in SPLITS for c in cases.get(split, []))
    try:
        splits = {}
        with tqdm(total=total, unit="slice", desc=f"prepare {task}", disable=not progress) as bar:
            for split in SPLITS:
                writer = _SplitWriter(temporary / split)
                for case in cases.get(split, []):
                    try:
                        lq, hq = case.load()
                        writer.add(case.name, lq, hq)
                    except DataError as err:
                        if not skip_bad:
                            raise
                        skipped.append({"split": split, "case": case.name, "reason": str(err)})
                    bar.update(case.slices)
                splits[split] = writer.close()
        if not any(s["count"] for s in splits.values()):
            raise DataError(f"{task}: no slices were prepared" + (f" ({len(skipped)} inputs skipped)" if skipped else ""))
        manifest = {"format": FORMAT, "task": task, "modality": modality, "source": source,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "splits": splits, "skipped": skipped}
        (temporary / MANIFEST).write_text(json.dumps(manifest, indent=2))
        temporary.rename(out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return manifest


def read_manifest(folder) -> dict:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise DataError(f"{folder}: not a prepared dataset (no {MANIFEST}); create one with "
                        "python -m benchmark.data prepare")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from None
    if manifest.get("format") != FORMAT:
        raise DataError(f"{path}: unknown format {manifest.get('format')!r}; expected {FORMAT!r}")
    return manifest


def open_split(folder, split: str) -> tuple[np.memmap, np.memmap]:
    """The (lq, hq) slices of a split as read-only memory maps of shape (N, H, W)."""
    manifest = read_manifest(folder)
    if split not in manifest["splits"]:
        raise DataError(f"{folder}: no split {split!r}; it has {', '.join(manifest['splits'])}")
    entry = manifest["splits"][split]
    if entry["count"] == 0:
        raise DataError(f"{folder}: the {split} split is empty")
    shape = (entry["count"], *entry["shape"])
    arrays = []
    for name in ("lq", "hq"):
        path = Path(folder) / entry["files"][name]
        expected = int(np.prod(shape)) * 4
        if not path.is_file() or path.stat().st_size != expected:
            raise DataError(f"{path}: missing or truncated (expected {expected} bytes for {shape} float32)")
        arrays.append(np.memmap(path, dtype=np.float32, mode="r", shape=shape))
    return arrays[0], arrays[1]


def verify(folder) -> list[str]:
    """Files whose sha256 differs from the manifest's."""
    manifest, bad = read_manifest(folder), []
    for entry in manifest["splits"].values():
        for name, rel in entry["files"].items():
            digest = hashlib.sha256()
            with open(Path(folder) / rel, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    digest.update(block)
            if digest.hexdigest() != entry["sha256"][name]:
                bad.append(rel)
    return bad
