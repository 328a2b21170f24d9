"""python -m benchmarks keeps working: a --quick run gives every row it promises.

Speed is measured by the benchmarks, never asserted here: these tests check
what a reader of the table relies on, not the figures in it.
"""

import contextlib
import importlib.util
import io
import math
from pathlib import Path

import pytest

from benchmarks import common, report

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

ROWS_PER_SECTION = {
    "finetune": 9,
    "frozen": 3,
    "reuse": 3,
    "gridsearch": 3,
    "memory": 2,
    "predict": 2,
    "dask": 2,
}


@pytest.fixture(scope="module")
def quick_run():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rows = report.main(["--quick"])
    return report, rows, out.getvalue()


def test_every_section_produced_its_rows(quick_run):
    run, rows, _ = quick_run
    assert set(ROWS_PER_SECTION) == set(run.SECTIONS)
    for section, n_rows in ROWS_PER_SECTION.items():
        assert sum(row["section"] == section for row in rows) == n_rows, section


def test_every_figure_and_ratio_is_a_finite_positive_number(quick_run):
    _, rows, _ = quick_run
    for row in rows:
        for key in ("sktransfer", "baseline", "ratio"):
            value = row[key]
            assert isinstance(value, (int, float)), (row["benchmark"], key)
            assert math.isfinite(value), (row["benchmark"], key)
            assert value > 0, (row["benchmark"], key)
        assert row["met"] in (True, False, None)
        assert (row["met"] is None) == (row["goal"] is None)


def test_frozen_stage_was_cached_and_predicts_as_without_the_cache(quick_run):
    _, rows, _ = quick_run
    frozen = [row for row in rows if row["section"] == "frozen"]
    assert all(row["cached"] is True for row in frozen)
    assert all(row["frozen_cache"]["stage"] for row in frozen)
    (agreement,) = [row["agreement"] for row in frozen if "agreement" in row]
    assert agreement >= 0.99


def test_predict_proba_agrees_with_the_module_and_plain_skorch(quick_run):
    _, rows, _ = quick_run
    for row in rows:
        if row["section"] == "predict":
            assert row["max_abs_deviation"] < 1e-5


def test_memory_children_fine_tuned_each_way(quick_run):
    _, rows, _ = quick_run
    cached = {
        "uncached" in row["benchmark"]: row["cached"]
        for row in rows
        if row["section"] == "memory"
    }
    assert cached == {True: False, False: True}


def test_naive_search_pretrains_in_every_fit_and_shared_search_never(quick_run):
    run, rows, _ = quick_run
    search = [row for row in rows if row["section"] == "gridsearch"]
    assert common.GRID_FITS == 13  # 4 candidates x 3 folds + the refit
    for row in search:
        assert row["calls_naive"] == common.GRID_FITS
        assert row["calls_shared_before_search"] == 1
        assert row["calls_shared_in_search"] == 0
        assert row["same_scores"]


def test_prints_versions_then_one_markdown_table(quick_run):
    run, rows, out = quick_run
    lines = out.strip().splitlines()
    first = lines[0]
    for name in ("python", "torch", "skorch", "scikit-learn", "sktransfer"):
        assert f"{name} " in first
    assert "get_num_threads()=" in first
    assert "repetitions" in first
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    table = lines[start : start + len(rows) + 2]  # header and rule
    assert all(line.startswith("|") for line in table)
    assert not lines[start + len(rows) + 2].startswith("|")
    # The Dask section's own table comes after the total time.
    assert "benchmarks/dask_workers.py:" in out.split("total wall time")[1]
    assert table[0].split("|")[1:-1] == [
        f" {name.ljust(len(cell) - 2)} "
        for name, cell in zip(
            ("benchmark", "sktransfer", "baseline", "ratio", "goal", "met"),
            table[0].split("|")[1:-1],
            strict=True,
        )
    ]
    assert run.format_table(rows) in out


def test_transfer_quality_quick_run_scores_every_method_on_every_task():
    path = BENCHMARKS / "transfer_quality.py"
    spec = importlib.util.spec_from_file_location("transfer_quality", path)
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        results = quality.main(["--quick"])
    assert sorted(task for task, _ in results) == sorted(quality.TASKS)
    for scores in results.values():
        assert list(scores) == list(quality.METHODS)
        assert all(len(s) == 1 and math.isfinite(s[0]) for s in scores.values())
    assert quality.format_table(results) in out.getvalue()


def test_sample_weight_benchmark_quick_mode_gives_both_rows():
    path = BENCHMARKS / "sample_weight.py"
    spec = importlib.util.spec_from_file_location("sample_weight_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with contextlib.redirect_stdout(io.StringIO()):
        full, mini = module.main(["--quick"])
    assert full["batch_size"] > 200 > mini["batch_size"]
    # One full batch: weights and repetitions agree up to float32 rounding.
    assert full["max_abs_proba_gap"] < 1e-5
    assert math.isfinite(mini["max_abs_proba_gap"])


def test_fine_tuning_is_measured_at_each_batch_size(quick_run):
    _, rows, _ = quick_run
    labels = [row["benchmark"] for row in rows if row["section"] == "finetune"]
    for batch_size in (16, 32, 128):
        assert sum(f"bs={batch_size}:" in label for label in labels) == 3


def test_search_sharing_frozen_outputs_scores_as_the_fits_one_by_one(quick_run):
    _, rows, _ = quick_run
    search, passes, _ = [row for row in rows if row["section"] == "reuse"]
    assert search["same_scores"]
    # 3 runs of 5-fold cross-validation: the first fold's training rows, then
    # the second fold's new rows (the first one's test rows); each row once.
    assert passes["stage_passes"] == 2
    # The search runs the stage once over each row.
    assert search["rows_computed"] == search["n_samples"]
