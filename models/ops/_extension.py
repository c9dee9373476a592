"""Lazy builds of the compiled CPU kernels in ``csrc/`` (``torch.utils.cpp_extension`` + ninja): the WKV
kernel (``cpu``) and the selective scan (``scan_cpu``). The GPU's WKV kernel is Triton
(``wkv/triton_launch.py``), compiled by Triton itself.

Nothing is compiled at import. The first call that needs a kernel builds it in a subprocess under a
timeout, then loads it; later processes find the binary in the build cache. The extension name
carries everything that changes the binary (sources, flags, torch and Python versions, the CPU for
``-march=native`` builds), so one cache serves every configuration side by side.

Environment:
    MEDIR_BENCH_BUILD_DIR      the build cache (default ``~/.cache/medir-bench/extensions``)
    MEDIR_BENCH_BUILD_TIMEOUT  seconds one build may take (default 600)
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import torch

KINDS = ("cpu", "scan_cpu")
_SOURCES = {"cpu": ["wkv_cpu.cpp"], "scan_cpu": ["selective_scan_cpu.cpp"]}
_HEADERS = ["simd.h"]                     # included by the CPU sources: part of every binary's identity
_NAMES = {"cpu": "medir_wkv_cpu", "scan_cpu": "medir_scan_cpu"}
_WHAT = {"cpu": "CPU WKV kernel", "scan_cpu": "CPU selective-scan kernel"}
_loaded: dict[str, ModuleType | Exception] = {}


def missing_tools() -> list[str]:
    """The build tools that are not there: the C++ compiler (``$CXX``, else ``c++``) and ninja."""
    missing = []
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        missing.append(f"no C++17 compiler ({compiler} is not on PATH; install g++ or set CXX)")
    if shutil.which("ninja") is None:
        try:
            from torch.utils.cpp_extension import is_ninja_available
            available = is_ninja_available()
        except ImportError:
            available = False
        if not available:
            missing.append("no ninja (pip install ninja)")
    return missing


def first_error(output: str) -> str:
    """The compiler's first error line of a build log (the line naming the file, line and error), or
    the log's last line when no line says 'error'."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    for line in lines:
        if " error: " in line or line.startswith("error:") or ": fatal error:" in line:
            return line
    return lines[-1] if lines else "(the build printed nothing)"


class KernelUnavailable(RuntimeError):
    """A compiled kernel could not be built or loaded; the message says why and how to fix it."""


def sources_dir() -> Path:
    """``csrc/`` beside the ``models`` package (a source checkout or an editable install)."""
    return Path(__file__).resolve().parents[2] / "csrc"


def build_dir() -> Path:
    default = Path.home() / ".cache" / "medir-bench" / "extensions"
    return Path(os.environ.get("MEDIR_BENCH_BUILD_DIR", default)).expanduser()


def _cpu_flags() -> tuple[list[str], list[str]]:
    cflags = ["-O3", "-march=native", "-fno-math-errno", "-fopenmp"]   # at::parallel_for is OpenMP inline
    ldflags = ["-fopenmp"]
    if platform.system() == "Linux" and platform.machine() == "x86_64":
        cflags.append("-DMEDIR_LIBMVEC")                                # glibc's vector exp
        ldflags.append("-lmvec")
    return cflags, ldflags


def _cpu_identity() -> str:
    """What ``-march=native`` depends on: the CPU's feature flags."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def build_spec(kind: str) -> dict:
    """Arguments for ``torch.utils.cpp_extension.load``, with a name that identifies the binary."""
    if kind not in KINDS:
        raise ValueError(f"unknown kernel kind {kind!r}; expected one of {', '.join(KINDS)}")
    sources = [sources_dir() / name for name in _SOURCES[kind]]
    missing = [str(p) for p in sources if not p.is_file()]
    if missing:
        raise KernelUnavailable(f"kernel sources not found ({', '.join(missing)}): install medir-bench from a "
                                "source checkout (pip install -e .) to use the compiled kernels")
    spec: dict = dict(sources=[str(p) for p in sources], build_directory=None, verbose=False)
    identity = [torch.__version__, sys.version, platform.machine(), kind]
    spec["extra_cflags"], spec["extra_ldflags"] = _cpu_flags()
    identity += spec["extra_cflags"] + spec["extra_ldflags"] + [_cpu_identity()]
    digest = hashlib.sha1()
    for item in identity:
        digest.update(item.encode())
    for path in sources + [sources_dir() / name for name in _HEADERS]:
        if path.is_file():
            digest.update(path.read_bytes())
    spec["name"] = f"{_NAMES[kind]}_{digest.hexdigest()[:12]}"
    spec["build_directory"] = str(build_dir() / spec["name"])
    return spec


def build(kind: str, spec: dict | None = None) -> Path:
    """Compile ``kind`` into the build cache in a subprocess with a timeout; returns the build folder."""
    spec = build_spec(kind) if spec is None else spec
    folder = Path(spec["build_directory"])
    folder.mkdir(parents=True, exist_ok=True)
    timeout = float(os.environ.get("MEDIR_BENCH_BUILD_TIMEOUT", 600))
    log = folder / "build.log"
    command = [sys.executable, "-m", "models.ops._extension", kind]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(sources_dir().parent),
                                                        os.environ.get("PYTHONPATH", "")])}
    # A session of its own, so that a timeout also stops the compilers it started.
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               start_new_session=True)
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        log.write_text(output or "")
        raise KernelUnavailable(f"building the {_WHAT[kind]} took longer than {timeout:g} s "
                                f"(MEDIR_BENCH_BUILD_TIMEOUT); log: {log}") from None
    done = subprocess.CompletedProcess(command, process.returncode, output)
    log.write_text(done.stdout)
    if done.returncode != 0:
        raise KernelUnavailable(f"building the {_WHAT[kind]} failed (torch {torch.__version__}): "
                                f"{first_error(done.stdout)}; log: {log}")
    return folder


def load(kind: str) -> ModuleType:
    """The compiled ``kind`` kernel, built on first use; raises ``KernelUnavailable`` (remembered for
    the rest of the process, so a failing build is tried once)."""
    if kind not in _loaded:
        try:
            spec = build_spec(kind)
            binary = Path(spec["build_directory"]) / f"{spec['name']}.so"
            if not binary.is_file():
                missing = missing_tools()
                if missing:
                    raise KernelUnavailable(f"the {_WHAT[kind]} cannot be built: {'; '.join(missing)}")
                build(kind, spec)                                 # in a subprocess, under the timeout
            _loaded[kind] = _import_binary(spec["name"], binary)
        except KernelUnavailable as err:
            _loaded[kind] = err
        except Exception as err:  # a load error from torch: keep its message
            _loaded[kind] = KernelUnavailable(f"loading the {_WHAT[kind]} failed: {type(err).__name__}: {err}")
    result = _loaded[kind]
    if isinstance(result, Exception):
        raise result
    return result


def _import_binary(name: str, binary: Path) -> ModuleType:
    """Import a built extension directly: its name already pins what it was built from, so there is
    nothing for ninja to check."""
    spec = importlib.util.spec_from_file_location(name, binary)
    if spec is None or spec.loader is None:
        raise KernelUnavailable(f"{binary} is not an importable extension")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _compile_in_this_process(kind: str) -> None:
    """Compile, link and import (the build subprocess)."""
    from torch.utils.cpp_extension import load as cpp_load
    cpp_load(**{**build_spec(kind), "verbose": True})


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in KINDS:
        sys.exit(f"usage: python -m models.ops._extension {{{','.join(KINDS)}}}")
    _compile_in_this_process(sys.argv[1])
