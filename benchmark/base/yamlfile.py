"""The one YAML loader of the suite (grids, ``--set`` values, SLURM profiles): safe (it builds
plain data only, never objects, so nothing in a file can run code), with YAML 1.2 floats."""
from __future__ import annotations

import re

import yaml


class _Loader(yaml.SafeLoader):
    """YAML with YAML 1.2 floats: ``1e-3`` is a number (PyYAML's YAML 1.1 reads it as a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+]?[0-9]+)?"
               r"|\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."))


def load_yaml(text: str):
    """Plain data from YAML text; ``1e-3`` is a number (PyYAML's YAML 1.1 reads it as a string)."""
    return yaml.load(text, Loader=_Loader)
