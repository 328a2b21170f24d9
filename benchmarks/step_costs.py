"""What skorch's training step costs per batch beyond a hand-written PyTorch step.

Run from the repository root::

    python -m benchmarks.step_costs           # about 30 s on 2 CPU cores
    python -m benchmarks.step_costs --quick   # a smoke run

For the fine-tuning benchmark's network (MLP 784-256-128-10, Adam), each
piece of per-batch work that ``TransferClassifier.fit`` runs and a hand loop
(zero_grad, forward, loss, backward, step, ``loss.item()``) does not is timed
alone with :mod:`timeit`, on a fitted estimator's net, and set against a hand
step at batch sizes 16, 32 and 128. Each figure is the best of several
repeats (the least disturbed by other processes), so that the table reads
the same on a busy machine; the pieces are then summed. A last row gives the
once-per-fit cost: ``fit`` on a single batch against the hand loop on it.
"""

from __future__ import annotations

import argparse
import statistics
import time
import timeit
import warnings

import torch
from skorch.dataset import get_len, unpack_data
from skorch.utils import TeeGenerator, to_tensor
from torch import nn

from sktransfer import MLP, TransferClassifier

from .common import _mlp_net, mnist_like
from .finetune import hand_written_loop

BATCH_SIZES = (16, 32, 128)


def _best(fn, number, repeat):
    """Return the best time of one call of ``fn``, in microseconds."""
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number * 1e6


def _pieces(net, batch):
    """Return ``{what: fn}``: each piece of skorch's step a hand loop skips."""
    Xb, yb = batch
    y_pred = net.module_(Xb)
    loss = net.criterion_(y_pred, yb)
    net.history.new_epoch()
    net.history.new_batch()
    net.sktransfer_modes_held_ = True  # as while an epoch runs

    def accumulate():
        accumulator = net.get_train_step_accumulator()
        accumulator.store_step({"loss": loss})
        return accumulator.get_step()

    return {
        "notify('on_batch_begin'): history.new_batch, callbacks": lambda: net.notify(
            "on_batch_begin", batch=batch, training=True
        ),
        "notify('on_batch_end'): callbacks (EpochScoring's returns)": lambda: (
            net.notify(
                "on_batch_end", batch=batch, training=True, loss=loss, y_pred=y_pred
            )
        ),
        "history.record_batch, twice": lambda: (
            net.history.record_batch("train_loss", 1.0),
            net.history.record_batch("train_batch_size", 16),
        ),
        "get_len(batch[0]) (the batch size recorded)": lambda: get_len(Xb),
        "to_tensor in infer and get_loss": lambda: (
            to_tensor(Xb, device=net.device),
            to_tensor(yb, device=net.device),
        ),
        "get_loss chain (classifier, NeuralNet) over the criterion": lambda: (
            net.get_loss(y_pred, yb, X=Xb, training=True)
        ),
        "unpack_data": lambda: unpack_data(batch),
        "step accumulator (kept: LBFGS)": accumulate,
        "_modes_stay (lean step: may a mode have changed?)": net._modes_stay,
        "[removed] on_grad_computed + TeeGenerator, no listener": lambda: net.notify(
            "on_grad_computed",
            named_parameters=TeeGenerator(net.get_all_learnable_params()),
            batch=batch,
            training=True,
        ),
    }, loss


def _hand_step_time(X, y, batch_size, number, repeat):
    """Best time of one hand-written step at ``batch_size``, in microseconds."""
    model = MLP(X.shape[1], 10, hidden_layer_sizes=(256, 128))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.CrossEntropyLoss()
    Xb, yb = torch.from_numpy(X[:batch_size]), torch.from_numpy(y[:batch_size])

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = criterion(model(Xb), yb)
        loss.backward()
        optimizer.step()
        return loss.item()

    return _best(step, number, repeat)


def _fixed_cost(transfer, X, y, batch_size, reps):
    """Median CPU seconds of ``fit`` and of the hand loop on one batch."""
    X, y = X[:batch_size], y[:batch_size]
    pretrained = transfer.source_weights_
    fit, hand = [], []
    for _ in range(reps):
        start = time.process_time()
        transfer.fit(X, y)
        fit.append(time.process_time() - start)
        start = time.process_time()
        hand_written_loop(
            X, y, batch_size=batch_size, max_epochs=2, pretrained=pretrained
        )
        hand.append(time.process_time() - start)
    return statistics.median(fit), statistics.median(hand)


def main(argv=None):
    """Print the per-batch and per-fit cost table; return its rows.

    Parameters
    ----------
    argv : list of str, default=None
        Command-line arguments; ``sys.argv[1:]`` if None.

    Returns
    -------
    rows : list of tuple
        ``(what, microseconds per call)`` for each piece, then the total.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args(argv)
    number, repeat, reps = (20, 2, 1) if args.quick else (2000, 7, 7)
    torch.set_num_threads(1)
    X, y = mnist_like("all", 400, seed=1, flat=True)
    X_source, y_source = mnist_like("source", 200, seed=2, flat=True)
    transfer = TransferClassifier(
        _mlp_net(16, 2), source_params={"max_epochs": 1}, random_state=0
    ).fit_source(X_source, y_source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: 2 epochs
        transfer.fit(X, y)
        batch = (torch.from_numpy(X[:16]), torch.from_numpy(y[:16]))
        pieces, _ = _pieces(transfer.net_, batch)
        rows = [(what, _best(fn, number, repeat)) for what, fn in pieces.items()]
        # The criterion itself is paid by the hand loop too.
        y_pred = transfer.net_.module_(batch[0])
        criterion = _best(
            lambda: transfer.net_.criterion_(y_pred, batch[1]), number, repeat
        )
        rows = [
            (what, us - criterion if what.startswith("get_loss") else us)
            for what, us in rows
        ]
        steps = {
            bs: _hand_step_time(X, y, bs, max(1, number // 20), repeat)
            for bs in BATCH_SIZES
        }
        fit_s, hand_s = _fixed_cost(transfer, X, y, 16, reps)
    kept = sum(us for what, us in rows if not what.startswith("[removed]"))
    rows.append(("total per batch (kept pieces)", kept))
    header = "| per-batch piece | µs | " + " | ".join(
        f"% of a hand step, bs={bs} ({steps[bs]:.0f} µs)" for bs in BATCH_SIZES
    )
    print(header + " |")
    print("|---|---:|" + "---:|" * len(BATCH_SIZES))
    for what, us in rows:
        shares = " | ".join(f"{100 * us / steps[bs]:.1f}" for bs in BATCH_SIZES)
        print(f"| {what} | {us:.1f} | {shares} |")
    print()
    print(
        f"once per fit: fit on one batch (2 epochs) {1e3 * fit_s:.1f} ms CPU, "
        f"the hand loop {1e3 * hand_s:.1f} ms: {1e3 * (fit_s - hand_s):.1f} ms "
        "of checks, net building and epoch-end callbacks"
    )
    return rows


if __name__ == "__main__":
    main()
