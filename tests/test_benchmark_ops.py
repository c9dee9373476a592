"""The WKV benchmark CLI runs and prints one row per (op, backend, C, size) with growth ratios."""
import pytest

from benchmark import ops


def test_benchmark_prints_a_table(capsys):
    assert ops.main(["--sizes", "8", "16", "--channels", "3", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| bi") or line.startswith("| uni")]
    assert len(rows) == 4
    assert rows[0].split("|")[7].strip() == "-"                                  # first size: no ratio
    float(rows[1].split("|")[7])                                                # second: a number


def test_benchmark_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        ops.main(["--sizes", "0"])
    with pytest.raises(SystemExit):
        ops.main(["--ops", "tri"])
