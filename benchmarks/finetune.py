"""Fine-tuning's training loop against a hand-written loop and plain skorch."""

from __future__ import annotations

import functools
import statistics

import torch
from torch import nn

from sktransfer import MLP, TransferClassifier
from sktransfer._skorch import _step

from .common import (
    _median_ratio,
    _mlp_net,
    _rotated,
    _row,
    _timed,
    mnist_like,
)

# ----------------------------------------------- 1. the fine-tuning loop


def _shared(pretrained):
    """Return the pretrained tensors a fine-tune loads: all but the head's."""
    return {k: v for k, v in pretrained.items() if not k.startswith("head.")}


def hand_written_loop(X, y, *, batch_size, max_epochs, pretrained=None):
    """Fine-tune the MLP 784-256-128-10 with a plain PyTorch loop.

    What a user writes by hand for the same fine-tune: the shared layers
    start from the pretrained weights and the head from a fresh
    initialisation (training from a fresh network instead costs measurably
    less per step on CPU, so the reference must start from the same
    weights); each epoch draws a random order; each batch zeroes the
    gradients (``set_to_none=True``, as skorch), takes one Adam step, and
    reads its loss back with ``.item()`` (skorch records it in the history).

    Parameters
    ----------
    X : ndarray of shape (n_samples, 784), float32
        Samples.
    y : ndarray of shape (n_samples,), int64
        Classes 0-9.
    batch_size, max_epochs : int
        Batch size and epochs.
    pretrained : dict of str to torch.Tensor, default=None
        The pretrained network's weights (``source_weights_``); every tensor
        but the head's is loaded. None: train from a fresh network.

    Returns
    -------
    loss : float
        The summed batch losses of the last epoch.
    """
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    model = MLP(X.shape[1], 10, hidden_layer_sizes=(256, 128))
    if pretrained is not None:
        model.load_state_dict(_shared(pretrained), strict=False)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    crit = nn.CrossEntropyLoss()
    model.train()
    n = len(X)
    for _ in range(max_epochs):
        perm = torch.randperm(n)
        total = 0.0
        for i in range(0, n, batch_size):
            index = perm[i : i + batch_size]
            xb, yb = X[index], y[index]
            opt.zero_grad(set_to_none=True)
            loss = crit(model(xb), yb)
            loss.backward()
            opt.step()
            # A real loop logs the epoch's loss, which reads every batch's
            # loss back (skorch does the same for its history).
            total += loss.item()
    return total


def plain_skorch_fit(X, y, *, batch_size, max_epochs, pretrained=None):
    """Fine-tune the MLP 784-256-128-10 with plain skorch (its own ``DataLoader``).

    Parameters
    ----------
    X : ndarray of shape (n_samples, 784), float32
        Samples.
    y : ndarray of shape (n_samples,), int64
        Classes 0-9.
    batch_size, max_epochs : int
        Batch size and epochs.
    pretrained : dict of str to torch.Tensor, default=None
        The pretrained network's weights; every tensor but the head's is
        loaded into the initialised module. None: a fresh network.

    Returns
    -------
    net : skorch.NeuralNetClassifier
        The fitted net.
    """
    net = _mlp_net(
        batch_size, max_epochs, module__n_features_in=X.shape[1], module__n_outputs=10
    )
    if pretrained is not None:
        net.initialize()
        net.module_.load_state_dict(_shared(pretrained), strict=False)
    return net.partial_fit(X, y) if pretrained is not None else net.fit(X, y)


def _skorch_step(transfer):
    """Return a function fitting ``transfer`` with skorch's own training step."""

    def fit(X, y):
        lean, _step._LEAN = _step._LEAN, {}
        try:
            return transfer.fit(X, y)
        finally:
            _step._LEAN = lean

    return fit


def _finetune_contestants(transfer, X, y, batch_size, max_epochs):
    """Return the four ways of training on ``X``, ``y``, by name."""
    settings = {
        "batch_size": batch_size,
        "max_epochs": max_epochs,
        "pretrained": transfer.source_weights_,
    }
    return {
        "sktransfer": functools.partial(transfer.fit, X, y),
        "hand": functools.partial(hand_written_loop, X, y, **settings),
        "skorch": functools.partial(plain_skorch_fit, X, y, **settings),
        "skorch step": functools.partial(_skorch_step(transfer), X, y),
    }


# The goal against the hand-written loop at each batch size.
FINETUNE_GOALS = {16: "≤ 1.10", 32: "≤ 1.10", 128: "≤ 1.05"}


def bench_finetune(sizes):
    """Fine-tuning ``fit`` against a hand-written loop, plain skorch, skorch's step.

    Parameters
    ----------
    sizes : Sizes
        The sizes to run at.

    Returns
    -------
    rows : list of dict
        Three rows per batch size (16, 32, 128): against the hand-written
        loop, plain skorch, and sktransfer with skorch's own training step.
    """
    X, y = mnist_like("all", sizes.finetune_samples, seed=1, flat=True)
    X_source, y_source = mnist_like("source", sizes.finetune_source, seed=2, flat=True)
    epochs = sizes.finetune_epochs
    rows = []
    for batch_size, goal in FINETUNE_GOALS.items():
        transfer = TransferClassifier(
            _mlp_net(batch_size, epochs),
            source_params={"max_epochs": 1},
            random_state=0,
        ).fit_source(X_source, y_source)
        # One small untimed run of each first: lazy initialisation is not a cost
        # of whichever contestant happens to run first.
        small = _finetune_contestants(transfer, X[:200], y[:200], batch_size, epochs)
        for fn in small.values():
            fn()
        contestants = _finetune_contestants(transfer, X, y, batch_size, epochs)
        times = {name: [] for name in contestants}
        for rep in range(sizes.finetune_reps):
            for name in _rotated(list(contestants), rep):
                seconds, _ = _timed(contestants[name], seed=rep)
                times[name].append(seconds)
        median = {name: statistics.median(ts) for name, ts in times.items()}
        label = f"fine-tune bs={batch_size}"
        for baseline, what, row_goal in (
            ("hand", "hand-written loop", goal),
            ("skorch", "plain skorch", "< 1"),
            ("skorch step", "sktransfer with skorch's step", "≤ 1"),
        ):
            rows.append(
                _row(
                    "finetune",
                    f"{label}: sktransfer / {what}",
                    median["sktransfer"],
                    median[baseline],
                    _median_ratio(times["sktransfer"], times[baseline]),
                    row_goal,
                    "s",
                    per_rep=(times["sktransfer"], times[baseline]),
                )
            )
    return rows
