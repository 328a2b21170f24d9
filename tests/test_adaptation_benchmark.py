"""benchmarks/adaptation.py keeps working: a --quick run gives every column.

The figures are measured by the benchmark, never asserted here.
"""

import contextlib
import io
import math
import warnings

import pytest

from benchmarks import adaptation


@pytest.mark.filterwarnings("ignore")
def test_quick_run_gives_every_column():
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = adaptation.main(["--quick", "--no-skada", "--pairs", "tabular"])
    (row,) = rows["tabular"]
    for column in adaptation.COLUMNS:
        assert 0 <= row[column] <= 1, column
        assert math.isfinite(row[column])
    text = out.getvalue()
    assert "| tabular |" in text
    assert "chosen (entropy)" in text
    assert row["chosen (agreed) name"] in text
    assert "best in hindsight (target labels)" in text
    assert "goal 1, chosen (agreed) never loses more than 1 point" in text


@pytest.mark.filterwarnings("ignore")
def test_quick_skada_only_run_compares_the_three_terms():
    pytest.importorskip("skada")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rows = adaptation.main(["--quick", "--skada-only", "--pairs", "tabular"])
    (row,) = rows["tabular"]
    for method in ("coral", "mmd", "dann"):
        for key in (f"{method}@1", f"skada {method}@1"):
            assert 0 <= row[key] <= 1, key
    assert "paired difference" in out.getvalue()
