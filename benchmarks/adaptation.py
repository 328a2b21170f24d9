"""Unlabelled target rows: adaptation methods against source-only and the oracle.

Run from the repository root::

    python benchmarks/adaptation.py              # 3 pairs x 5 seeds
    python benchmarks/adaptation.py --quick      # a smoke run, seconds
    python benchmarks/adaptation.py --seeds 2 --pairs digits,tabular
    python benchmarks/adaptation.py --skada-only  # against skada alone, minutes

Shifted pairs (all generated offline; the classes are the same on both sides):

- ``digits``: scikit-learn's 8x8 digits, a CNN. The source is half of the
  images; the target the other half, shifted deterministically: moved one
  pixel right and one down, contrast halved, on a grey background.
- ``tabular``: covariate shift. ``make_classification`` (4 classes, 20
  features); the source rows are drawn with probability ``sigmoid(-2 x0)``,
  the target rows with ``sigmoid(2 x0)``: the same labelling, other inputs.
- ``shift1d``: the 1-D signals of ``benchmarks/transfer_quality.py``: source
  shifts in [-8, 8] and little noise, target shifts in [8, 20], more noise and
  a linear trend.

For each pair and seed the network is pretrained on the labelled source rows
(``fit_source``), then fitted on a sample of the source rows with their labels
beside unlabelled target rows (``y == -1``):

- ``source only``: ``adapt=None`` on the labelled rows only (the "no
  adaptation" candidate);
- ``coral``, ``mmd``, ``dann``, ``self_training``: each with the
  ``adapt_weight`` that :func:`~sktransfer.prediction_entropy_scorer` picks
  on held-out unlabelled target rows (no target label is read);
- ``adabn``: ``adapt="adabn"``, the normalisation statistics of the target
  rows (no term, no weight);
- ``chosen (entropy)`` / ``chosen (IWV)``: the candidate, among source-only
  and every method and weight, that prediction entropy / importance-weighted
  validation (held-out labelled source rows weighed by their likeness to the
  held-out target rows) picks;
- ``chosen (agreed)``: :func:`~sktransfer.adaptation_refit` over the
  importance-weighted (IWV) and deep embedded validation (DEV) scores of each
  candidate on 3 parts of the held-out rows (each part holding source and
  target rows): source-only unless both scorers say, part by part, that a
  candidate beats it by more than the parts' spread;
- ``target oracle``: fine-tuned from the same pretrained weights on labelled
  target rows (as many as the unlabelled rows the others get);
- ``skada DeepCoral`` / ``DAN`` / ``DANN`` (if skada is installed): skada's
  implementation of the same terms at weight 1, against sktransfer's at
  weight 1, both started from the whole pretrained network (sktransfer with
  ``head=None``, keeping the pretrained output layer as skada does, instead
  of its default fresh head), with the same layer, epochs, optimizer and
  learning rate, and the same batches: skada's ``batch_size`` counts rows
  *per domain* (its sampler puts ``batch_size`` source and ``batch_size``
  target rows in each batch), so it gets half of sktransfer's, whose
  batches hold ``batch_size`` rows of both kinds in their overall
  proportion (``--skada-batch`` overrides it). skada's DANN gets a domain
  classifier ending in a sigmoid (its default ends in a softmax over one
  output, which trains nothing). ``--skada-only`` runs this comparison
  alone; its table gives the mean over seeds of each side and of their
  per-seed difference.

The score is accuracy on held-out labelled target rows. It prints one
markdown table (mean ± std over seeds), fit times, the best candidate in
hindsight per pair (chosen with the test labels, which no chooser reads), and
each goal, met or not.
"""

from __future__ import annotations

import argparse
import copy
import time
import warnings

import numpy as np
import torch
from sklearn.datasets import load_digits, make_classification
from sklearn.exceptions import ConvergenceWarning
from skorch import NeuralNetClassifier
from torch import nn

from sktransfer import (
    MLP,
    TransferClassifier,
    adaptation_refit,
    deep_embedded_validation_scorer,
    importance_weighted_scorer,
    prediction_entropy_scorer,
)

try:  # the 1-D signals and the CNN of the transfer-quality benchmark
    from benchmarks.transfer_quality import ConvNet, _signals
except ImportError:  # run as a script from benchmarks/
    from transfer_quality import ConvNet, _signals

METHODS = ("coral", "mmd", "dann", "self_training", "adabn")
WEIGHTS = (0.1, 1.0, 10.0)


def _weights(method, weights):
    """AdaBN has no term, so no weight to choose: one candidate."""
    return (1.0,) if method == "adabn" else weights


# The held-out rows are scored in this many parts: the "splits" whose spread
# adaptation_refit reads.
N_PARTS = 3


# ------------------------------------------------------------------- pairs


def _shift_image(X):
    """Move 8x8 images one pixel right and down, halve contrast, grey background."""
    out = np.zeros_like(X)
    out[..., 1:, 1:] = X[..., :-1, :-1]
    return 0.5 * out + 0.25


def _digits(rng):
    X, y = load_digits(return_X_y=True)
    X = (X / 16).astype(np.float32).reshape(-1, 1, 8, 8)
    order = rng.permutation(len(X))
    half = len(X) // 2
    source, target = order[:half], order[half:]
    return X[source], y[source], _shift_image(X[target]), y[target]


def _tabular(rng):
    X, y = make_classification(
        8000, 20, n_informative=8, n_classes=4, n_clusters_per_class=2, random_state=0
    )
    X = X.astype(np.float32)
    p_source = 1 / (1 + np.exp(2 * X[:, 0]))
    draw = rng.uniform(size=len(X))
    source = draw < p_source
    return X[source], y[source], X[~source], y[~source]


def _shift1d(rng):
    Xs, ys = _signals(rng, 2000, (-8, 8), 0.1, 0.0)
    Xt, yt = _signals(rng, 1500, (8, 20), 0.3, 0.5)
    return Xs, ys, Xt, yt


PAIRS = {
    "digits": (_digits, "images", "features"),
    "tabular": (_tabular, "mlp", "features"),
    "shift1d": (_shift1d, "signals", "features"),
}


def _module(kind, n_classes):
    if kind == "mlp":
        return MLP(n_features_in=20, n_outputs=n_classes, hidden_layer_sizes=(64, 64))
    if kind == "images":
        return ConvNet(n_outputs=n_classes, dim=2, length=8)
    return ConvNet(n_outputs=n_classes, dim=1, length=40)


def _net_params(epochs, batch_size=64):
    return {
        "criterion": nn.CrossEntropyLoss,
        "optimizer": torch.optim.Adam,
        "lr": 1e-3,
        "max_epochs": epochs,
        "batch_size": batch_size,
        "train_split": None,
        "iterator_train__shuffle": True,
    }


# ---------------------------------------------------------------- one seed


def _split(rng, pair, sizes):
    Xs, ys, Xt, yt = PAIRS[pair][0](rng)
    s, t = rng.permutation(len(Xs)), rng.permutation(len(Xt))
    n_pre, n_src, n_src_val = sizes["pretrain"], sizes["source"], sizes["source_val"]
    n_tgt, n_tgt_val = sizes["target"], sizes["target_val"]
    pre = s[:n_pre]
    src = s[n_pre : n_pre + n_src]
    src_val = s[n_pre + n_src : n_pre + n_src + n_src_val]
    tgt = t[:n_tgt]
    tgt_val = t[n_tgt : n_tgt + n_tgt_val]
    test = t[n_tgt + n_tgt_val :]
    return {
        "pretrain": (Xs[pre], ys[pre]),
        "source": (Xs[src], ys[src]),
        "source_val": (Xs[src_val], ys[src_val]),
        "target": (Xt[tgt], yt[tgt]),
        "target_val": (Xt[tgt_val], yt[tgt_val]),
        "test": (Xt[test], yt[test]),
    }


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _skada(name, pretrained_module, layer, data, epochs, seed, per_domain=32):
    """Return skada's DeepCoral / DAN / DANN (accuracy, seconds), same weights.

    ``per_domain`` is skada's ``batch_size``, which its sampler takes *per
    domain* (a batch holds ``per_domain`` source and ``per_domain`` target
    rows); half sktransfer's ``batch_size`` gives both the same batches.
    None when skada is not installed.
    """
    try:
        from skada import deep
    except ImportError:
        return None

    class Wrapped(nn.Module):  # skada's forward passes sample_weight
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, X, sample_weight=None):
            return self.module(X)

    torch.manual_seed(seed)
    module = Wrapped(copy.deepcopy(pretrained_module))
    params = _net_params(epochs, per_domain)
    params.pop("criterion")
    params.pop("iterator_train__shuffle")  # skada's sampler draws the batches
    if name == "dann":
        from skada.deep.modules import DomainClassifier

        with torch.no_grad():
            width = getattr(pretrained_module, layer)(
                torch.as_tensor(data["source"][0][:2])
            ).shape[1]
        # skada's default ends in a softmax over one output: a constant, which
        # trains nothing (its fault); a sigmoid makes it the paper's.
        classifier = DomainClassifier(num_features=width)
        classifier.classifier[-1] = nn.Sigmoid()
        params["domain_classifier"] = classifier
    make = {"coral": deep.DeepCoral, "mmd": deep.DAN, "dann": deep.DANN}[name]
    net = make(module, layer_name=f"module.{layer}", reg=1.0, verbose=0, **params)
    Xs, ys = data["source"]
    Xt, _ = data["target"]
    X = np.concatenate([Xs, Xt])
    y = np.concatenate([ys, -np.ones(len(Xt), dtype=ys.dtype)])
    domain = np.concatenate([np.ones(len(Xs)), -2 * np.ones(len(Xt))]).astype(int)
    _, seconds = _timed(lambda: net.fit(X, y, sample_domain=domain))
    Xtest, ytest = data["test"]
    pred = net.predict(Xtest, sample_domain=-2 * np.ones(len(Xtest), dtype=int))
    return float(np.mean(pred == ytest)), seconds


def run_pair(
    pair,
    seed,
    *,
    sizes,
    epochs,
    source_epochs,
    weights,
    skada,
    skada_only=False,
    batch_size=64,
    skada_batch=None,
):
    """Return the scores of every method on one pair and seed, as a dict.

    With ``skada_only``, only the terms skada also has, at weight 1, and
    skada's; ``skada_batch`` is skada's batch size per domain (default half
    ``batch_size``).
    """
    rng = np.random.RandomState(seed)
    data = _split(rng, pair, sizes)
    _, kind, layer = PAIRS[pair]
    n_classes = len(np.unique(data["pretrain"][1]))
    # The module instance's initial weights are given weights (random_state
    # seeds what the estimator draws, not an instance made outside it).
    torch.manual_seed(seed)
    template = NeuralNetClassifier(
        _module(kind, n_classes), **_net_params(epochs, batch_size)
    )
    base = TransferClassifier(
        template,
        head="head",
        source_params={"max_epochs": source_epochs, "batch_size": 64},
        random_state=seed,
    )
    base.fit_source(*data["pretrain"])
    Xs, ys = data["source"]
    Xt, yt = data["target"]
    X_mix = np.concatenate([Xs, Xt])
    y_mix = np.concatenate([ys, -np.ones(len(Xt), dtype=ys.dtype)])
    # Held-out rows for choosing: unlabelled target rows, labelled source rows.
    Xv = np.concatenate([data["source_val"][0], data["target_val"][0]])
    yv = np.concatenate(
        [data["source_val"][1], -np.ones(len(data["target_val"][0]), dtype=ys.dtype)]
    )
    Xtest, ytest = data["test"]
    # The held-out rows in N_PARTS parts, each with source and target rows.
    n_sv = len(data["source_val"][0])
    parts = [
        np.r_[a, n_sv + b]
        for a, b in zip(
            np.array_split(np.arange(n_sv), N_PARTS),
            np.array_split(np.arange(len(Xv) - n_sv), N_PARTS),
            strict=True,
        )
    ]
    results, times, entropy, iwv, split_scores = {}, {}, {}, {}, {}

    def evaluate(name, estimator, X, y):
        fitted, seconds = _timed(lambda: estimator.fit(X, y))
        results[name] = fitted.score(Xtest, ytest)
        times[name] = seconds
        entropy[name] = prediction_entropy_scorer(fitted, Xv, yv)
        iwv[name] = importance_weighted_scorer(fitted, Xv, yv)
        split_scores[name] = {
            scorer: [score(fitted, Xv[part], yv[part]) for part in parts]
            for scorer, score in (
                ("iwv", importance_weighted_scorer),
                ("dev", deep_embedded_validation_scorer),
            )
        }

    if skada_only:
        row = {}
        _add_skada(row, template, base, layer, data, epochs, seed, skada_batch)
        return row
    evaluate("source only", base.__sklearn_clone__(), Xs, ys)
    for method in METHODS:
        for weight in _weights(method, weights):
            est = base.__sklearn_clone__().set_params(
                adapt=method, adapt_weight=weight, adapt_threshold=0.9
            )
            evaluate(f"{method}@{weight:g}", est, X_mix, y_mix)
    evaluate("target oracle", base.__sklearn_clone__(), Xt, yt)
    row = {
        "source only": results["source only"],
        "target oracle": results["target oracle"],
    }
    for method in METHODS:
        names = [f"{method}@{w:g}" for w in _weights(method, weights)]
        best = max(names, key=entropy.get)
        row[method] = results[best]
        row[f"{method} weight"] = float(best.split("@")[1])
    candidates = ["source only"] + [
        f"{m}@{w:g}" for m in METHODS for w in _weights(m, weights)
    ]
    row["chosen (entropy)"] = results[max(candidates, key=entropy.get)]
    row["chosen (IWV)"] = results[max(candidates, key=iwv.get)]
    row["chosen (IWV) name"] = max(candidates, key=iwv.get)
    row["chosen (entropy) name"] = max(candidates, key=entropy.get)
    # adaptation_refit on the parts' scores, as a search's cv_results_.
    cv_results = {
        "params": [
            {"adapt": None} if c == "source only" else {"adapt": c} for c in candidates
        ]
    }
    for scorer in ("iwv", "dev"):
        for k in range(N_PARTS):
            cv_results[f"split{k}_test_{scorer}"] = np.array(
                [split_scores[c][scorer][k] for c in candidates]
            )
        cv_results[f"mean_test_{scorer}"] = np.mean(
            [cv_results[f"split{k}_test_{scorer}"] for k in range(N_PARTS)], axis=0
        )
    agreed = candidates[adaptation_refit(cv_results)]
    row["chosen (agreed)"] = results[agreed]
    row["chosen (agreed) name"] = agreed
    for name in candidates:  # every candidate, for the best in hindsight
        row[f"all {name}"] = results[name]
    if skada:
        _add_skada(row, template, base, layer, data, epochs, seed, skada_batch)
    return row


def _add_skada(row, template, base, layer, data, epochs, seed, per_domain):
    """Add sktransfer's and skada's three terms at weight 1 to ``row``.

    Both start from the whole pretrained network: sktransfer with
    ``head=None`` (the pretrained output layer kept, as skada keeps it; by
    default ``fit`` starts a fresh head, which on these pairs, whose classes
    are the source's, costs about a point) and the features at ``layer``.
    """
    Xs, ys = data["source"]
    Xt, _ = data["target"]
    X_mix = np.concatenate([Xs, Xt])
    y_mix = np.concatenate([ys, -np.ones(len(Xt), dtype=ys.dtype)])
    Xtest, ytest = data["test"]
    for method in ("coral", "mmd", "dann"):
        est = base.__sklearn_clone__().set_params(
            head=None, adapt=method, adapt_layer=layer, adapt_weight=1.0
        )
        fitted, seconds = _timed(lambda est=est: est.fit(X_mix, y_mix))
        row[f"{method}@1"] = fitted.score(Xtest, ytest)
        row[f"{method}@1 seconds"] = seconds
    pretrained = copy.deepcopy(template.module)
    pretrained.load_state_dict(base.source_weights_)
    if per_domain is None:
        per_domain = max(1, template.batch_size // 2)
    for method in ("coral", "mmd", "dann"):
        out = _skada(method, pretrained, layer, data, epochs, seed, per_domain)
        if out is not None:
            row[f"skada {method}@1"], row[f"skada {method}@1 seconds"] = out


# ------------------------------------------------------------------ report

COLUMNS = (
    "source only",
    "coral",
    "mmd",
    "dann",
    "self_training",
    "adabn",
    "chosen (entropy)",
    "chosen (IWV)",
    "chosen (agreed)",
    "target oracle",
)


def _cell(values):
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.3f} ± {values.std():.3f}"


def format_table(rows):
    """Return the markdown table of target accuracies (mean ± std over seeds)."""
    lines = [
        "| pair | " + " | ".join(COLUMNS) + " |",
        "|---" * (len(COLUMNS) + 1) + "|",
    ]
    for pair, seeds in rows.items():
        cells = [_cell([r[c] for r in seeds]) for c in COLUMNS]
        lines.append(f"| {pair} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_skada(rows):
    """Return the markdown table of sktransfer against skada at weight 1."""
    lines = [
        "| pair | term | sktransfer acc | skada acc | paired difference "
        "| sktransfer s | skada s |",
        "|---|---|---|---|---|---|---|",
    ]
    for pair, seeds in rows.items():
        for method in ("coral", "mmd", "dann"):
            key = f"skada {method}@1"
            if key not in seeds[0]:
                continue
            lines.append(
                f"| {pair} | {method} | {_cell([r[f'{method}@1'] for r in seeds])} "
                f"| {_cell([r[key] for r in seeds])} "
                f"| {_cell([r[f'{method}@1'] - r[key] for r in seeds])} "
                f"| {np.mean([r[f'{method}@1 seconds'] for r in seeds]):.1f} "
                f"| {np.mean([r[key + ' seconds'] for r in seeds]):.1f} |"
            )
    return "\n".join(lines)


def format_goals(rows):
    """Return the issue's goals, each met or not, and the best in hindsight."""
    lines = []
    recovered_by = {}
    helped_pairs = []
    for pair, seeds in rows.items():
        none = np.mean([r["source only"] for r in seeds])
        oracle = np.mean([r["target oracle"] for r in seeds])
        gap = oracle - none
        for chooser in ("chosen (entropy)", "chosen (IWV)", "chosen (agreed)"):
            chosen = np.mean([r[chooser] for r in seeds])
            loss = none - chosen
            recovered = (chosen - none) / gap if gap > 0 else float("nan")
            recovered_by.setdefault(chooser, {})[pair] = recovered
            names = sorted({r[f"{chooser} name"] for r in seeds})
            lines.append(
                f"- {pair}, {chooser}: {chosen:.3f} vs source only {none:.3f} "
                f"(loses {max(loss, 0) * 100:.1f} points; goal <= 1: "
                f"{'met' if loss <= 0.01 else 'NOT met'}); recovers "
                f"{recovered * 100:.0f}% of the gap to the oracle {oracle:.3f}; "
                f"picked {', '.join(names)}"
            )
        candidates = [k[len("all ") :] for k in seeds[0] if k.startswith("all ")]
        means = {c: np.mean([r[f"all {c}"] for r in seeds]) for c in candidates}
        best = max(means, key=means.get)
        share = (means[best] - none) / gap if gap > 0 else float("nan")
        lines.append(
            f"- {pair}, best in hindsight (target labels): {best} "
            f"{means[best]:.3f}, recovers {share * 100:.1f}% of the gap"
        )
        if share >= 0.4:
            helped_pairs.append(pair)
    agreed = recovered_by["chosen (agreed)"]
    never_loses = all(
        np.mean([r["source only"] for r in seeds])
        - np.mean([r["chosen (agreed)"] for r in seeds])
        <= 0.01
        for seeds in rows.values()
    )
    lines.append(
        "- goal 1, chosen (agreed) never loses more than 1 point to source only: "
        f"{'met' if never_loses else 'NOT met'}"
    )
    n_recovered = sum(agreed[p] >= 0.4 for p in rows)
    if len(helped_pairs) >= 2:
        verdict = "met" if n_recovered >= 2 else "NOT met"
    else:
        verdict = (
            "out of reach of any chooser (it needs a method that recovers >= 40% "
            "in hindsight on at least 2 pairs)"
        )
    lines.append(
        f"- goal 2, chosen (agreed) recovers >= 40% of the gap on {n_recovered} of "
        f"{len(rows)} pairs; in hindsight some method does on {len(helped_pairs)} "
        f"({', '.join(helped_pairs) or 'none'}): {verdict}"
    )
    return "\n".join(lines)


def main(argv=None):
    """Run the benchmark and print its tables; return the rows."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--pairs", default=",".join(PAIRS))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--source-epochs", type=int, default=30)
    parser.add_argument("--no-skada", action="store_true")
    parser.add_argument(
        "--skada-only",
        action="store_true",
        help="only coral, mmd and dann at weight 1 beside skada's (its table)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="sktransfer's rows per batch"
    )
    parser.add_argument(
        "--skada-batch",
        type=int,
        default=None,
        help="skada's rows per domain in a batch (default: half --batch-size, "
        "so that both get the same batches)",
    )
    args = parser.parse_args(argv)
    pairs = args.pairs.split(",")
    unknown = sorted(set(pairs) - set(PAIRS))
    if unknown:
        parser.error(f"unknown pairs {unknown}; choose from {sorted(PAIRS)}")
    sizes = {
        "pretrain": 400,
        "source": 300,
        "source_val": 150,
        "target": 300,
        "target_val": 150,
    }
    seeds, epochs, source_epochs, weights = (
        args.seeds,
        args.epochs,
        args.source_epochs,
        WEIGHTS,
    )
    if args.quick:
        seeds, epochs, source_epochs, weights = 1, 2, 2, (1.0,)
        sizes = dict.fromkeys(sizes, 60)
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        for pair in pairs:
            rows[pair] = [
                run_pair(
                    pair,
                    seed,
                    sizes=sizes,
                    epochs=epochs,
                    source_epochs=source_epochs,
                    weights=weights,
                    skada=not args.no_skada,
                    skada_only=args.skada_only,
                    batch_size=args.batch_size,
                    skada_batch=args.skada_batch,
                )
                for seed in range(seeds)
            ]
            print(f"[{pair}] done at {time.perf_counter() - start:.0f} s", flush=True)
    if not args.skada_only:
        print(format_table(rows))
        print()
    print(format_skada(rows))
    if not args.skada_only:
        print()
        print(format_goals(rows))
    print(
        f"\nseeds={seeds} epochs={epochs} source_epochs={source_epochs} "
        f"weights={weights} torch threads=1; wall time "
        f"{time.perf_counter() - start:.0f} s"
    )
    return rows


if __name__ == "__main__":
    main()
