"""A grid search on Dask: benchmarks/dask_workers.py, two of its figures."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import sys
from pathlib import Path

from .common import (
    QUICK,
    _progress,
    _row,
)

# ------------------------------------------- 6. grid search on a Dask cluster


def bench_dask(sizes):
    """Run ``dask_workers.py`` (1 vs 2 workers, weights shipped once or not).

    It prints its own, more detailed table first; two of its figures join the
    main table. Without Dask installed the section is left out with a note.

    Returns
    -------
    rows : list of dict
        Two rows: wall time 1 worker / 2 workers, and the bytes sent per task
        batch with the weights in every task / shipped once.
    """
    try:
        import distributed  # noqa: F401
    except ImportError:
        _progress('dask: skipped, Dask is not installed (pip install ".[dask]")')
        return []
    path = Path(__file__).with_name("dask_workers.py")
    spec = importlib.util.spec_from_file_location("dask_workers", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["dask_workers"] = module  # its dataclasses look themselves up
    try:
        spec.loader.exec_module(module)
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            results = module.main(["--quick"] if sizes is QUICK else [])
    finally:
        del sys.modules["dask_workers"]
    details = "benchmarks/dask_workers.py:\n" + out.getvalue()
    by = {(row["cluster"], row["shipped_once"]): row for row in results}
    one_worker, two_workers = (config.label for config in module.CONFIGS[1:])
    one, two = by[one_worker, True], by[two_workers, True]
    every = by[two_workers, False]
    return [
        _row(
            "dask",
            "grid search on Dask: wall time 1 worker / 2 workers",
            two["seconds"],
            one["seconds"],
            one["seconds"] / two["seconds"],
            None,
            "s",
            details=details,
        ),
        _row(
            "dask",
            "Dask, client to scheduler per task batch: weights in every task / "
            "shipped once",
            two["per_batch"] / 1e3,
            every["per_batch"] / 1e3,
            every["per_batch"] / two["per_batch"],
            "> 1",
            "kB",
        ),
    ]
