"""benchmarks/augmentation.py keeps working: a --quick run gives every row.

The figures are measured by the benchmark, never asserted here.
"""

import contextlib
import importlib.util
import io
import math
import sys
import warnings
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "augmentation.py"


@pytest.fixture(scope="module")
def quick_rows():
    spec = importlib.util.spec_from_file_location("augmentation_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    path = list(sys.path)
    out = io.StringIO()
    try:
        spec.loader.exec_module(module)
        with contextlib.redirect_stdout(out), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows = module.main(["--quick"])
    finally:
        sys.path[:] = path
        sys.modules.pop("augmented_finetuning", None)
    return module, rows, out.getvalue()


def test_every_section_gives_finite_rows(quick_rows):
    module, rows, out = quick_rows
    assert [row["section"] for row in rows] == ["gain", "views", "views", "overhead"]
    assert set(module.SECTIONS) == {row["section"] for row in rows}
    for row in rows:
        for key in ("sktransfer", "baseline", "value"):
            assert math.isfinite(row[key]), (row["benchmark"], key)
        assert row["met"] in (True, False)
        assert f"| {row['benchmark']} |" in out


def test_views_row_used_the_cache_of_views(quick_rows):
    _, rows, _ = quick_rows
    cache = next(row["cache"] for row in rows if "cache" in row)
    assert cache["cached"] is True
    assert cache["views"] == 4
