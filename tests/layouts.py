"""Raw data in the real sets' layouts and sizes, for the rehearsal (``tests/rehearsal.py``) and the
tests: what a researcher downloads, with made-up anatomy.

- IXI T2: ``IXI<id>-<site>-<n>-T2.nii.gz``, 256 x 256 x 130 int16 volumes, 0.9375 x 0.9375 x 1.2 mm
  voxels, axial (the third axis runs foot to head); 578 subjects in the real set.
- AAPM Low-Dose CT Grand Challenge: one folder per patient (``L067`` ...), each with
  ``full_1mm/ quarter_1mm/ full_3mm/ quarter_3mm/`` series of 512 x 512 DICOM slices stored as
  unsigned 16-bit with RescaleSlope 1 and RescaleIntercept -1024, PixelSpacing and
  ReconstructionDiameter of a 340-380 mm field, ImagePositionPatient and SliceLocation along the
  table. The paper's split has 2,039 / 128 / 211 one-millimetre slices (8 / 1 / 1 patients):
  ``AAPM_SLICES`` gives each patient that many, in name order.
- PET pairs: ``hq/`` and ``lq/`` float32 NIfTI volumes of 192 x 192 x 400 with equal names (the
  paper's set is 159 subjects; its low-count image is simulated here by thinning the counts).

Every generator is deterministic in its seed and writes one subject at a time (memory: one volume).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

IXI_SHAPE, IXI_VOXEL_MM = (256, 256, 130), (0.9375, 0.9375, 1.2)
IXI_SITES = ("Guys", "HH", "IOP")
AAPM_PATIENTS = ("L067", "L096", "L109", "L143", "L192", "L286", "L291", "L310", "L333", "L506")
AAPM_SLICES = (318, 224, 255, 318, 234, 240, 214, 236, 128, 211)     # 2,039 train / 128 val / 211 test
AAPM_SIZE = 512
PET_SHAPE = (192, 192, 400)


def _ellipse(shape: tuple[int, int], centre, axes) -> np.ndarray:
    y, x = np.ogrid[:shape[0], :shape[1]]
    return ((y - centre[0]) / max(axes[0], 1e-3)) ** 2 + ((x - centre[1]) / max(axes[1], 1e-3)) ** 2 <= 1


def _head_slice(rng, shape, z: float, size: float) -> np.ndarray:
    """A T2-weighted axial head slice at height ``z`` in [-1, 1] (scanner units, Rician-like noise)."""
    scale = np.sqrt(max(1 - z * z, 0.0)) * size
    centre = (shape[0] / 2, shape[1] / 2)
    image = np.zeros(shape, dtype=np.float32)
    image[_ellipse(shape, centre, (105 * scale, 85 * scale))] = 150          # scalp and skull
    image[_ellipse(shape, centre, (97 * scale, 77 * scale))] = 900           # CSF, bright in T2
    image[_ellipse(shape, centre, (92 * scale, 72 * scale))] = 620           # grey matter
    image[_ellipse(shape, centre, (75 * scale, 56 * scale))] = 450           # white matter
    image[_ellipse(shape, (centre[0], centre[1] - 12 * scale), (14 * scale, 5 * scale))] = 950   # ventricles
    image[_ellipse(shape, (centre[0], centre[1] + 12 * scale), (14 * scale, 5 * scale))] = 950
    noisy = np.hypot(image + rng.normal(0, 12, shape), rng.normal(0, 12, shape))
    return noisy.astype(np.float32)


def write_ixi(folder, subjects: int, shape=IXI_SHAPE, seed: int = 0) -> list[Path]:
    """``subjects`` IXI T2 volumes (ids from 2, sites in turn) in ``folder``."""
    import nibabel as nib
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    affine = np.diag([-IXI_VOXEL_MM[0], IXI_VOXEL_MM[1], IXI_VOXEL_MM[2], 1.0])
    affine[:3, 3] = [shape[0] * IXI_VOXEL_MM[0] / 2, -shape[1] * IXI_VOXEL_MM[1] / 2, -shape[2] * IXI_VOXEL_MM[2] / 2]
    paths = []
    for i in range(subjects):
        rng = np.random.default_rng([seed, i])
        size = rng.uniform(0.9, 1.1)
        volume = np.stack([_head_slice(rng, shape[:2], z, size) for z in np.linspace(-0.95, 0.95, shape[2])], axis=2)
        image = nib.Nifti1Image(np.clip(volume, 0, 32767).astype(np.int16), affine)
        image.header.set_xyzt_units("mm")
        path = folder / f"IXI{i + 2:03d}-{IXI_SITES[i % 3]}-{1000 + i}-T2.nii.gz"
        nib.save(image, path)
        paths.append(path)
    return paths


def _body_slice(rng, z: float, size: int = AAPM_SIZE) -> np.ndarray:
    """An abdominal CT slice in HU at table position ``z`` (mm), noise-free."""
    image = np.full((size, size), -1000.0, dtype=np.float32)
    c = size / 2
    image[_ellipse(image.shape, (c, c), (160, 230))] = -100                  # fat
    image[_ellipse(image.shape, (c, c), (145, 212))] = 45                    # muscle and organs
    image[_ellipse(image.shape, (c - 20, c - 70), (70, 80 + 10 * np.sin(z / 40)))] = 60     # liver
    image[_ellipse(image.shape, (c + 95, c), (22, 22))] = 700                # spine
    for _ in range(3):                                                       # small lesions
        y, x = rng.uniform(c - 60, c + 60, 2)
        image[_ellipse(image.shape, (y, x), (6, 6))] = 80
    return image


def _write_ct_dicom(path: Path, hu: np.ndarray, *, z: float, thickness: float, number: int, patient: str,
                    series_uid: str, study_uid: str, pixel_mm: float, description: str) -> None:
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "CT", patient, study_uid, series_uid
    ds.SeriesDescription, ds.InstanceNumber = description, number
    ds.Rows, ds.Columns = hu.shape
    ds.PixelSpacing = [pixel_mm, pixel_mm]
    ds.ReconstructionDiameter = round(pixel_mm * hu.shape[1], 3)
    ds.SliceThickness, ds.KVP, ds.ConvolutionKernel = thickness, 100, "B30f"
    ds.ImagePositionPatient = [-pixel_mm * hu.shape[1] / 2, -pixel_mm * hu.shape[0] / 2, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.SliceLocation = z
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = np.clip(np.round(hu + 1024), 0, 4095).astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_aapm(root, slices=AAPM_SLICES, size: int = AAPM_SIZE, thick_series: bool = True, seed: int = 0) -> int:
    """AAPM patient folders under ``root``, patient ``i`` with ``slices[i]`` 1 mm slice pairs (and,
    with ``thick_series``, the 3 mm series of the same range); returns the 1 mm pairs written.
    Full-dose noise 10 HU; quarter dose adds sqrt(3) x that (noise goes as dose^-1/2)."""
    from pydicom.uid import generate_uid
    root = Path(root)
    for i, count in enumerate(slices):
        patient = AAPM_PATIENTS[i] if i < len(AAPM_PATIENTS) else f"L{900 + i}"
        rng = np.random.default_rng([seed, i])
        pixel_mm = round(rng.uniform(340, 380) / size, 4)
        study = generate_uid()
        series = [("1mm", 1.0, count)] + ([("3mm", 3.0, max(count // 3, 1))] if thick_series else [])
        for name, thickness, n in series:
            uids = {dose: generate_uid() for dose in ("full", "quarter")}
            for dose in uids:
                (root / patient / f"{dose}_{name}").mkdir(parents=True, exist_ok=True)
            for k in range(n):
                z = -100.0 - k * thickness
                full = _body_slice(rng, z, size) + rng.normal(0, 10, (size, size))
                quarter = full + rng.normal(0, 10 * np.sqrt(3), (size, size))
                for dose, hu, code in (("full", full, "FD"), ("quarter", quarter, "QD")):
                    _write_ct_dicom(root / patient / f"{dose}_{name}" / f"{patient}_{code}_{int(thickness)}_1.CT.0001.{k + 1:04d}.IMA",
                                    hu, z=z, thickness=thickness, number=k + 1, patient=patient,
                                    series_uid=uids[dose], study_uid=study, pixel_mm=pixel_mm,
                                    description=f"{dose} dose {name}")
    return int(sum(slices))


def _pet_volume(rng, shape) -> np.ndarray:
    """Whole-body activity (SUV-like units) along the third axis: brain, heart, liver, bladder."""
    z = np.linspace(0, 1, shape[2])
    volume = np.zeros(shape, dtype=np.float32)
    c = (shape[0] / 2, shape[1] / 2)
    for k, height in enumerate(z):
        width = 0.35 if height > 0.85 else 0.45 if height > 0.2 else 0.3
        image = np.zeros(shape[:2], dtype=np.float32)
        image[_ellipse(shape[:2], c, (shape[0] * width * 0.7, shape[1] * width))] = 1.0
        if height > 0.88:
            image[_ellipse(shape[:2], c, (shape[0] * 0.22, shape[1] * 0.18))] = 8.0          # brain
        elif 0.62 < height < 0.72:
            image[_ellipse(shape[:2], (c[0], c[1] + 12), (14, 14))] = 4.0                   # heart
        elif 0.45 < height < 0.6:
            image[_ellipse(shape[:2], (c[0], c[1] - 25), (30, 24))] = 2.5                   # liver
        elif 0.2 < height < 0.26:
            image[_ellipse(shape[:2], c, (12, 12))] = 20.0                                  # bladder
        volume[:, :, k] = image * rng.uniform(0.9, 1.1)
    return volume


def write_pet(root, subjects: int, shape=PET_SHAPE, counts_ratio: float = 0.25, seed: int = 0) -> list[str]:
    """``subjects`` PET pairs as ``hq/`` and ``lq/`` NIfTI volumes; the low-count image has the
    counts of ``counts_ratio`` of the full acquisition (Poisson), rescaled to the same units."""
    import nibabel as nib
    root = Path(root)
    for sub in ("hq", "lq"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    names = []
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    for i in range(subjects):
        rng = np.random.default_rng([seed, i])
        truth = _pet_volume(rng, shape)
        counts = 40.0                                                      # counts per SUV unit, full dose
        hq = rng.poisson(truth * counts).astype(np.float32) / counts
        lq = rng.poisson(truth * counts * counts_ratio).astype(np.float32) / (counts * counts_ratio)
        name = f"sub-{i + 1:03d}.nii.gz"
        nib.save(nib.Nifti1Image(hq, affine), root / "hq" / name)
        nib.save(nib.Nifti1Image(lq, affine), root / "lq" / name)
        names.append(name)
    return names
