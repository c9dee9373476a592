"""The backbone zoo. Importing this package registers every model (here and in timm).

>>> import models
>>> model = models.create_model("restore_rwkv_tiny", wkv="bi", shift="quad")
"""
from ._registry import TINY_DIVISOR, create_model, list_models, register_model
from . import airnet, amir, argan, ctformer, dcnn_pet, drmc, edsr, eformer, mambair, redcnn, restore_rwkv, restormer, srcnn, swinir, vdsr, xformer, xiang_pet  # noqa: F401  (each registers its presets)

__all__ = ["TINY_DIVISOR", "create_model", "list_models", "register_model"]
