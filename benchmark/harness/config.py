"""Run configurations: the defaults, the two scales, dotted overrides and validation. Pure: no I/O.

A resolved configuration is a plain nested dict; every key it may hold is in ``DEFAULTS`` and is
declared in ``KEYS`` (its type and range, ``models.schema``: the same declarations as the SLURM
profiles and the models' options; the free-form ``model.options`` are checked by the model). It is merged, in
this order, from ``DEFAULTS``, the scale (``smoke`` or ``paper``), the grid's ``base``, the grid
cell's axis values and the command line's ``--set key=value``.
"""
from __future__ import annotations

import copy
import typing
import warnings
from typing import Annotated, Literal

import models
from models import schema
from models.ops.precision import PRECISIONS
from models.ops import backends       # importing models.ops registers every kernel op and its backends
from models.schema import Range, Says

from benchmark.base.vocabulary import MODALITY, TASKS   # the one vocabulary of tasks and modalities
from benchmark.base.yamlfile import load_yaml

DEFAULTS: dict = {
    "task": "mri_sr",
    "seed": 0,
    "device": "auto",                 # auto: cuda when available, else cpu
    "model": {
        "name": models.REFERENCE_MODEL,  # the paper's model, unless the grid names another
        "size": "full",               # full: the named preset; tiny: its <name>_tiny preset
        "options": {},                # constructor options (the ablations), checked by the model
    },
    "data": {
        "sources": {"mri_sr": "data/mri", "ct_denoise": "data/ct", "pet_synthesis": "data/pet"},
        "phantom_size": 128,          # image side of phantom-<modality> sources
        "seed": 0,                    # phantom-<modality> data: fixed, so every seed and cell sees the same images
        "phantom_ct_dose": 0.25,      # phantom-ct: the low dose, a fraction of the full dose (AAPM: a quarter)
    },
    "train": {                        # the paper's protocol (Sec. 4.1)
        "iters": 30000,
        "batch": 4,
        "crop": 128,
        "lr": 2e-4,
        "lr_min": 1e-6,               # cosine annealing from lr to lr_min
        "warmup": 0,                  # linear warm-up iterations before the cosine (the paper uses none)
        "betas": [0.9, 0.999],        # Adam
        "loss": "l1",
        "aux_weight": 0.01,           # AMIR's load-balancing loss, AirNet's contrastive loss
        "val_every": 1000,
        "val_images": 32,
        "checkpoint_every": 1000,
        # <op>_backend for every kernel op (models.ops.backends): "auto", or one of the op's backends
        "precision": "fp32",          # bf16: the training step under bfloat16 autocast (kernel ops stay fp32)
        "grad_clip": None,            # the largest global gradient norm (scaled down above it); None: off, as in the paper
        "min_gain": 0.5,              # dB over the validation inputs below which a finished run "did not learn"
    },
    "test": {"images": None},         # None: the whole test split
    "profile": {"size": 128, "latency_repeat": 5},
    "erf": {"images": 16, "size": 128},
    # The backend of each kernel op (models.ops.backends) for training, testing, profiling and ERF:
    # "auto" (the fastest that runs on the device) or one of the op's backends.
    "kernels": {"wkv": "auto", "scan": "auto"},
}
# Keys that moved: the old spelling still works (a FutureWarning names the new one).
RENAMED = {"train.wkv_backend": "kernels.wkv", "train.scan_backend": "kernels.scan"}

SCALES: dict[str, dict] = {
    "paper": {},
    "smoke": {
        "model": {"size": "tiny"},
        # phantom-ct at 1/16 of the full dose (the paper's data: 1/4): at a quarter the full-dose
        # target's own noise caps a perfect denoiser's gain at +4.9 dB and the tiny models level off
        # near +2.3 dB, so a run that learned and one that did not lie within the spread between
        # machines; at 1/16 the cap is +12 dB (docs/calibration.md).
        "data": {"sources": {"mri_sr": "phantom-mri", "ct_denoise": "phantom-ct", "pet_synthesis": "phantom-pet"},
                 "phantom_ct_dose": 0.0625},
        # Calibrated on 2 CPU cores (docs/calibration.md): many small steps learn more per second
        # than few large ones (a batch-1 step costs ~50 ms), and a 20x larger learning rate than the
        # paper's, reached by a linear warm-up over a fifth of the steps. At the top of the warm-up,
        # Adam's second moment with beta2 = 0.999 lags a sudden growth of the gradient and the update
        # blows up (1 seed in 5 of the paper's model collapsed to "output = input"); beta2 = 0.99 and
        # clipping the gradient norm at 0.5 prevent it. 1,200 steps: at 800 the weakest run of the main
        # job cleared min_gain = 2 dB by 0.2 dB under another reduction order; at 1,200 by 2.1 dB.
        "train": {"iters": 1200, "batch": 1, "crop": 64, "lr": 4e-3, "warmup": 240, "betas": [0.9, 0.99],
                  "val_every": 100, "val_images": 4, "checkpoint_every": 100, "grad_clip": 0.5, "min_gain": 2.0},
        "test": {"images": None},
        "profile": {"latency_repeat": 3},
        "erf": {"images": 8},
    },
}

assert set(DEFAULTS["kernels"]) == set(backends.OPS), "every kernel op has its kernels: key"

# What each key may hold (models.schema: a type hint, with its range and words); model.options are
# checked by the model's own annotations (models.check_options), data.sources below.
PositiveInt = Annotated[int, Range(min=1)]
NonNegativeInt = Annotated[int, Range(min=0)]
KEYS = {
    "task": Literal[tuple(TASKS)], "seed": NonNegativeInt, "device": Literal["auto", "cpu", "cuda"],
    "model.name": str, "model.size": Literal["full", "tiny"], "model.options": Annotated[dict, Says("a mapping")],
    "data.sources": dict, "data.phantom_size": PositiveInt, "data.seed": NonNegativeInt,
    "data.phantom_ct_dose": Annotated[float, Range(above=0, below=1)],
    "train.iters": PositiveInt, "train.batch": PositiveInt, "train.crop": PositiveInt,
    "train.lr": Annotated[float, Range(above=0)], "train.lr_min": Annotated[float, Range(min=0)],
    "train.warmup": NonNegativeInt,
    "train.betas": Annotated[tuple[float, float], Range(min=0, below=1), Says("two numbers in [0, 1)")],
    "train.loss": Literal["l1", "l2"], "train.aux_weight": Annotated[float, Range(min=0)],
    "train.val_every": PositiveInt, "train.val_images": PositiveInt, "train.checkpoint_every": PositiveInt,
    "train.precision": Literal[PRECISIONS],
    "train.grad_clip": Annotated[float | None, Range(above=0),
                                 Says("a positive number (the largest gradient norm) or null (no clipping)")],
    "train.min_gain": float,
    **{f"kernels.{kind}": Literal[names] for kind, names in backends.OPS.items()},
    "test.images": PositiveInt | None, "profile.size": PositiveInt, "profile.latency_repeat": PositiveInt,
    "erf.images": PositiveInt, "erf.size": PositiveInt,
}
FREE_FORM = {"model.options"}


class ConfigError(ValueError):
    """A configuration that names an unknown key or holds a value of the wrong kind."""


class _SomeOptions(dict):
    """Model options set one by one (``model.options.shift=uni``): merged into the options already
    set, where a whole ``model.options: {...}`` mapping replaces them."""


def merge(base: dict, update: dict) -> dict:
    """``base`` with ``update`` merged in, recursively (dicts merge, everything else replaces; a
    whole ``options`` mapping replaces the options, options set one by one are merged)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and (
                key != "options" or isinstance(value, _SomeOptions)):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(dict(value) if isinstance(value, _SomeOptions) else value)
    return out


def nest(dotted: dict) -> dict:
    """``{"train.iters": 5}`` -> ``{"train": {"iters": 5}}``."""
    out: dict = {}
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, _SomeOptions() if part == "options" else {})
            if not isinstance(node, dict):
                raise ConfigError(f"key {key!r} conflicts with another value for {part!r}")
        node[leaf] = value
    return out


def parse_override(text: str) -> tuple[str, object]:
    """``"train.iters=500"`` -> ``("train.iters", 500)``; the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected key=value, e.g. train.iters=500")
    return key.strip(), load_yaml(value) if value.strip() else None


def leaves(tree: dict, prefix: str = ""):
    """``(dotted key, value)`` of every leaf (``model.options`` and ``data.sources`` are leaves)."""
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and path not in FREE_FORM and path != "data.sources":
            yield from leaves(value, path + ".")
        else:
            yield path, value


def renamed(layer: dict, where: str) -> dict:
    """A layer (nested) with the moved keys (``RENAMED``) at their new place, each with a warning."""
    found = {old: value for old, value in leaves(layer) if old in RENAMED}
    if not found:
        return layer
    out = copy.deepcopy(layer)
    for old, value in found.items():
        section, key = old.split(".")
        del out[section][key]
        if not out[section]:
            del out[section]
        new_section, new_key = RENAMED[old].split(".")
        out.setdefault(new_section, {})[new_key] = value
        warnings.warn(f"{where}: {old} is now {RENAMED[old]} (the old key still works)", FutureWarning, stacklevel=3)
    return out


def validate(config: dict, where: str = "config") -> dict:
    """Check every key and value of a resolved configuration; returns it. Errors name ``where``,
    the key and what was expected."""
    known = dict(leaves(DEFAULTS))
    for path, value in leaves(config):
        if path not in known:
            prefix = path.rsplit(".", 1)[0] + "." if "." in path else ""
            near = [k for k in known if k.startswith(prefix)] or list(known)
            raise ConfigError(f"{where}: unknown key {path!r}; expected one of {', '.join(near)}")
        if path == "data.sources":
            _check_sources(value, where)
            continue
        wrong = schema.problem(value, KEYS[path])
        if wrong is not None:
            if typing.get_origin(KEYS[path]) is Literal:
                raise ConfigError(f"{where}: {path} = {value!r}; expected {wrong}")
            raise ConfigError(f"{where}: {path} must be {wrong}; got {value!r}")
    _check_numbers(config, where)
    return config


def _check_sources(value, where: str) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: data.sources must be a mapping; got {value!r}")
    unknown = set(value) - set(MODALITY)
    if unknown:
        raise ConfigError(f"{where}: data.sources has unknown task(s) {', '.join(sorted(unknown))}; "
                          f"expected {', '.join(MODALITY)}")
    for task, source in value.items():
        if not isinstance(source, str) or not source.strip():
            raise ConfigError(f"{where}: data.sources.{task} must be a prepared folder or "
                              f"phantom-<modality>; got {source!r}")


def _check_numbers(config: dict, where: str) -> None:
    """What no single key's declaration can say: how keys relate."""
    train = config.get("train", {})
    if "lr" in train and "lr_min" in train and train["lr_min"] > train["lr"]:
        raise ConfigError(f"{where}: train.lr_min ({train['lr_min']!r}) must not exceed train.lr ({train['lr']!r})")


def resolve(scale: str, *layers: dict) -> dict:
    """DEFAULTS, then the scale, then each layer (nested dicts) in order."""
    if scale not in SCALES:
        raise ConfigError(f"unknown scale {scale!r}; expected one of {', '.join(SCALES)}")
    config = merge(DEFAULTS, SCALES[scale])
    for layer in layers:
        config = merge(config, renamed(layer, "configuration"))
    return config


def model_name(config: dict) -> str:
    """The registered preset a configuration builds: ``<name>_tiny`` at size tiny."""
    name = config["model"]["name"]
    if config["model"]["size"] == "tiny" and not name.endswith("_tiny"):
        return f"{name}_tiny"
    return name
