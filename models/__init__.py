"""The backbone zoo. Importing this package registers every model (here and in timm), then the
models of installed packages with a ``medir_bench.models`` entry point and of the modules named
in ``MEDIR_BENCH_IMPORTS`` (``models._plugins``).

>>> import models
>>> model = models.create_model("restore_rwkv_tiny", wkv="bi", shift="quad")
>>> models.import_models(["my_model.py"])          # a researcher's own file registers its models
"""
from ._registry import (TINY_DIVISOR, TINY_FLOOR, ModelInfo, check_options, create_model, list_models, load_checkpoint, model_info,
                        models_using, register_model)
from ._contract import RestorationModel
from ._signature import network_signature
from ._input import check_image, pad_image
from . import airnet, amir, argan, ctformer, dcnn_pet, drmc, edsr, eformer, mambair, rat, redcnn, restore_rwkv, restormer, rwkv_ir, srcnn, swinir, vdsr, xformer, xiang_pet  # noqa: F401  (each registers its presets)
from ._plugins import (ModelImportError, ensure_model, import_models, imported_modules, load_entry_points,
                       load_inherited, model_source)

REFERENCE_MODEL = "restore_rwkv"      # the paper's model (Yang et al.): a grid's model.name unless it names one

load_entry_points()
load_inherited()          # the --import modules of the process that started this one

__all__ = ["REFERENCE_MODEL", "TINY_DIVISOR", "TINY_FLOOR", "ModelImportError", "ModelInfo", "model_info", "RestorationModel", "check_image", "check_options", "create_model", "ensure_model", "import_models",
           "imported_modules", "list_models", "load_checkpoint", "load_entry_points", "load_inherited", "model_source", "models_using", "network_signature", "pad_image",
           "register_model"]
