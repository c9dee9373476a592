"""Raw data sources: each lists its cases (a subject, patient or volume) per split, and a case loads
to paired (low-quality, high-quality) 2D slices in physical units.

- ``ixi``: IXI T2 volumes (``IXI<id>-<site>-<n>-T2.nii.gz`` in one folder, as distributed). Subjects
  sorted by their IXI id; the first 405 train, the next 59 validate, the rest (114 in the full
  set) test; with fewer subjects the same proportions. Of each volume the central 100 axial
  slices (last axis), 256x256; the low-quality slice is the k-space crop of the high-quality one.
- ``aapm``: the AAPM Low-Dose CT Grand Challenge layout: one folder per patient (sorted by name;
  8/1/1 for train/validation/test, same proportions otherwise), each with a full-dose and a
  quarter-dose series, told apart by "full" / "quarter" in their folder names. Slices are paired by
  their position along the table (ImagePositionPatient z, else SliceLocation) and read in HU.
- ``paired``: ``hq/`` and ``lq/`` folders of files with the same names (NIfTI, DICOM or NumPy; 2D
  images or 3D volumes sliced along the last axis); split by file 80/10/10 in name order. The PET
  task uses this layout (the paper's PET set is private).
- ``phantom``: generated pairs (``phantoms.py`` scanned or degraded by ``degradations.py``); no files at all.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.ndimage

from benchmark.data import degradations, phantoms
from benchmark.data.io import DataError, kind_of, pixel_spacing_mm, read_dicom, read_image, shows_whole_field

SPLITS = ("train", "val", "test")
IXI_SPLIT = (405, 59, 114)
IXI_SLICES, IXI_SIZE = 100, 256
AAPM_SPLIT = (8, 1, 1)


@dataclass
class Case:
    """One subject / patient / volume: ``load()`` -> (lq, hq) arrays of shape (slices, H, W);
    ``load_regions()``, where the source has them, its indexed region masks (slices, H, W)."""
    name: str
    slices: int
    load: Callable[[], tuple[np.ndarray, np.ndarray]]
    load_regions: Callable[[], np.ndarray] | None = None


def split_counts(total: int, ratios: tuple[int, ...]) -> tuple[int, ...]:
    """The paper's split when ``total`` matches it, else the same proportions (train gets the rest)."""
    if total == sum(ratios):
        return ratios
    val = int(round(total * ratios[1] / sum(ratios)))
    test = int(round(total * ratios[2] / sum(ratios)))
    if total >= 3:
        val, test = max(val, 1), max(test, 1)
    return total - val - test, val, test


def _by_split(cases: list[Case], ratios: tuple[int, ...]) -> dict[str, list[Case]]:
    counts = split_counts(len(cases), ratios)
    bounds = np.cumsum((0,) + counts)
    return {split: cases[bounds[i]:bounds[i + 1]] for i, split in enumerate(SPLITS)}


def _folder(src) -> Path:
    src = Path(src)
    if not src.is_dir():
        raise DataError(f"{src}: no such folder")
    return src


# --- IXI -------------------------------------------------------------------------------------------

_IXI_NAME = re.compile(r"^IXI(\d+)-.*-T2\.nii(\.gz)?$", re.IGNORECASE)


def _ixi_load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    volume = read_image(path)
    if volume.ndim != 3 or volume.shape[:2] != (IXI_SIZE, IXI_SIZE):
        raise DataError(f"{path}: expected a {IXI_SIZE}x{IXI_SIZE}xN T2 volume; got shape {volume.shape}")
    if volume.shape[2] < IXI_SLICES:
        raise DataError(f"{path}: has {volume.shape[2]} slices, fewer than the {IXI_SLICES} central ones asked for")
    first = (volume.shape[2] - IXI_SLICES) // 2
    hq = np.moveaxis(volume[:, :, first:first + IXI_SLICES], 2, 0).astype(np.float32)
    lq = np.stack([degradations.mri_kspace_crop(s) for s in hq]).astype(np.float32)
    return lq, hq


def ixi_cases(src) -> dict[str, list[Case]]:
    files = [p for p in _folder(src).iterdir() if _IXI_NAME.match(p.name)]
    if not files:
        raise DataError(f"{src}: no IXI T2 volumes (IXI<id>-...-T2.nii.gz)")
    files.sort(key=lambda p: (int(_IXI_NAME.match(p.name).group(1)), p.name))
    cases = [Case(p.name.split(".")[0], IXI_SLICES, lambda p=p: _ixi_load(p)) for p in files]
    return _by_split(cases, IXI_SPLIT)


# --- AAPM ------------------------------------------------------------------------------------------

def _dicom_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and (kind_of(p) == "dicom" or p.suffix == ""))


def _position(path: Path) -> float:
    import pydicom
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as err:
        raise DataError(f"{path}: not a readable DICOM file ({type(err).__name__}: {err})") from None
    if "ImagePositionPatient" in ds:
        return float(ds.ImagePositionPatient[2])
    if "SliceLocation" in ds:
        return float(ds.SliceLocation)
    raise DataError(f"{path}: has neither ImagePositionPatient nor SliceLocation to pair slices by")


def _series(patient: Path, word: str, series: str | None) -> Path:
    """The one folder under ``patient`` named with ``word`` (and ``series``, e.g. '3mm', if given)."""
    found = [d for d in patient.rglob("*") if d.is_dir() and word in d.name.lower()
             and (series is None or series.lower() in d.name.lower())]
    found = [d for d in found if not any(other in d.parents for other in found)]   # outermost only
    if len(found) != 1:
        names = ", ".join(sorted(str(d.relative_to(patient)) for d in found)) or "none"
        hint = " (choose one with --series, e.g. --series 3mm)" if len(found) > 1 else ""
        raise DataError(f"{patient}: expected one folder with '{word}' in its name; found {names}{hint}")
    return found[0]


def _aapm_pairs(patient: Path, series: str | None) -> list[tuple[Path, Path]]:
    """(quarter-dose, full-dose) files at the same table position, in position order; each
    header is read once."""
    full, quarter = (_dicom_files(_series(patient, w, series)) for w in ("full", "quarter"))
    by_z = {round(_position(p), 3): p for p in quarter}
    positioned = sorted((z, by_z[z], p) for p in full if (z := round(_position(p), 3)) in by_z)
    if not positioned:
        raise DataError(f"{patient}: no full-dose slice has a quarter-dose slice at the same position")
    return [(low, high) for _, low, high in positioned]


def _aapm_load(pairs: list[tuple[Path, Path]]) -> tuple[np.ndarray, np.ndarray]:
    """The patient's (quarter-dose, full-dose) slices in HU, filled into two preallocated arrays:
    a patient's memory is its two float32 series (0.5 GB for 240 slices of 512x512), not twice that."""
    lq = hq = None
    for i, (low, high) in enumerate(pairs):
        low_image, high_image = read_dicom(low)[1], read_dicom(high)[1]
        if low_image.shape != high_image.shape:
            raise DataError(f"{low} and {high}: a pair with different shapes {low_image.shape} vs {high_image.shape}")
        if hq is None:
            lq, hq = (np.empty((len(pairs), *high_image.shape), dtype=np.float32) for _ in range(2))
        elif high_image.shape != hq.shape[1:]:
            raise DataError(f"{high}: a slice of {high_image.shape} in a series of {hq.shape[1:]} slices "
                            f"({pairs[0][1]}); a series must have one slice size")
        lq[i], hq[i] = low_image, high_image
    return lq, hq


def _failing(err: DataError) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
    """A case that could not even be listed: loading it raises the error (skipped with --skip-bad)."""
    def load():
        raise err
    return load


def aapm_cases(src, series: str | None = None) -> dict[str, list[Case]]:
    patients = sorted(d for d in _folder(src).iterdir() if d.is_dir())
    if not patients:
        raise DataError(f"{src}: no patient folders")
    cases = []
    for patient in patients:
        try:
            pairs = _aapm_pairs(patient, series)                   # listed once, loaded later
        except DataError as err:
            cases.append(Case(patient.name, 0, _failing(err)))
            continue
        cases.append(Case(patient.name, len(pairs), lambda pairs=pairs: _aapm_load(pairs)))
    return _by_split(cases, AAPM_SPLIT)


# --- paired folders (PET and any LQ/HQ pairs) -------------------------------------------------------

def _as_slices(array: np.ndarray) -> np.ndarray:
    """A 2D image as one slice; a volume as its slices along the last axis."""
    return array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0)


def _paired_load(lq_path: Path, hq_path: Path) -> tuple[np.ndarray, np.ndarray]:
    lq, hq = read_image(lq_path), read_image(hq_path)
    if lq.shape != hq.shape:
        raise DataError(f"{lq_path} and {hq_path}: a pair with different shapes {lq.shape} vs {hq.shape}")
    return _as_slices(lq), _as_slices(hq)


def _slice_count(path: Path) -> int:
    if kind_of(path) == "nifti":
        import nibabel as nib
        try:
            shape = [s for s in nib.load(path).shape if s != 1] or [1]
        except Exception as err:
            raise DataError(f"{path}: not a readable NIfTI file ({type(err).__name__}: {err})") from None
        return 1 if len(shape) == 2 else int(shape[-1])
    if kind_of(path) == "numpy":
        try:
            shape = np.load(path, mmap_mode="r", allow_pickle=False).shape
        except (ValueError, OSError, EOFError) as err:
            raise DataError(f"{path}: not a readable .npy file ({type(err).__name__}: {err})") from None
        return 1 if len(shape) == 2 else int(shape[-1])
    return 1


def _regions_load(path: Path) -> np.ndarray:
    """An indexed mask (e.g. Segment Anything's, saved as NIfTI): non-negative integer labels (the
    prepared-dataset writer checks that it matches its images' shape)."""
    labels = read_image(path)
    if (labels < 0).any() or not np.array_equal(labels, np.round(labels)):
        raise DataError(f"{path}: a region mask must hold non-negative integer labels")
    return _as_slices(labels)


def paired_cases(src) -> dict[str, list[Case]]:
    """``hq/`` and ``lq/`` files with equal names; with a ``regions/`` folder, an indexed region mask
    of the same name for every pair (models that take regions, such as RAT, receive them)."""
    root = _folder(src)
    hq_dir, lq_dir = root / "hq", root / "lq"
    for folder in (hq_dir, lq_dir):
        if not folder.is_dir():
            raise DataError(f"{root}: expected the sub-folders hq/ and lq/; {folder.name}/ is missing")
    hq_files = {p.name: p for p in hq_dir.iterdir() if kind_of(p)}
    lq_files = {p.name: p for p in lq_dir.iterdir() if kind_of(p)}
    unmatched = sorted(set(hq_files) ^ set(lq_files))
    if unmatched:
        raise DataError(f"{root}: files without a partner in the other folder: {', '.join(unmatched[:5])}")
    if not hq_files:
        raise DataError(f"{root}: no image files in hq/ and lq/")
    regions_files = None
    if (root / "regions").is_dir():
        regions_files = {p.name: p for p in (root / "regions").iterdir() if kind_of(p)}
        missing = sorted(set(hq_files) - set(regions_files))
        if missing:
            raise DataError(f"{root}: regions/ has no mask for {', '.join(missing[:5])}; every pair needs one")
    cases = []
    for name in sorted(hq_files):
        try:
            count = _slice_count(hq_files[name])
        except DataError as err:                    # unreadable: fails when loaded (skipped with --skip-bad)
            cases.append(Case(name, 0, _failing(err)))
            continue
        load_regions = None
        if regions_files is not None:
            load_regions = lambda name=name: _regions_load(regions_files[name])   # noqa: E731
        cases.append(Case(name, count, lambda name=name: _paired_load(lq_files[name], hq_files[name]), load_regions))
    return _by_split(cases, (8, 1, 1))


# --- phantoms --------------------------------------------------------------------------------------

CT_PHANTOM_DOSE = 0.25   # the AAPM data's quarter dose (data.phantom_ct_dose)
CT_SCAN_SIZE = 512   # CT phantoms are scanned whole at 512x512 over a 350 mm field of view (0.68 mm pixels)


def _window(body: np.ndarray, size: int, rng: np.random.Generator) -> tuple[slice, slice]:
    """A ``size`` x ``size`` window of an image whose body mask is ``body``, drawn from ``rng``: its
    centre is a body pixel at least half the body's greatest depth (its semi-minor axis) inside it,
    the central region whose noise is like a scanner's (the simulation has no bowtie filter, so its
    periphery gets less noise than a scanner's would); the whole image when ``size`` is its size."""
    n = body.shape[0]
    if size >= n:
        return slice(0, n), slice(0, n)
    depth = scipy.ndimage.distance_transform_edt(body)
    half = size // 2
    inner = depth >= depth.max() / 2
    inner[:half] = inner[n - (size - half):] = False                     # the window must fit
    inner[:, :half] = inner[:, n - (size - half):] = False
    rows, cols = np.nonzero(inner)
    k = rng.integers(len(rows))
    return slice(rows[k] - half, rows[k] - half + size), slice(cols[k] - half, cols[k] - half + size)


def _ct_phantom_scan(size: int, seed: int, dose: float = CT_PHANTOM_DOSE) -> tuple[np.ndarray, np.ndarray]:
    """(low-dose, full-dose) FBPs of a body phantom, ``size`` x ``size`` (low dose: ``dose`` of the
    full dose, a quarter as in the AAPM data unless the scale says otherwise): the whole slice is
    scanned at AAPM's geometry (512x512 over 350 mm: 0.68 mm pixels, adult-size body; see
    ``degradations.ct_pair``), and a window of both reconstructions is kept, placed by the seed
    (``_window``). Scanning the whole body keeps the attenuation, hence the noise, of a real body:
    a 128x128 phantom of the whole body would have 2.7 mm pixels and 8 times less noise."""
    if size > CT_SCAN_SIZE:
        raise ValueError(f"CT phantoms are {CT_SCAN_SIZE}x{CT_SCAN_SIZE} slices; a size of {size} does not fit "
                         f"(data.phantom_size must be at most {CT_SCAN_SIZE})")
    image = phantoms.phantom("ct", CT_SCAN_SIZE, seed).astype(np.float64)
    low, full = degradations.ct_pair(image, dose=dose, seed=seed)
    rows, cols = _window(image > -950, size, np.random.default_rng((seed, size)))
    return low[rows, cols], full[rows, cols]


# modality -> (size, seed) -> (lq, hq): MRI degrades the phantom itself (the high-quality image is
# the fully sampled one); CT and PET scan it twice, at full and at low dose, like the real pairs
def _mri_phantom_scan(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    image = phantoms.phantom("mri", size, seed)
    return degradations.mri_kspace_crop(image), image


def _pet_phantom_scan(size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    return degradations.pet_pair(phantoms.phantom("pet", size, seed), seed=seed)


SCAN = {"mri": _mri_phantom_scan, "ct": _ct_phantom_scan, "pet": _pet_phantom_scan}


def phantom_pair(modality: str, size: int, seed: int, ct_dose: float = CT_PHANTOM_DOSE) -> tuple[np.ndarray, np.ndarray]:
    """One (lq, hq) phantom pair, deterministic from ``seed``, float32 in the modality's range
    (``ct_dose``: a CT pair's low dose, a fraction of the full dose)."""
    low, high = phantoms.MODALITY_RANGES[modality]
    lq, hq = _ct_phantom_scan(size, seed, ct_dose) if modality == "ct" else SCAN[modality](size, seed)
    return tuple(np.clip(a, low, high).astype(np.float32) for a in (lq, hq))


def simulated_ct_pair(path, dose: float = 0.25, seed=None) -> tuple[np.ndarray, np.ndarray]:
    """(lq, hq) from one full-dose CT slice file (HU): the slice and the slice with the extra noise of
    ``dose`` inserted at the file's own pixel spacing (``degradations.ct_low_dose``)."""
    hq = read_image(path).astype(np.float64)
    if hq.ndim != 2:
        raise DataError(f"{path}: expected one CT slice; got shape {hq.shape}")
    pixel_mm = pixel_spacing_mm(path)
    if pixel_mm is None:
        raise DataError(f"{path}: no pixel spacing in the header; call degradations.ct_low_dose with pixel_mm")
    if not shows_whole_field(hq):
        warnings.warn(f"{path}: the slice cuts through tissue at its border (a crop of its reconstruction): the "
                      f"inserted noise misses the attenuation of the body outside it, so it is lower than the "
                      f"scan's own low dose would give", stacklevel=2)
    return degradations.ct_low_dose(hq, dose, seed, pixel_mm=pixel_mm), hq


PHANTOM_COUNTS = (32, 4, 16)   # train / val / test phantoms: 16 test images pair the rows of a smoke table


def phantom_cases(modality: str, counts: tuple[int, int, int] = PHANTOM_COUNTS, size: int = 128,
                  seed: int = 0, ct_dose: float = CT_PHANTOM_DOSE) -> dict[str, list[Case]]:
    """Phantom pairs, one per case; split s uses seeds ``seed * 10^6 + s * 10^5 + i`` (disjoint)."""
    if modality not in SCAN:
        raise ValueError(f"unknown modality {modality!r}; expected one of {', '.join(SCAN)}")
    out = {}
    for s, (split, count) in enumerate(zip(SPLITS, counts)):
        seeds = [seed * 10 ** 6 + s * 10 ** 5 + i for i in range(count)]
        out[split] = [Case(f"{modality}-{x}", 1, lambda x=x: tuple(a[None] for a in phantom_pair(modality, size, x, ct_dose)))
                      for x in seeds]
    return out

