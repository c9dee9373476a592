"""The one way to declare a configuration key (``models.schema``): type hints with a Range and a
Says, used by the grids (``KEYS``), the SLURM profiles and the models' options; the one markdown
table writer; the one YAML loader."""
from typing import Annotated, Literal

import pytest

from benchmark.base import markdown
from benchmark.base.yamlfile import load_yaml
from benchmark.harness import config as cfg
from benchmark.harness.executors import slurm
from models.schema import Range, Says, problem


@pytest.mark.parametrize("value,hint,expected", [
    (3, Annotated[int, Range(min=1)], None),
    (0, Annotated[int, Range(min=1)], "a positive integer"),
    (True, Annotated[int, Range(min=0)], "a non-negative integer"),       # a bool is not a count
    (-1e-3, Annotated[float, Range(above=0)], "> 0"),
    (float("nan"), Annotated[float, Range(above=0)], "a finite number"),
    ([0.9, 1.0], Annotated[tuple[float, float], Range(min=0, below=1), Says("two numbers in [0, 1)")],
     "two numbers in [0, 1)"),
    ([0.9], tuple[float, float], "a list of a finite number"),
    (None, Annotated[int, Range(min=1)] | None, None),
    (5.0, int | None, "an integer or null (the default)"),
    ("omin", Literal["uni", "quad"], "one of uni, quad"),
    ({"a": 1}, dict[str, str], "dict"),
    ({"a": "b"}, dict[str, str], None),
])
def test_a_value_against_its_declaration(value, hint, expected):
    assert problem(value, hint) == expected


def test_every_key_of_a_run_is_declared_once():
    assert set(cfg.KEYS) == {path for path, _ in cfg.leaves(cfg.DEFAULTS)}
    assert set(slurm.profile_schema()) == set(slurm.PROFILE_KEYS)
    assert cfg.KEYS["kernels.scan"].__args__ == ("auto", "torch", "cpp", "mamba")   # the op's own vocabulary


def test_one_yaml_loader_reads_exponent_floats_and_builds_no_objects():
    assert load_yaml("lr: 1e-3\nmem_gb: 1.2e2\n") == {"lr": 1e-3, "mem_gb": 120.0}
    with pytest.raises(Exception, match="could not determine a constructor"):
        load_yaml("!!python/object/apply:os.system ['true']")


def test_the_markdown_writer_aligns_and_refuses_ragged_rows():
    assert markdown.table(["a", "b"], [[1, "x"]]) == "| a | b |\n|---|---:|\n| 1 | x |"
    assert markdown.table(["a", "b"], [], "rl").splitlines()[1] == "|---:|---|"
    with pytest.raises(ValueError, match="a row of 1 cells in a table of 2 columns"):
        markdown.table(["a", "b"], [[1]])
    with pytest.raises(ValueError, match="align 'lx'"):
        markdown.table(["a", "b"], [], "lx")
