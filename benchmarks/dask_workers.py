"""Grid search on a Dask LocalCluster: 1 worker against 2, weights shipped once or not.

Run from the repository root (needs ``pip install -e .[dask]``)::

    python benchmarks/dask_workers.py            # about 2 minutes on 2 CPU cores
    python benchmarks/dask_workers.py --quick    # a smoke run, about 30 s

The same ``GridSearchCV`` over a pretrained ``TransferClassifier`` (an MLP
64-512-512-5, about 1.2 MB of source weights; digits 0-4 as the source, 40
samples of each digit 5-9 as the target; 8 candidates x 3 folds) runs under
``joblib.parallel_backend("dask")`` on three LocalClusters of worker processes:

- 1 worker with 1 thread: joblib sees one core, takes ``n_jobs=1`` and runs
  the search sequentially in this process; Dask is not used;
- 1 worker with 2 threads whose tasks each take the worker's single resource
  slot: joblib dispatches to the cluster and one worker process runs one fit
  at a time, which is what "1 worker" means in the ratios below;
- 2 workers with 1 thread each.

On the clusters the search runs with the source weights shipped once
(sktransfer's default) and with them carried inside every task (shipping
switched off). Each run starts from a fresh copy of the estimator, so each
"once" run pays its own shipment. Each cluster is started and warmed up (the
workers import torch) before the timed runs; each row is the median over the
repetitions, which run the two modes in alternating order.

How the bytes are measured, all in this process, which holds the client and,
in a LocalCluster, the scheduler:

- client → scheduler per batch: the pickles made while ``Client`` serialises a
  task graph for submission (``Client._graph_to_futures``, one per joblib
  batch), summed per batch and divided by the batches; in-band and
  out-of-band buffers both count;
- pickled here: every pickle made by ``distributed.protocol.pickle.dumps`` in
  this process, which adds the scheduler forwarding each task to a worker and
  the shipment itself;
- written to sockets: the bytes this process wrote to its TCP connections
  (``distributed.comm.tcp.TCP.write``): client → scheduler and scheduler →
  workers, X and y included;
- worker fetches: how many times a worker received the shipped weights from
  another process (each worker at most once).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import platform
import statistics
import sys
import threading
import time
from dataclasses import dataclass, replace

import joblib
import torch

try:
    import distributed
    import distributed.protocol.pickle as dask_pickle
    from distributed.comm.tcp import TCP
except ImportError:  # pragma: no cover
    sys.exit("This benchmark needs Dask: pip install -e .[dask]")

from sklearn.model_selection import GridSearchCV, StratifiedKFold
from skorch import NeuralNetClassifier
from torch import nn

import sktransfer
from sktransfer import MLP, TransferClassifier
from sktransfer._pretrained import _dask
from sktransfer.datasets import make_digits_transfer


@dataclass(frozen=True)
class Sizes:
    """What ``--quick`` shrinks."""

    hidden: tuple[int, ...] = (512, 512)
    per_class: int = 40
    source_epochs: int = 5
    epochs: int = 25
    lrs: tuple[float, ...] = (3e-4, 1e-3, 3e-3, 1e-2)
    frozen: tuple = ((), "features.*")
    folds: int = 3
    reps: int = 2


FULL = Sizes()
QUICK = replace(FULL, hidden=(256, 256), epochs=2, lrs=(1e-3, 1e-2), folds=2, reps=1)


class Meter:
    """Bytes pickled and written to sockets in this process while it is active."""

    def __init__(self):
        self.active = False
        self.graph = threading.local()
        self.reset()

    def reset(self):
        """Zero the counts."""
        self.pickled = 0
        self.written = 0
        self.batches = []  # bytes pickled per task graph submitted

    @contextlib.contextmanager
    def patched(self):
        """Count inside the block (while ``active``), by wrapping Dask's functions."""
        dumps, write = dask_pickle.dumps, TCP.write
        to_futures = distributed.Client._graph_to_futures
        meter = self

        def counting_dumps(x, *args, **kwargs):
            out = dumps(x, *args, **kwargs)
            if meter.active:
                size = len(out) + sum(
                    memoryview(b).nbytes for b in kwargs.get("buffers") or ()
                )
                meter.pickled += size
                if getattr(meter.graph, "size", None) is not None:
                    meter.graph.size += size
            return out

        async def counting_write(self, *args, **kwargs):
            n = await write(self, *args, **kwargs)
            if meter.active:
                meter.written += n
            return n

        def counting_to_futures(self, *args, **kwargs):
            meter.graph.size = 0
            try:
                return to_futures(self, *args, **kwargs)
            finally:
                if meter.active:
                    meter.batches.append(meter.graph.size)
                meter.graph.size = None

        dask_pickle.dumps = counting_dumps
        TCP.write = counting_write
        distributed.Client._graph_to_futures = counting_to_futures
        try:
            yield self
        finally:
            dask_pickle.dumps, TCP.write = dumps, write
            distributed.Client._graph_to_futures = to_futures


def pretrained_estimator(sizes, data):
    """Return a TransferClassifier pretrained on the source digits."""
    net = NeuralNetClassifier(
        MLP,
        module__hidden_layer_sizes=sizes.hidden,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=1e-3,
        max_epochs=sizes.source_epochs,
        batch_size=32,
        train_split=None,
        verbose=0,
    )
    clf = TransferClassifier(net, random_state=0)
    clf.fit_source(data.X_source, data.y_source)
    return clf.set_params(net__max_epochs=sizes.epochs)


def search(estimator, sizes, data, resources):
    """Run the grid search under joblib's Dask backend."""
    grid = GridSearchCV(
        estimator,
        {"frozen": list(sizes.frozen), "net__lr": list(sizes.lrs)},
        cv=StratifiedKFold(sizes.folds),
    )
    extra = {} if resources is None else {"resources": resources}
    with joblib.parallel_backend("dask", **extra):
        grid.fit(data.X_target, data.y_target)
    return grid


@contextlib.contextmanager
def shipping(enabled):
    """Ship the weights once inside the block, or (False) carry them in every task."""
    if enabled:
        yield
        return
    ship = _dask.ship
    _dask.ship = lambda record: None
    try:
        yield
    finally:
        _dask.ship = ship


def received(client):
    """Return how many times the workers received shipped weights so far."""
    return sum(
        sum(counts.values())
        for counts in client.run(lambda: dict(_dask._RECEIVED)).values()
    )


def measure(config, sizes, data, base, meter):
    """Time the search on a fresh cluster, with and without shipping once."""
    rows = {mode: [] for mode in config.modes}
    with (
        distributed.LocalCluster(
            n_workers=config.workers,
            threads_per_worker=config.threads,
            processes=True,
            dashboard_address=None,
            resources=config.resources,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        client.wait_for_workers(config.workers)
        warm = replace(sizes, lrs=sizes.lrs[:1], frozen=sizes.frozen[:1])
        search(copy.deepcopy(base), warm, data, config.resources)
        for rep in range(sizes.reps):
            for ship in config.modes if rep % 2 == 0 else config.modes[::-1]:
                estimator = copy.deepcopy(base)  # a record never shipped before
                before = received(client)
                meter.reset()
                meter.active = True
                with shipping(ship):
                    start = time.perf_counter()
                    grid = search(estimator, sizes, data, config.resources)
                    seconds = time.perf_counter() - start
                meter.active = False
                rows[ship].append(
                    {
                        "seconds": seconds,
                        "batches": len(meter.batches),
                        "per_batch": statistics.mean(meter.batches or [0]),
                        "pickled": meter.pickled,
                        "written": meter.written,
                        "fetches": received(client) - before,
                        "score": grid.best_score_,
                    }
                )
    return {
        ship: {key: statistics.median(r[key] for r in runs) for key in runs[0]}
        for ship, runs in rows.items()
    }


@dataclass(frozen=True)
class Config:
    """A LocalCluster: worker processes, threads each, and worker resources."""

    label: str
    workers: int
    threads: int
    resources: dict | None = None
    modes: tuple[bool, ...] = (True, False)


CONFIGS = (
    # One thread in all: joblib sees n_jobs=1 and runs the search in this
    # process, sequentially, without Dask; shipping changes nothing.
    Config("1 worker, 1 thread (joblib runs it here)", 1, 1, modes=(True,)),
    # Two threads but one task at a time (a resource each task takes), so that
    # joblib dispatches to the cluster and one worker process runs every fit.
    Config("1 worker, 1 task at a time", 1, 2, {"slot": 1}),
    Config("2 workers, 1 thread each", 2, 1),
)


def main(argv=None):
    """Run the benchmark, print the table and return its rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shrink every size")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    torch.set_num_threads(1)
    torch.manual_seed(0)

    data = make_digits_transfer(sizes.per_class, random_state=0)
    base = pretrained_estimator(sizes, data)
    weights = sum(v.numel() * v.element_size() for v in base.source_weights_.values())
    fits = len(sizes.lrs) * len(sizes.frozen) * sizes.folds
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, dask "
        f"{distributed.__version__}, joblib {joblib.__version__}, sktransfer "
        f"{sktransfer.__version__}; {fits} fits + 1 refit per search, "
        f"{sizes.reps} repetition(s); source weights {weights / 1e3:,.0f} kB"
    )
    meter = Meter()
    with meter.patched():
        results = [measure(config, sizes, data, base, meter) for config in CONFIGS]

    rows = [
        {"cluster": config.label, "shipped_once": ship, **result}
        for config, by_mode in zip(CONFIGS, results, strict=True)
        for ship, result in by_mode.items()
    ]
    print()
    print(
        "| cluster | source weights | wall time (s) | task batches | client → "
        "scheduler per batch (kB) | pickled here (kB) | written to sockets (kB) | "
        "worker fetches | best score |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        mode = "shipped once" if row["shipped_once"] else "in every task"
        if row["batches"] == 0:
            mode = "(no Dask)"
        print(
            f"| {row['cluster']} | {mode} | {row['seconds']:.2f} | "
            f"{row['batches']:.0f} | {row['per_batch'] / 1e3:,.1f} | "
            f"{row['pickled'] / 1e3:,.0f} | {row['written'] / 1e3:,.0f} | "
            f"{row['fetches']:.0f} | {row['score']:.3f} |"
        )
    print()
    local, one, two = results
    for ship in (True, False):
        mode = "shipped once" if ship else "in every task"
        ratio = one[ship]["seconds"] / two[ship]["seconds"]
        print(f"1 → 2 workers, weights {mode}: {ratio:.2f}x faster")
    ratio = local[True]["seconds"] / two[True]["seconds"]
    print(f"1 thread without Dask → 2 workers, weights shipped once: {ratio:.2f}x")
    return rows


if __name__ == "__main__":
    main()
