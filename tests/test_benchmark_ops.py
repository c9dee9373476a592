"""The WKV benchmark CLI runs and prints one row per (op, backend, C, size) with growth ratios."""
import pytest

from benchmark import ops


def test_benchmark_prints_a_table(capsys):
    assert ops.main(["--sizes", "8", "16", "--channels", "3", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| bi") or line.startswith("| uni")]
    assert len(rows) == 4 * 2                                                   # torch and cpp
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
