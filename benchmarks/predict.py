"""predict_proba throughput against the module called directly and plain skorch."""

from __future__ import annotations

import functools
import statistics

import numpy as np
import torch

from sktransfer import TransferClassifier

from .common import (
    _median_ratio,
    _mlp_net,
    _rotated,
    _row,
    _timed,
    mnist_like,
)

# ------------------------------------------------- 5. prediction throughput


def direct_predict_proba(module, batch_size, X):
    """Return class probabilities from the torch module itself, batch by batch.

    Parameters
    ----------
    module : torch.nn.Module
        A classifier returning logits.
    batch_size : int
        Samples per forward pass.
    X : ndarray of float32
        Samples.

    Returns
    -------
    proba : ndarray of shape (n_samples, n_classes), float32
        Softmax of the logits.
    """
    module.eval()
    X = torch.from_numpy(X)
    with torch.no_grad():
        parts = [
            torch.softmax(module(X[i : i + batch_size]), dim=1)
            for i in range(0, len(X), batch_size)
        ]
    return torch.cat(parts).numpy()


def bench_predict(sizes):
    """``predict_proba`` rate: sktransfer, the torch module, plain skorch.

    Parameters
    ----------
    sizes : Sizes
        The sizes to run at.

    Returns
    -------
    rows : list of dict
        sktransfer against the module called directly and against plain skorch.
    """
    batch_size = 128
    X_source, y_source = mnist_like("source", sizes.finetune_source, seed=2, flat=True)
    X_fit, y_fit = mnist_like("all", sizes.finetune_source, seed=6, flat=True)
    transfer = TransferClassifier(_mlp_net(batch_size, 1), random_state=0)
    transfer.fit_source(X_source, y_source).fit(X_fit, y_fit)
    module = transfer.net_.module_
    plain = _mlp_net(
        batch_size, 1, module__n_features_in=X_fit.shape[1], module__n_outputs=10
    ).initialize()
    plain.module_.load_state_dict(module.state_dict())
    X, _ = mnist_like("all", sizes.predict_rows, seed=7, flat=True)
    contestants = {
        "sktransfer": transfer.predict_proba,
        "direct": functools.partial(direct_predict_proba, module, batch_size),
        "skorch": plain.predict_proba,
    }
    for fn in contestants.values():  # untimed warm-up
        fn(X[:2_000])
    times = {name: [] for name in contestants}
    proba = {}
    for rep in range(sizes.predict_reps):
        for name in _rotated(list(contestants), rep):
            seconds, proba[name] = _timed(
                functools.partial(contestants[name], X), seed=rep
            )
            times[name].append(seconds)
    # The three give the same probabilities (float64 against float32).
    deviation = max(
        float(np.abs(proba[name] - proba["direct"]).max())
        for name in ("sktransfer", "skorch")
    )
    rate = {name: len(X) / statistics.median(ts) for name, ts in times.items()}
    label = f"predict_proba {len(X):,} rows"
    return [
        _row(
            "predict",
            f"{label}: sktransfer / direct module (time)",
            rate["sktransfer"],
            rate["direct"],
            _median_ratio(times["sktransfer"], times["direct"]),
            "≤ 1.10",
            "rows/s",
            per_rep=(times["sktransfer"], times["direct"]),
            max_abs_deviation=deviation,
        ),
        _row(
            "predict",
            f"{label}: plain skorch / sktransfer (time)",
            rate["sktransfer"],
            rate["skorch"],
            _median_ratio(times["skorch"], times["sktransfer"]),
            "> 1",
            "rows/s",
            per_rep=(times["sktransfer"], times["skorch"]),
            max_abs_deviation=deviation,
        ),
    ]
