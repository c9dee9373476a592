"""A non-editable install (``pip install .``) carries the built-in grids and SLURM profiles: a fresh
virtual environment (the machine's packages visible, this project installed into it without
dependencies) runs a dry run of a built-in grid by name from another folder, with the same run ids
as this checkout, and loads the shipped cluster profiles by name."""
import subprocess
import sys
from pathlib import Path

from benchmark.harness.grid import load_grid

ROOT = Path(__file__).resolve().parents[2]


def test_a_non_editable_install_finds_the_built_in_grids_and_profiles_by_name(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(ROOT)], check=True,
                   capture_output=True)
    where = subprocess.run([str(python), "-c", "import benchmark; print(benchmark.__file__)"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).is_relative_to(venv)                         # the installed copy, not this checkout
    out = subprocess.run([str(python), "-m", "benchmark.run", "--grid", "token_shift", "--dry-run"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"grid token_shift (token_shift), scale smoke: {len(load_grid('token_shift').specs)} runs")
    for spec in load_grid("token_shift").specs:
        assert spec.folder_name in out.stdout
    profiles = subprocess.run([str(python), "-c", "from benchmark.harness.executors import slurm; "
                               "print(slurm.load_profile('example-gpu')['partition'], slurm.SHIPPED)"],
                              cwd=tmp_path, capture_output=True, text=True)
    assert profiles.returncode == 0, profiles.stderr
    partition, shipped = profiles.stdout.split()
    assert partition == "gpu" and Path(shipped).is_relative_to(venv)
