"""The model registry: ``register_model`` / ``create_model`` / ``list_models``.

Every entry point registered here is also registered with timm, so that after
``import models`` a name works with ``timm.create_model(name)`` too.
"""
from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import sys
import warnings
from typing import Callable

import torch.nn as nn
from timm.models import register_model as _timm_register_model

from ._contract import adapt

_ENTRYPOINTS: dict[str, Callable[..., nn.Module]] = {}
_MODULE_OF: dict[str, str] = {}          # name -> the module that registered it
_PAPER: dict[str, dict] = {}             # name -> its registration's metadata (ModelInfo's fields)


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a preset (``model_info``).

    ``paper``: the method's name in the paper's Tables 1-4 (Yang et al.), whose row of
    ``benchmark/results/paper_tables.csv`` holds its published parameters and MACs (the one copy of
    the paper's numbers: the tests and the renderer read it there); None for presets the paper does
    not list. ``paper_input``: the input shape of its MAC count; ``paper_tolerance``: 0 where our
    model reproduces the count exactly, the allowed relative difference where no official code
    exists (the model's file says how it was sized). ``ops``: the kernel ops the model calls, which
    the op benchmarks and the GPU check select models by (``check_model`` checks the declaration
    against the built model). ``converter``: maps a checkpoint of the authors' code to this
    suite's ``state_dict`` keys (``load_checkpoint``), as timm registers a ``pretrained_filter_fn``
    with its builder."""
    name: str
    family: str                          # the name without _tiny / _light
    tiny: str | None                     # the family's <family>_tiny preset, when registered
    module: str
    paper: str | None = None
    paper_input: tuple[int, ...] = (1, 1, 128, 128)
    paper_tolerance: float = 0.0
    ops: tuple[str, ...] = ()            # the kernel ops it calls ("wkv", "scan"): models.ops.backends
    converter: Callable[[dict], dict] | None = None   # the authors' checkpoint -> this suite's keys
    floored: bool = False                # a tiny preset raised to TINY_FLOOR (see TINY_FLOOR)
    widened: str = ""                    # a tiny preset wider than the rule, and why (see TINY_FLOOR)


def module_file(module: str) -> str | None:
    """The source file of an imported module (None for one without a file)."""
    return getattr(sys.modules.get(module), "__file__", None)


def registered_by(name: str) -> str:
    """The module that registered ``name`` (``KeyError`` if none did)."""
    return _MODULE_OF[name]

# Every ``<name>_tiny`` preset (CPU tests and smoke runs) has the paper's parameter count of
# ``<name>`` divided by this one factor, within +-30%, so that a smoke table keeps the paper's size
# ratios between families. 150 keeps restore_rwkv_tiny, the main job's model, at its size.
TINY_DIVISOR = 150
# ... unless that is under TINY_FLOOR trainable parameters, too few to learn at smoke scale: then the
# full preset's widths are scaled uniformly (one factor, each width rounded) to the smallest size of
# at least TINY_FLOOR, its depth and layer structure kept, and the preset is registered floored=True
# (tables mark its rows). Today SRCNN, Xiang's and Eformer (the paper's sizes / 150: 382, 1,529, 2,294).
# A preset that keeps the rule but was measured not to learn at smoke scale because a layer is too
# narrow is widened instead, registered with ``widened=`` saying why (tables mark its rows the same
# way): today RED-CNN (8-filter ReLU layers die) and CTformer (2 channels per token); see
# docs/calibration.md.
TINY_FLOOR = 4000


def register_model(fn: Callable[..., nn.Module] | None = None, *, paper: str | None = None,
                   paper_input: tuple[int, ...] = (1, 1, 128, 128), paper_tolerance: float = 0.0,
                   ops: tuple[str, ...] = (), converter: Callable[[dict], dict] | None = None,
                   floored: bool = False, widened: str = ""):
    """Register a preset function under its ``__name__`` (here and in timm's registry); as
    ``@register_model`` or, with metadata (see ``ModelInfo``),
    ``@register_model(paper="MambaIR", ops=("scan",), converter=convert_official_state_dict)``."""
    if fn is None:
        return functools.partial(register_model, paper=paper, paper_input=tuple(paper_input),
                                 paper_tolerance=paper_tolerance, ops=tuple(ops), converter=converter,
                                 floored=floored, widened=widened)
    name = fn.__name__
    previous = _MODULE_OF.get(name)
    reimport = previous is not None and module_file(previous) == module_file(fn.__module__) is not None
    if previous is not None and not reimport:       # the same file imported again may register again
        raise ValueError(f"model {name!r} is registered twice: by {previous} ({module_file(previous)}) and by "
                         f"{fn.__module__} ({module_file(fn.__module__)}); rename one of them")
    _ENTRYPOINTS[name] = fn
    _MODULE_OF[name] = fn.__module__
    _PAPER[name] = {"paper": paper, "paper_input": tuple(paper_input), "paper_tolerance": paper_tolerance,
                    "ops": tuple(ops), "converter": converter, "floored": floored, "widened": widened}

    @functools.wraps(fn)
    def timm_entrypoint(pretrained: bool = False, pretrained_cfg=None, pretrained_cfg_overlay=None,
                        cache_dir=None, **kwargs) -> nn.Module:
        # timm passes its own loading options; this suite ships no pretrained weights.
        if pretrained:
            raise ValueError(f"{name}: no pretrained weights are shipped; load a checkpoint with "
                             f"models.load_checkpoint({name!r}, path) (the authors' checkpoints through the "
                             "converter registered with the model)")
        return create_model(name, **kwargs)

    with warnings.catch_warnings():
        if reimport:
            warnings.simplefilter("ignore")          # timm's "Overwriting ..." for our own re-registration
        _timm_register_model(timm_entrypoint)
    return fn


def create_model(name: str, **overrides) -> nn.Module:
    """Build the registered model ``name``; keyword overrides that are ``None`` are ignored. A preset
    that returns a plain ``nn.Module`` gets the contract's defaults (``models._contract.adapt``)."""
    if name not in _ENTRYPOINTS:
        close = difflib.get_close_matches(name, _ENTRYPOINTS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else f"; registered: {', '.join(list_models())}"
        raise ValueError(f"unknown model {name!r}{hint}")
    kwargs = {k: v for k, v in overrides.items() if v is not None}
    return adapt(_ENTRYPOINTS[name](**kwargs))       # any module that takes the image keeps the contract


def model_info(name: str) -> ModelInfo:
    """The registry's metadata of ``name`` (``ValueError`` for an unknown one, as ``create_model``)."""
    if name not in _ENTRYPOINTS:
        create_model(name)
    family = name.removesuffix("_tiny").removesuffix("_light")
    tiny = f"{family}_tiny" if f"{family}_tiny" in _ENTRYPOINTS else None
    return ModelInfo(name, family, tiny, _MODULE_OF[name], **_PAPER[name])


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by a shell-style pattern such as ``'restore_*'``."""
    names = sorted(_ENTRYPOINTS)
    if pattern is not None:
        names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    return names


def models_using(op: str) -> list[str]:
    """Sorted registered names whose registration declares the kernel op ``op`` (``ModelInfo.ops``)."""
    return [name for name in list_models() if op in _PAPER[name]["ops"]]


def load_checkpoint(name: str, checkpoint, official: bool = False, **overrides) -> nn.Module:
    """Build ``name`` and load ``checkpoint`` (a path, read with ``torch.load(weights_only=True)``
    so that nothing in the file can run code, or a state dict) strictly. ``official``: the
    checkpoint comes from the authors' code, and the converter registered with the model maps its
    keys first (a ``ValueError`` names the model when none is registered)."""
    import torch
    state = checkpoint
    if not isinstance(checkpoint, dict):
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]                      # a training checkpoint wraps its weights
    model = create_model(name, **overrides)
    if official:
        converter = model_info(name).converter
        if converter is None:
            raise ValueError(f"{name}: no checkpoint converter is registered with this model; register one with "
                             "@register_model(converter=...) or load a state dict in this suite's keys")
        state = converter(state)
    model.load_state_dict(state, strict=True)
    return model


def check_options(name: str, options: dict) -> None:
    """Raise a ``ValueError`` naming what is wrong with constructor ``options`` for the registered
    ``name``: an unknown option (against the constructor's parameters), a value of the wrong type
    (its annotation, ``models.schema``) or one the constructor refuses. Builds the family's tiny
    preset (cheap; the full preset takes the same options)."""
    import inspect
    from .schema import check_option_types
    probe = name if name.endswith("_tiny") or f"{name}_tiny" not in _ENTRYPOINTS else f"{name}_tiny"
    model_class = type(create_model(probe))
    valid = [p for p in inspect.signature(model_class.__init__).parameters if p not in ("self", "kwargs")]
    unknown = [key for key in options if key not in valid]
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)}; expected options among {', '.join(valid)}")
    try:
        check_option_types(model_class.__init__, options)
        create_model(probe, **options)
    except TypeError as err:
        raise ValueError(str(err)) from None
