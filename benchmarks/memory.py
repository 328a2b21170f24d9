"""Peak memory of fit, each measurement in a fresh process."""

from __future__ import annotations

import gc
import multiprocessing
import resource
import statistics
import sys
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone

from .common import (
    _median_ratio,
    _rotated,
    _row,
)
from .frozen import _cnn_task

# --------------------------------------------------------- 4. peak memory

# The three ways of fine-tuning the CNN, as estimator parameters.
_MEMORY_MODES = {
    "full": {"frozen": (), "cache_frozen": False},
    "frozen, uncached": {"frozen": "features.*", "cache_frozen": False},
    "frozen, cached": {"frozen": "features.*", "cache_frozen": True},
}


def peak_rss():
    """Return the peak resident memory of this process so far, in bytes.

    On Linux this reads ``VmHWM`` from ``/proc/self/status``, the process's
    own high-water mark: ``ru_maxrss`` of a spawned child starts at the peak
    of the process that spawned it (Linux carries it over the ``exec``; a
    child of a 1.5 GiB parent reports 1.5 GiB before doing anything), which
    would hide any fit smaller than the parent. Elsewhere, ``ru_maxrss``.

    Returns
    -------
    peak : int
        Bytes.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS


def memory_worker(job, sender):
    """Fine-tune once in this process; send the extra peak memory of ``fit``.

    Runs in a fresh child process: the peak resident memory is a high-water
    mark since the process started that never goes down, so one process can
    measure one ``fit`` only, and nothing before it may have gone higher.

    Parameters
    ----------
    job : tuple
        ``(estimator, params, X, y)``: a pretrained estimator, the parameters
        of one fine-tuning mode, the target data.
    sender : multiprocessing.connection.Connection
        Where to send ``(extra, report)``: the peak resident memory during
        ``fit`` above the peak before it, in bytes, and the fitted
        estimator's ``frozen_cache_``.
    """
    estimator, params, X, y = job
    # Children may run side by side on the 2 cores; one thread each avoids
    # oversubscription and leaves the memory the fit needs unchanged.
    torch.set_num_threads(1)
    estimator = clone(estimator).set_params(**params)
    # Warm-up fit on two samples: it loads the code and lazily initialised
    # state of every operation the fit uses (about 100 MiB, a fixed cost of
    # the process, not of a fit), so that what is measured below is what
    # grows with the data and the batch.
    pair = [0, int(np.flatnonzero(y != y[0])[0])]
    clone(estimator).set_params(net__batch_size=2).fit(X[pair], y[pair])
    gc.collect()
    before = peak_rss()
    estimator.fit(X, y)
    sender.send((peak_rss() - before, estimator.frozen_cache_))
    sender.close()


def _in_fresh_processes(jobs, processes):
    """Run ``memory_worker`` on each job, each in a fresh ``spawn`` process.

    At most ``processes`` run at a time. A spawned child imports the worker
    as ``benchmarks.memory``, with the parent's ``sys.path``: the repository
    root is put on it meanwhile.
    """
    root = str(Path(__file__).resolve().parents[1])
    added = root not in sys.path
    if added:
        sys.path.insert(0, root)
    try:
        context = multiprocessing.get_context("spawn")
        results = []
        for first in range(0, len(jobs), processes):
            results += _run_children(context, jobs[first : first + processes])
    finally:
        if added:
            sys.path.remove(root)
    return results


def _run_children(context, jobs):
    """Run one child process per job side by side; return their results in order."""
    running = []
    try:
        for job in jobs:
            receiver, sender = context.Pipe(duplex=False)
            child = context.Process(target=memory_worker, args=(job, sender))
            child.start()
            sender.close()
            running.append((child, receiver))
        results = []
        for child, receiver in running:
            try:
                results.append(receiver.recv())
            except EOFError:
                child.join()
                msg = (
                    f"A memory benchmark process failed (exit code "
                    f"{child.exitcode}); its traceback is printed above."
                )
                raise RuntimeError(msg) from None
            child.join()
    finally:
        for child, _ in running:  # the others, if one failed
            if child.is_alive():
                child.terminate()
                child.join()
    return results


def bench_memory(sizes):
    """Extra peak memory of ``fit``: full against frozen fine-tuning of the CNN.

    Parameters
    ----------
    sizes : Sizes
        The sizes to run at.

    Returns
    -------
    rows : list of dict
        Frozen (uncached and cached) against full fine-tuning.
    """
    pretrained, X, y, _, _ = _cnn_task(sizes)
    # One epoch: the peak is reached in the first.
    pretrained = clone(pretrained).set_params(net__max_epochs=1)
    modes = list(_MEMORY_MODES)
    order = [mode for rep in range(sizes.memory_reps) for mode in _rotated(modes, rep)]
    jobs = [(pretrained, _MEMORY_MODES[mode], X, y) for mode in order]
    results = _in_fresh_processes(jobs, len(modes))
    mib = {mode: [] for mode in modes}
    reports = {}
    for mode, (extra, report) in zip(order, results, strict=True):
        mib[mode].append(extra / 2**20)
        reports[mode] = report
    cached = reports["frozen, cached"]
    rows = []
    for mode, goal in (("frozen, uncached", "< 1"), ("frozen, cached", None)):
        note = ""
        if mode == "frozen, cached":
            note = f" (holds the {cached['nbytes'] / 2**20:.0f} MiB cache)"
        rows.append(
            _row(
                "memory",
                f"peak RSS of fit, {mode} / full fine-tuning{note}",
                statistics.median(mib[mode]),
                statistics.median(mib["full"]),
                _median_ratio(mib[mode], mib["full"]),
                goal,
                "MiB",
                per_rep=(mib[mode], mib["full"]),
                cached=reports[mode]["cached"],
            )
        )
    return rows
