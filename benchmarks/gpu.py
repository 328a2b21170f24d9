"""GPU rows: fine-tuning vs a hand-written loop, the cached frozen stage, prediction.

Run on a machine with CUDA: ``python -m benchmarks.gpu`` (``--quick`` for a smoke
run). Each row is the median of interleaved repetitions, timed with
``torch.cuda.synchronize()`` around the call. Without CUDA it says so and exits.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch
from skorch import NeuralNetClassifier
from torch import nn

from sktransfer import TransferClassifier


class ConvNet(nn.Module):
    """A CNN for 32x32 RGB images: three conv blocks (``features``), a linear head."""

    def __init__(self, n_outputs=10, width=64):
        super().__init__()
        layers, channels = [], 3
        for out in (width, 2 * width, 4 * width):
            layers += [
                nn.Conv2d(channels, out, 3, padding=1),
                nn.BatchNorm2d(out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            channels = out
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.head = nn.Linear(channels * 16, n_outputs)

    def forward(self, X):
        """Return the logits, shape (n_samples, n_outputs)."""
        return self.head(self.features(X))


def _data(n, seed=0):
    rng = np.random.RandomState(seed)
    X = rng.normal(size=(n, 3, 32, 32)).astype(np.float32)
    y = rng.randint(0, 10, size=n).astype(np.int64)
    return X, y


def _timed(fn):
    torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - start


def hand_loop(X, y, *, batch_size, epochs):
    """Train ConvNet on the GPU with a plain PyTorch loop (data on the GPU)."""
    torch.manual_seed(0)
    model = ConvNet().cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    crit = nn.CrossEntropyLoss()
    Xg, yg = torch.from_numpy(X).cuda(), torch.from_numpy(y).cuda()
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(Xg), device="cuda")
        total = 0.0
        for i in range(0, len(Xg), batch_size):
            index = perm[i : i + batch_size]
            opt.zero_grad()
            loss = crit(model(Xg[index]), yg[index])
            loss.backward()
            opt.step()
            total += loss.item()
    return total


def _net(batch_size, epochs):
    return NeuralNetClassifier(
        ConvNet,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=1e-3,
        batch_size=batch_size,
        max_epochs=epochs,
        train_split=None,
        iterator_train__shuffle=True,
        device="cuda",
        verbose=0,
    )


def main(argv=None):
    """Measure and print the GPU rows; return them as (label, ours, baseline)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("No CUDA device: the GPU rows are not measured.")
        return []
    n, epochs, repeats = (512, 1, 1) if args.quick else (10_000, 3, 3)
    X, y = _data(n)
    rows = []

    # 1. Fine-tuning the whole network: sktransfer against the hand loop.
    for batch_size in (32, 128):
        ours, hand = [], []
        for _ in range(repeats):
            clf = TransferClassifier(_net(batch_size, epochs), random_state=0)
            ours.append(_timed(lambda clf=clf: clf.fit(X, y)))
            hand.append(
                _timed(
                    lambda bs=batch_size: hand_loop(X, y, batch_size=bs, epochs=epochs)
                )
            )
        a, b = statistics.median(ours), statistics.median(hand)
        rows.append((f"fine-tune bs={batch_size}: sktransfer / hand loop", a, b))

    # 2. Frozen convolutional stage: cached (computed once) against recomputed.
    cached, uncached = [], []
    for _ in range(repeats):
        for cache, times in ((True, cached), (False, uncached)):
            clf = TransferClassifier(
                _net(128, epochs),
                frozen="features.*",
                cache_frozen=cache,
                random_state=0,
            )
            times.append(_timed(lambda clf=clf: clf.fit(X, y)))
    a, b = statistics.median(cached), statistics.median(uncached)
    rows.append(("frozen features fit: cached / recomputed each epoch", a, b))

    # 3. predict_proba on many rows against calling the module directly.
    Xp, _ = _data(20_000 if not args.quick else 1_000, seed=1)
    clf = TransferClassifier(_net(1024, 1), random_state=0).fit(X, y)
    module = clf.net_.module_.eval()

    def direct():
        with torch.no_grad():
            outs = [
                torch.softmax(module(torch.from_numpy(Xp[i : i + 1024]).cuda()), 1)
                for i in range(0, len(Xp), 1024)
            ]
            return torch.cat(outs).cpu().numpy()

    ours = [_timed(lambda: clf.predict_proba(Xp)) for _ in range(repeats)]
    bare = [_timed(direct) for _ in range(repeats)]
    np.testing.assert_allclose(clf.predict_proba(Xp), direct(), rtol=1e-4, atol=1e-5)
    a, b = statistics.median(ours), statistics.median(bare)
    rows.append((f"predict_proba {len(Xp):,} rows: sktransfer / direct module", a, b))

    name = torch.cuda.get_device_name()
    print(f"{name}, torch {torch.__version__}, {n} samples, {epochs} epochs")
    print("| benchmark | sktransfer | baseline | ratio |")
    print("|---|---:|---:|---:|")
    for label, a, b in rows:
        print(f"| {label} | {a:.3f} s | {b:.3f} s | {a / b:.3f} |")
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
