"""The benchmark CLIs: the WKV op benchmark prints one row per (op, backend, C, size) with growth
ratios; the training-step benchmark one row per backend."""
import pytest

from benchmark.measure import ops


def test_benchmark_prints_a_table(capsys):
    assert ops.main(["--sizes", "8", "16", "--channels", "3", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("| bi") or line.startswith("| uni")]
    rows = [line for line in lines if "| triton |" not in line]
    assert len(rows) == 4 * 2                                                   # torch and cpp
    triton = [line for line in lines if "| triton |" in line]                   # no GPU: says so, no time
    assert len(triton) == 2 and all(r.split("|")[6].strip() == "needs a GPU" for r in triton)
    assert "- triton: needs a GPU" in out
    assert rows[0].split("|")[7].strip() == "-"                                  # first size: no ratio
    float(rows[1].split("|")[7])                                                # second: a number
    cpp = [r for r in rows if "| cpp |" in r]
    assert len(cpp) == 4 and all(float(r.split("|")[11]) > 0 for r in cpp)       # speedup vs torch
    assert all(r.split("|")[11].strip() == "1.00" for r in rows if "| torch |" in r)


def test_benchmark_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        ops.main(["--sizes", "0"])
    with pytest.raises(SystemExit):
        ops.main(["--ops", "tri"])


def test_train_step_benchmark_prints_one_row_per_backend(capsys):
    from benchmark.measure import train_step
    assert train_step.main(["--model", "restore_rwkv_tiny", "--size", "16", "--repeat", "1",
                            "--backends", "torch", "cpp"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| torch") or
            line.startswith("| cpp")]
    assert [r.split("|")[2].strip() for r in rows] == ["torch", "cpp"]              # what actually ran
    assert rows[0].split("|")[4].strip() == "1.00" and float(rows[1].split("|")[4]) > 0
    with pytest.raises(SystemExit):
        train_step.main(["--size", "0"])


def test_scan_benchmark_finds_the_models_scan_calls_and_times_every_backend(capsys):
    import torch

    from benchmark.measure import scan
    threads = torch.get_num_threads()
    calls = scan.scan_calls("mambair_tiny", 16)
    # mambair_tiny: 4 scans of 2 x dim channels at every level; level 1 sees all 256 tokens
    assert {(c["d"], c["l"]) for c in calls} >= {(64, 256)} and all(c["groups"] == 4 for c in calls)
    assert scan.main(["--model", "mambair_tiny", "--size", "16", "--repeat", "1", "--steps-models", "mambair_tiny",
                      "restormer_tiny", "--steps-size", "16", "--steps-batch", "1"]) == 0
    out = capsys.readouterr().out
    assert "| all calls |" in out and "speedup fwd+bwd" in out
    assert "| mambair_tiny | torch |" in out and "| mambair_tiny | cpp |" in out and "| restormer_tiny | - |" in out
    assert torch.get_num_threads() == threads                  # --threads 1 does not leak into the caller
    with pytest.raises(SystemExit):
        scan.main(["--steps-models", "no_such_model"])


def test_gpu_check_needs_a_gpu_and_says_so(monkeypatch, capsys):
    from benchmark.measure import gpu_check
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    assert gpu_check.main([]) == 2
    assert "no CUDA device is visible; this check needs a GPU" in capsys.readouterr().err


def test_gpu_check_script_runs_end_to_end_on_cpu(tmp_path):
    """--device cpu exercises every section (Triton's interpreter for the WKV, tests/conftest.py
    turns it on without a GPU); the report has each table and says its times mean nothing."""
    from benchmark.measure import gpu_check
    out = tmp_path / "gpu_check.md"
    assert gpu_check.main(["--device", "cpu", "--skip-tests", "--sides", "8", "--channels", "4", "--models",
                           "restore_rwkv_tiny", "mambair_tiny", "--size", "16", "--batch", "1", "--repeat", "1",
                           "--out", str(out)]) == 0
    report = out.read_text()
    assert "a check of the script, not of a GPU" in report
    wkv_rows = [line for line in report.splitlines() if line.startswith("| 8^2 = 64 | 4 |")]
    cells = wkv_rows[0].split("|")
    assert len(wkv_rows) == 1 and float(cells[3]) > 0 and float(cells[7]) > 0
    assert cells[4].strip() == "- (no GPU)"                 # the static estimate is for a GPU's own capability
    steps = [line.split("|") for line in report.splitlines() if line.startswith(("| restore_rwkv_tiny", "| mambair_tiny"))]
    assert [(r[1].strip(), r[3].strip()) for r in steps] == [
        ("restore_rwkv_tiny", "fp32"), ("restore_rwkv_tiny", "bf16"), ("mambair_tiny", "fp32"), ("mambair_tiny", "bf16")]
    assert all(float(r[4]) > 0 for r in steps) and "wkv:" in steps[0][6] and "scan:" in steps[2][6]


def test_gpu_check_reports_a_failed_point_and_goes_on(monkeypatch):
    from benchmark.measure import gpu_check

    def out_of_memory():
        raise RuntimeError("CUDA out of memory. Tried to allocate 12.00 GiB")

    def broken():
        raise ValueError("bad shape\nmore")
    cpu = gpu_check.torch.device("cpu")
    assert gpu_check._attempt(out_of_memory, cpu) == "out of memory"
    assert gpu_check._attempt(broken, cpu) == "failed: ValueError: bad shape"
    assert gpu_check._attempt(lambda: {"ms": 1.0}, cpu) == {"ms": 1.0}


def test_gpu_check_skips_a_cpu_point_that_would_not_fit_and_says_so(monkeypatch):
    """On a CPU running out of memory is the OOM killer, not an error: such a point is never run."""
    from benchmark.measure import gpu_check
    cpu = gpu_check.torch.device("cpu")
    monkeypatch.setattr(gpu_check, "free_memory", lambda device: 2 ** 30)           # 1 GiB available
    monkeypatch.setattr(gpu_check, "time_wkv", lambda *a: pytest.fail("a point that does not fit was run"))
    lines = gpu_check.wkv_section(cpu, [1024], [384], 1, gpu_check.Budget(600), 1e9)
    # 100 tensors of 1024^2 x 384 float32: 150 GiB
    assert lines[-1] == "| 1024^2 = 1048576 | 384 | skipped: needs about 24.0 GiB, 1.0 GiB available |  |  |  |  |  |"
    assert gpu_check.fits(cpu, 10 * 2 ** 20) is None
    assert gpu_check.free_memory(cpu) == 2 ** 30
