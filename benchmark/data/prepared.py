"""Prepared datasets on disk: what ``python -m benchmark.data prepare`` writes and training reads.

Layout of ``<out>/``::

    manifest.json          task, modality, source, per split: counts, shape, files, sha256,
                           cases; value ranges; skipped inputs
    train/lq.f32 hq.f32    raw float32 slices (N, H, W), C order, read with np.memmap
    val/...  test/...

Slices are appended while cases are read, so memory stays at one case; the files are written in
the sibling folder ``.<out>.partial`` that is renamed to ``<out>`` only when everything succeeded,
so an interrupted preparation never leaves a folder that looks complete. After each case the files
are synced and ``journal.json`` records it: the same command run again after a kill truncates the
files to the last whole case and reads only the cases not yet written (a partial folder of other
inputs is removed). A lock on the partial folder refuses a second process preparing the same ``<out>``. Every split must get slices (splits are made by subject), and
every value must be finite and plausible for the modality (``modalities.PLAUSIBLE``).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmark.base import files
from benchmark.data.io import DataError
from benchmark.base.vocabulary import PLAUSIBLE
from benchmark.data.sources import SPLITS, Case

FORMAT = "medir-bench prepared dataset v1"
MANIFEST = "manifest.json"
JOURNAL = "journal.json"                 # in the partial folder: the cases written so far
LOCK = ".lock"


REGION_LABELS = (0, 2 ** 24)              # indexed masks are stored as float32: exact integers below 2^24


class _SplitWriter:
    """Appends one split's cases to its raw files. Its ``state`` (JSON: the slice shape and, per
    written case, its slice count, value range and the files' lengths after it) is what the journal
    keeps, so a resumed preparation truncates each file to the last whole case and goes on."""

    def __init__(self, folder: Path, modality: str, regions: bool = False, state: dict | None = None):
        folder.mkdir(parents=True, exist_ok=True)
        self.folder, self.plausible = folder, PLAUSIBLE[modality]
        names = ("lq", "hq", "regions") if regions else ("lq", "hq")
        self.state = state or {"shape": None, "cases": []}
        ends = self.state["cases"][-1]["ends"] if self.state["cases"] else dict.fromkeys(names, 0)
        self.files = {}
        for name in names:
            path = folder / f"{name}.f32"
            handle = open(path, "r+b" if path.exists() else "w+b")
            handle.truncate(ends[name])            # bytes after the last whole case: an interrupted write
            handle.seek(ends[name])
            self.files[name] = handle

    def written(self, case: str) -> bool:
        return any(entry["name"] == case for entry in self.state["cases"])

    def add(self, case: str, lq: np.ndarray, hq: np.ndarray, regions: np.ndarray | None = None) -> None:
        if lq.shape != hq.shape:
            raise DataError(f"{case}: low- and high-quality slices differ in shape: {lq.shape} vs {hq.shape}")
        if ("regions" in self.files) != (regions is not None):
            raise DataError(f"{case}: {'no region mask' if regions is None else 'a region mask'} where the other "
                            "cases have " + ("one" if regions is None else "none"))
        if regions is not None and regions.shape != lq.shape:
            raise DataError(f"{case}: a region mask of shape {regions.shape} for slices of {lq.shape}")
        shape = self.state["shape"]
        if shape is not None and list(lq.shape[1:]) != shape:
            raise DataError(f"{case}: slices of {lq.shape[1:]} where the dataset has {tuple(shape)}; "
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
            self.files[name].write(np.ascontiguousarray(array, dtype=np.float32).tobytes())
        for handle in self.files.values():      # on disk before the journal says the case is written
            handle.flush()
            os.fsync(handle.fileno())
        self.state["shape"] = list(lq.shape[1:])
        self.state["cases"].append({"name": case, "slices": int(lq.shape[0]),
                                    "ends": {name: f.tell() for name, f in self.files.items()},
                                    "range": {name: [float(a.min()), float(a.max())] for name, a in arrays}})

    def close(self) -> dict:
        for f in self.files.values():
            f.close()
        cases = self.state["cases"]
        count = sum(entry["slices"] for entry in cases)
        return {"count": count, "shape": self.state["shape"],
                "files": {n: f"{self.folder.name}/{n}.f32" for n in self.files},
                "sha256": {n: _sha256(self.folder / f"{n}.f32") for n in self.files},
                "value_range": {n: [min(e["range"][n][0] for e in cases), max(e["range"][n][1] for e in cases)]
                                for n in self.files if count},
                "cases": [{"name": entry["name"], "slices": entry["slices"]} for entry in cases]}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _plan(cases: dict[str, list[Case]], **identity) -> str:
    """What a preparation writes (its task, source and every case in order): a journal of another
    plan is not resumed."""
    listed = {split: [[c.name, c.slices] for c in cases.get(split, [])] for split in SPLITS}
    text = json.dumps({**identity, "cases": listed}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


@contextlib.contextmanager
def _held(partial: Path):
    """The partial folder, locked for this process (a second preparation of the same ``--out`` is
    refused while the first runs; the kernel releases the lock of a process that dies)."""
    partial.mkdir(parents=True, exist_ok=True)
    try:
        with files.exclusive_lock(partial / LOCK):
            yield partial
    except files.LockHeld:
        raise DataError(f"{partial}: another process is preparing this dataset now; wait for it or "
                        "choose another --out") from None


def _journal(partial: Path, plan: str) -> dict:
    """The journal of an interrupted preparation of the same plan, or a fresh one (whatever else the
    partial folder holds is removed)."""
    try:
        journal = json.loads((partial / JOURNAL).read_text())
    except (OSError, json.JSONDecodeError):
        journal = None
    if journal is not None and journal.get("plan") == plan:
        return journal
    leftovers = [p for p in partial.iterdir() if p.name != LOCK]
    if leftovers:
        why = "of other inputs" if journal is not None else "with no readable journal"
        print(f"{partial}: an interrupted preparation {why}; removed, starting afresh", file=sys.stderr)
        for path in leftovers:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    return {"plan": plan, "splits": {}, "skipped": []}


def write(out, cases: dict[str, list[Case]], *, task: str, modality: str, source: str,
          skip_bad: bool = False, progress: bool = True) -> dict:
    """Read every case and write the prepared dataset to ``out``; returns the manifest. An
    interrupted preparation (an error, Ctrl-C, a kill, a full disk) resumes when the same command
    runs again: the cases its journal lists as written are not read again."""
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
    with_regions = any(c.load_regions is not None for split in SPLITS for c in cases.get(split, []))
    plan = _plan(cases, task=task, modality=modality, source=source, regions=with_regions)
    total = sum(c.slices for split in SPLITS for c in cases.get(split, []))
    with _held(out.parent / f".{out.name}.partial") as partial:
        journal = _journal(partial, plan)
        skipped = journal["skipped"]
        resumed = [e["name"] for state in journal["splits"].values() for e in state["cases"]] + \
                  [s["case"] for s in skipped]
        if resumed:
            print(f"{out}: resuming an interrupted preparation; {len(resumed)} cases already prepared are not "
                  "read again", file=sys.stderr, flush=True)
        splits = {}
        with tqdm(total=total, unit="slice", desc=f"prepare {task}", disable=not progress) as bar:
            for split in SPLITS:
                writer = _SplitWriter(partial / split, modality, with_regions, journal["splits"].get(split))
                for case in cases.get(split, []):
                    if writer.written(case.name) or any(s["case"] == case.name and s["split"] == split
                                                        for s in skipped):
                        bar.update(case.slices)
                        continue
                    try:                                          # one case in memory at a time
                        writer.add(case.name, *case.load(), case.load_regions() if case.load_regions else None)
                    except DataError as err:
                        if not skip_bad:
                            raise DataError(f"{err} (the cases prepared so far are kept in {partial}: the same "
                                            "command resumes after them)") from None
                        skipped.append({"split": split, "case": case.name, "reason": str(err)})
                    journal["splits"][split] = writer.state
                    files.write_json(partial / JOURNAL, journal)
                    bar.update(case.slices)
                splits[split] = writer.close()
        empty = [split for split, entry in splits.items() if not entry["count"]]
        if empty:
            shutil.rmtree(partial, ignore_errors=True)         # nothing to resume: every case was read
            raise DataError(f"{task}: no slices were prepared for the {' and '.join(empty)} split"
                            + (f" ({len(skipped)} inputs skipped)" if skipped else ""))
        manifest = {"format": FORMAT, "task": task, "modality": modality, "source": source,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "splits": splits, "skipped": skipped}
        write_manifest(partial, manifest)
        (partial / JOURNAL).unlink()
        (partial / LOCK).unlink()                  # still held: no one else can take it before the rename
        partial.rename(out)
    return manifest


def write_manifest(folder, manifest: dict) -> None:
    """``folder/manifest.json``, written to a temporary name and renamed into place."""
    files.write_json(Path(folder) / MANIFEST, manifest)


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
            if _sha256(Path(folder) / rel) != entry["sha256"][name]:
                bad.append(rel)
    return bad
