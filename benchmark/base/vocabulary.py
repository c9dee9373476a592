"""The one vocabulary of tasks and modalities (the configuration, the data CLI, the data sets, the
metrics and the renderer use these names; and the harness), and the modalities'
normalisation ranges in physical units (Restore-RWKV, Sec. 4.1): CT in HU, MRI in scanner units
(12 bit), PET in SUV. Training maps each range to [0, 1]."""
# task -> the single tasks its samples come from (all-in-one mixes the three)
ALL_IN_ONE = "all_in_one"
MODALITIES = ("mri", "ct", "pet")
TASKS = {"mri_sr": ("mri_sr",), "ct_denoise": ("ct_denoise",), "pet_synthesis": ("pet_synthesis",),
         "all_in_one": ("mri_sr", "ct_denoise", "pet_synthesis")}
MODALITY = {"mri_sr": "mri", "ct_denoise": "ct", "pet_synthesis": "pet"}
TASK_TITLES = {"mri_sr": "MRI super-resolution", "ct_denoise": "CT denoising", "pet_synthesis": "PET synthesis"}

RANGES = {"ct": (-1024.0, 3072.0), "mri": (0.0, 4095.0), "pet": (0.0, 20.0)}
UNITS = {"ct": "HU", "mri": "scanner units", "pet": "SUV"}

# Values a prepared dataset may hold, in physical units: far wider than the training ranges (real
# data exceed them: metal in CT, hot spots in PET), narrow enough to refuse garbage such as 1e30.
PLAUSIBLE = {"ct": (-32768.0, 32767.0), "mri": (-65536.0, 65536.0), "pet": (-100.0, 10000.0)}

# Display windows: CT in the paper's metric window (HU); MRI and PET, whose scanner units vary from
# image to image, between the 0.5th and 99.5th percentiles of the image shown (its ground truth).
CT_WINDOW = (-160.0, 240.0)
DISPLAY_PERCENTILES = (0.5, 99.5)


def display_window(reference, modality: str) -> tuple[float, float]:
    """(low, high) in physical units for showing images of ``modality`` beside ``reference`` (the
    ground truth, an array): the CT window, else the reference's display percentiles."""
    if modality == "ct":
        return CT_WINDOW
    import numpy as np
    low, high = (float(v) for v in np.percentile(np.asarray(reference, dtype=np.float64), DISPLAY_PERCENTILES))
    return (low, high) if high > low else (low, low + 1.0)
