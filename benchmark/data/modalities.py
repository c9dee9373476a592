"""The modalities and their normalisation ranges in physical units (Restore-RWKV, Sec. 4.1): CT in
HU, MRI in scanner units (12 bit), PET in SUV. Training maps each range to [0, 1]."""
RANGES = {"ct": (-1024.0, 3072.0), "mri": (0.0, 4095.0), "pet": (0.0, 20.0)}
