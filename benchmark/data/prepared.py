"""Prepared datasets on disk: what ``python -m benchmark.data prepare`` writes and training reads.

Layout of ``<out>/``::

    manifest.json          task, modality, source, per split: counts, shape, files, sha256,
                           cases; value ranges; skipped inputs
    train/lq.f32 hq.f32    raw float32 slices (N, H, W), C order, read with np.memmap
    val/...  test/...

Slices are appended while cases are read, so memory stays at one case; the files are written in a
temporary sibling folder that is renamed to ``<out>`` only when everything succeeded, so an
interrupted preparation never leaves a folder that looks complete (the next preparation of the
same ``<out>`` removes what it left). Every split must get slices (splits are made by subject), and
every value must be finite and plausible for the modality (``modalities.PLAUSIBLE``).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmark.data.io import DataError
from benchmark.base.vocabulary import PLAUSIBLE
from benchmark.data.sources import SPLITS, Case

FORMAT = "medir-bench prepared dataset v1"
MANIFEST = "manifest.json"


REGION_LABELS = (0, 2 ** 24)              # indexed masks are stored as float32: exact integers below 2^24


class _SplitWriter:
    def __init__(self, folder: Path, modality: str, regions: bool = False):
        folder.mkdir(parents=True)
        self.folder, self.plausible = folder, PLAUSIBLE[modality]
        names = ("lq", "hq", "regions") if regions else ("lq", "hq")
        self.files = {name: open(folder / f"{name}.f32", "wb") for name in names}
        self.digests = {name: hashlib.sha256() for name in self.files}
        self.count, self.shape, self.cases = 0, None, []
        self.low, self.high = {n: np.inf for n in self.files}, {n: -np.inf for n in self.files}

    def add(self, case: str, lq: np.ndarray, hq: np.ndarray, regions: np.ndarray | None = None) -> None:
        if lq.shape != hq.shape:
            raise DataError(f"{case}: low- and high-quality slices differ in shape: {lq.shape} vs {hq.shape}")
        if ("regions" in self.files) != (regions is not None):
            raise DataError(f"{case}: {'no region mask' if regions is None else 'a region mask'} where the other "
                            "cases have " + ("one" if regions is None else "none"))
        if regions is not None and regions.shape != lq.shape:
            raise DataError(f"{case}: a region mask of shape {regions.shape} for slices of {lq.shape}")
        if self.shape is None:
            self.shape = lq.shape[1:]
        elif lq.shape[1:] != self.shape:
            raise DataError(f"{case}: slices of {lq.shape[1:]} where the dataset has {self.shape}; "
                            "all slices of a prepared dataset share one size")
        arrays = [(name, array) for name, array in (("lq", lq), ("hq", hq), ("regions", regions)) if array is not None]
        for name, array in arrays:              # every array checked before any is written: a skipped case
            if not np.isfinite(array).all():    # leaves no slices behind
                raise DataError(f"{case}: the {name} slices contain NaN or infinite values")
            low, high = REGION_LABELS if name == "regions" else self.plausible
            if array.min() < low or array.max() > high:
                raise DataError(f"{case}: the {name} slices hold values in [{array.min():.4g}, {array.max():.4g}], "
                                f"outside the plausible range [{low:g}, {high:g}] of this modality: wrong units "
                                "or a corrupt file?")
        for name, array in arrays:
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
    if modality not in PLAUSIBLE:
        raise DataError(f"unknown modality {modality!r}; expected one of {', '.join(PLAUSIBLE)}")
    empty = [split for split in SPLITS if not cases.get(split)]
    if empty:
        found = sum(len(cases.get(split, [])) for split in SPLITS)
        raise DataError(f"{task}: {found} subjects/cases give no {' or '.join(empty)} split (splits are made by "
                        "subject, so that no subject is in two); the source needs more subjects")
    _remove_stale_partials(out)
    temporary = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(temporary, ignore_errors=True)
    skipped = []
    total = sum(c.slices for split in SPLITS for c in cases.get(split, []))
    try:
        splits = {}
        with tqdm(total=total, unit="slice", desc=f"prepare {task}", disable=not progress) as bar:
            with_regions = any(c.load_regions is not None for split in SPLITS for c in cases.get(split, []))
            for split in SPLITS:
                writer = _SplitWriter(temporary / split, modality, with_regions)
                for case in cases.get(split, []):
                    try:
                        lq, hq = case.load()
                        writer.add(case.name, lq, hq, case.load_regions() if case.load_regions else None)
                    except DataError as err:
                        if not skip_bad:
                            raise
                        skipped.append({"split": split, "case": case.name, "reason": str(err)})
                    bar.update(case.slices)
                splits[split] = writer.close()
        empty = [split for split, entry in splits.items() if not entry["count"]]
        if empty:
            raise DataError(f"{task}: no slices were prepared for the {' and '.join(empty)} split"
                            + (f" ({len(skipped)} inputs skipped)" if skipped else ""))
        manifest = {"format": FORMAT, "task": task, "modality": modality, "source": source,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "splits": splits, "skipped": skipped}
        write_manifest(temporary, manifest)
        temporary.rename(out)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return manifest


def _remove_stale_partials(out: Path) -> None:
    """Remove the partial folders of earlier preparations of ``out`` whose process is gone."""
    for partial in out.parent.glob(f".{out.name}.partial-*"):
        pid = partial.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                os.kill(int(pid), 0)
                continue                                   # its process still runs
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        print(f"{partial}: removed (left by an interrupted preparation)", file=sys.stderr)
        shutil.rmtree(partial, ignore_errors=True)


def write_manifest(folder, manifest: dict) -> None:
    """``folder/manifest.json``, written to a temporary name and renamed into place."""
    from benchmark.results import store
    store.write_json(Path(folder) / MANIFEST, manifest)


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


class SliceFile:
    """The (N, H, W) float32 slices of one prepared file, read a slice at a time (``os.pread``). A
    file truncated while it is read gives a ``DataError`` naming it (a memory map would kill the
    process with a bus error), and so does a slice whose values are not finite or lie outside the
    range the manifest recorded when the file was written (the file changed since)."""

    def __init__(self, path: Path, shape: tuple[int, int, int], value_range: tuple[float, float]):
        self.path, self.shape, self.ndim = Path(path), tuple(shape), 3
        low, high = value_range
        slack = 1e-6 * max(abs(low), abs(high), 1.0)              # float32 rounding of the recorded range
        self.low, self.high = low - slack, high + slack
        self.nbytes = 4 * self.shape[1] * self.shape[2]
        self._fd, self._pid = None, None

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"slice {index} of {len(self)}")
        index %= len(self)
        if self._pid != os.getpid():                              # one descriptor per process
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        data = os.pread(self._fd, self.nbytes, index * self.nbytes)
        if len(data) != self.nbytes:
            raise DataError(f"{self.path}: truncated while in use (slice {index}: {len(data)} of {self.nbytes} "
                            "bytes); prepare the dataset again")
        image = np.frombuffer(data, dtype=np.float32).reshape(self.shape[1:])
        if not np.isfinite(image).all() or image.min() < self.low or image.max() > self.high:
            raise DataError(f"{self.path}: slice {index} holds values in [{image.min():.4g}, {image.max():.4g}], outside "
                            f"the range [{self.low:.4g}, {self.high:.4g}] recorded when it was prepared: the file "
                            "changed since (check it with python -m benchmark.data info --verify)")
        return image

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fd": None, "_pid": None}

    def __del__(self):
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)


def open_split(folder, split: str) -> tuple[SliceFile, SliceFile]:
    """The (lq, hq) slices of a split, (N, H, W) float32, read on demand."""
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
        arrays.append(SliceFile(path, shape, entry["value_range"][name]))
    return arrays[0], arrays[1]


def open_regions(folder, split: str) -> SliceFile | None:
    """The indexed region masks of a split (N, H, W, integer labels as float32), or None when the
    dataset was prepared without them."""
    entry = read_manifest(folder)["splits"][split]
    if "regions" not in entry["files"]:
        return None
    path = Path(folder) / entry["files"]["regions"]
    shape = (entry["count"], *entry["shape"])
    if not path.is_file() or path.stat().st_size != int(np.prod(shape)) * 4:
        raise DataError(f"{path}: missing or truncated (expected {int(np.prod(shape)) * 4} bytes for {shape} float32)")
    return SliceFile(path, shape, entry["value_range"]["regions"])


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
