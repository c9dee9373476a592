"""Reading images in physical units from NIfTI (nibabel), DICOM (pydicom) and NumPy files.

``read_image(path)`` returns a float32 2D or 3D array; DICOM pixel values go through
RescaleSlope / RescaleIntercept (HU for CT). Anything that cannot be read, or holds NaN or infinite
values, raises ``DataError`` naming the file and what was wrong.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm", ".ima")
NUMPY_SUFFIXES = (".npy",)
AIR_HU = -500.0            # below this a CT pixel is air (or the scanner's padding outside its field)
SPACING_TOLERANCE = 0.05   # PixelSpacing x Columns and ReconstructionDiameter agree within 5%


class DataError(ValueError):
    """A data file or folder that cannot be used; the message names it and says what was wrong."""


def kind_of(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(DICOM_SUFFIXES):
        return "dicom"
    if name.endswith(NUMPY_SUFFIXES):
        return "numpy"
    return None


def _checked(path: Path, array: np.ndarray) -> np.ndarray:
    array = np.asarray(array, dtype=np.float32)
    if array.ndim not in (2, 3):
        raise DataError(f"{path}: expected a 2D image or a 3D volume; got shape {array.shape}")
    if array.size == 0:
        raise DataError(f"{path}: the image is empty (shape {array.shape})")
    if not np.isfinite(array).all():
        raise DataError(f"{path}: contains {int((~np.isfinite(array)).sum())} NaN or infinite values")
    return array


def read_dicom(path: Path):
    """The pydicom dataset and its pixels in physical units (slope and intercept applied)."""
    import pydicom
    from pydicom.errors import InvalidDicomError
    try:
        ds = pydicom.dcmread(path)
        pixels = ds.pixel_array.astype(np.float32)
    except (InvalidDicomError, AttributeError, KeyError, ValueError, OSError, EOFError) as err:
        raise DataError(f"{path}: not a readable DICOM image ({type(err).__name__}: {err})") from None
    slope = float(getattr(ds, "RescaleSlope", 1.0))
    intercept = float(getattr(ds, "RescaleIntercept", 0.0))
    return ds, _checked(path, pixels * slope + intercept)


def shows_whole_field(image_hu) -> bool:
    """Whether a CT slice holds its whole reconstructed field of view: at least 90% of its border
    pixels are air (below -500 HU) or padding, so no tissue is cut off at its edges."""
    image = np.asarray(image_hu)
    border = np.concatenate([image[0], image[-1], image[1:-1, 0], image[1:-1, -1]])
    return bool((border < AIR_HU).mean() >= 0.9)


def _dicom_spacing(path: Path) -> tuple[float, float] | None:
    """(rows, columns) pixel size of a DICOM slice in mm, checked against its ReconstructionDiameter.

    When PixelSpacing x Columns spans less than the reconstruction's diameter (by more than 5%), the
    image is either a crop of the reconstruction (PixelSpacing right) or the whole reconstruction
    resampled with its PixelSpacing kept (ReconstructionDiameter / Columns right). The image tells
    which: a whole field has air at its border (``shows_whole_field``), a crop cuts through tissue.
    The choice is reported in a warning naming the file."""
    import pydicom
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as err:
        raise DataError(f"{path}: not a readable DICOM file ({type(err).__name__}: {err})") from None
    spacing = ds.get("PixelSpacing")
    if spacing is None or len(spacing) < 2:
        return None
    rows, cols = (float(v) for v in spacing[:2])
    diameter, columns = ds.get("ReconstructionDiameter"), ds.get("Columns")
    if diameter is None or not columns or abs(rows - cols) > 1e-6 * max(rows, cols):
        return rows, cols
    diameter, columns = float(diameter), int(columns)
    span, field = cols * columns, float(diameter) / columns
    if span >= diameter * (1 - SPACING_TOLERANCE):
        return rows, cols
    if shows_whole_field(read_dicom(path)[1]):
        chosen, why = field, ("the image shows its whole field (air all around its border): it was resampled from "
                              "the reconstruction and its PixelSpacing kept")
    else:
        chosen, why = cols, ("the image cuts through tissue at its border: it is a crop of the reconstruction, "
                             "at the header's spacing")
    warnings.warn(f"{path}: PixelSpacing {cols:.6g} mm x {columns} columns = {span:.1f} mm, but the "
                  f"ReconstructionDiameter is {diameter:.1f} mm ({field:.6g} mm per pixel); using {chosen:.6g} mm: "
                  f"{why}", stacklevel=3)
    return chosen, chosen


def pixel_spacing_mm(path) -> float | None:
    """The in-plane pixel size of an image file in mm (DICOM PixelSpacing, checked against
    ReconstructionDiameter / Columns by ``_dicom_spacing``; NIfTI voxel sizes; None for NumPy files
    or headers without it). Non-square pixels are refused: the simulators assume square ones."""
    path = Path(path)
    kind = kind_of(path)
    if kind == "dicom":
        spacing = _dicom_spacing(path)
    elif kind == "nifti":
        import nibabel as nib
        spacing = nib.load(path).header.get_zooms()[:2]
    else:
        return None
    if spacing is None or len(spacing) < 2:
        return None
    rows, cols = (float(v) for v in spacing[:2])
    if abs(rows - cols) > 1e-6 * max(rows, cols):
        raise DataError(f"{path}: pixels of {rows} x {cols} mm are not square")
    return rows


def read_image(path) -> np.ndarray:
    """One 2D image or 3D volume in physical units (float32)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    kind = kind_of(path)
    if kind == "nifti":
        import nibabel as nib
        try:
            array = np.asarray(nib.load(path).get_fdata(dtype=np.float32))
        except Exception as err:  # nibabel raises several types for truncated or corrupt files
            raise DataError(f"{path}: not a readable NIfTI file ({type(err).__name__}: {err})") from None
        return _checked(path, np.squeeze(array))
    if kind == "dicom":
        return read_dicom(path)[1]
    if kind == "numpy":
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise DataError(f"{path}: not a readable .npy file ({err})") from None
        return _checked(path, array)
    raise DataError(f"{path}: unknown image format; expected one of "
                    f"{', '.join(NIFTI_SUFFIXES + DICOM_SUFFIXES + NUMPY_SUFFIXES)}")
