"""Benchmarks of sktransfer against hand-written PyTorch, plain skorch and naive use.

Run from the repository root::

    python -m benchmarks                  # everything: about 10 minutes on 2 CPU cores
    python -m benchmarks --quick          # every size shrunk: a smoke run, ~40 s
    python -m benchmarks --only frozen

(``python benchmarks/run.py`` runs the same.) Each section is a module of this
package: ``finetune`` (the training step at batch sizes 16, 32 and 128),
``frozen`` (a frozen stage computed once per fit), ``reuse`` (frozen outputs
shared by the fits of a search and of repeated cross-validation),
``gridsearch`` (pretraining paid once per search), ``memory`` (peak memory of
fit), ``predict`` (prediction throughput) and ``dask`` (a search on a Dask
cluster).

It prints a line with the versions, torch's thread count and the repetitions,
then one markdown table: for each benchmark the sktransfer figure, the
baseline's, their ratio, the goal and whether the goal is met. The Dask section
(``benchmarks/dask_workers.py``, skipped without Dask) adds its own detailed
table after it.

The machine these run on is shared and noisy. Within each repetition the
contestants run one after the other, in an order rotated from one repetition
to the next, so that a slow spell hits all of them; each ratio is the median
over the repetitions of the ratio measured within one repetition, and each
absolute figure is the median of its own measurements. Everything is seeded.

The data come from scikit-learn's 8x8 digits only: for MNIST-sized inputs the
images are upsampled to 28x28, scaled to [0, 1] and tiled to the needed number
of samples with small seeded noise.
"""

from __future__ import annotations

import argparse
import platform
import time

import sklearn
import skorch
import torch

import sktransfer

from .cluster import bench_dask
from .common import FULL, QUICK, _progress
from .finetune import bench_finetune
from .frozen import bench_frozen
from .memory import bench_memory
from .predict import bench_predict
from .reuse import bench_reuse
from .search import bench_gridsearch

SECTIONS = {
    "finetune": bench_finetune,
    "frozen": bench_frozen,
    "reuse": bench_reuse,
    "gridsearch": bench_gridsearch,
    "memory": bench_memory,
    "predict": bench_predict,
    "dask": bench_dask,
}


def _repetitions(sizes):
    return {
        "finetune": sizes.finetune_reps,
        "frozen": sizes.frozen_reps,
        "reuse": sizes.reuse_reps,
        "gridsearch": sizes.grid_reps,
        "memory": sizes.memory_reps,
        "predict": sizes.predict_reps,
        "dask": "see its table",
    }


def _format(value, unit):
    if unit == "s":
        return f"{value:.3f} s"
    if unit == "MiB":
        return f"{value:.1f} MiB"
    if unit == "rows/s":
        return f"{value:,.0f} rows/s"
    if unit == "calls":
        return f"{value:.0f} calls"
    if unit == "kB":
        return f"{value:,.1f} kB"
    return f"{value:.3f}"


def format_table(rows):
    """Return the rows as a markdown table.

    Parameters
    ----------
    rows : list of dict
        Rows as the benchmark functions return them.

    Returns
    -------
    table : str
        The table, one line per row after the header.
    """
    header = ("benchmark", "sktransfer", "baseline", "ratio", "goal", "met")
    lines = [
        (
            row["benchmark"],
            _format(row["sktransfer"], row["unit"]),
            _format(row["baseline"], row["unit"]),
            f"{row['ratio']:.3f}",
            row["goal"] or "—",
            {True: "yes", False: "NO", None: "—"}[row["met"]],
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(6)]

    def join(cells):
        padded = [cell.ljust(w) for cell, w in zip(cells, widths, strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([join(header), rule, *(join(line) for line in lines)])


def main(argv=None):
    """Run the benchmarks, print the table and return its rows.

    Parameters
    ----------
    argv : list of str, default=None
        Command-line arguments; ``sys.argv[1:]`` if None.

    Returns
    -------
    rows : list of dict
        One dict per table row: ``section``, ``benchmark``, ``sktransfer`` and
        ``baseline`` (medians, in ``unit``), ``ratio``, ``goal``, ``met``, and
        what a section adds (e.g. ``cached``, ``calls_naive``).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="shrink every size (a ~25 s smoke run)"
    )
    parser.add_argument("--only", choices=list(SECTIONS), help="run one section")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    # Single-threaded torch, as the tests run: on a shared 2-core machine more
    # threads measure the neighbours' load rather than sktransfer.
    torch.set_num_threads(1)
    names = [args.only] if args.only else list(SECTIONS)
    start = time.perf_counter()
    rows = []
    for name in names:
        _progress(f"{name} ...")
        section_start = time.perf_counter()
        rows += SECTIONS[name](sizes)
        _progress(f"{name}: {time.perf_counter() - section_start:.0f} s")
    reps = _repetitions(sizes)
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, "
        f"skorch {skorch.__version__}, scikit-learn {sklearn.__version__}, "
        f"sktransfer {sktransfer.__version__}; "
        f"torch.get_num_threads()={torch.get_num_threads()}; repetitions: "
        + ", ".join(f"{name} {reps[name]}" for name in names)
        + (" (--quick)" if args.quick else "")
    )
    print()
    print(format_table(rows))
    print()
    print(f"total wall time: {time.perf_counter() - start:.0f} s")
    for row in rows:
        if "details" in row:
            print()
            print(row["details"].rstrip())
    return rows
