"""The goals of issue 20, dynamic padding's token count, a frozen encoder's epochs.

Used by ``python -m benchmarks.text`` (the goals and the token count end the
default run; ``--padding`` and ``--epoch-times`` run the last two alone); see
:mod:`benchmarks.text`.
"""

from __future__ import annotations

import statistics

import numpy as np
import torch

from sktransfer import HuggingFaceNet, TransferClassifier

from .text import (
    BATCH_SIZE,
    ENCODER,
    _load_encoder,
    _mean,
    bbc_news,
    sentiment_tweets,
)


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


def padded_tokens(lengths, batch_size, *, sort=False):
    """Tokens processed when each batch is cut to its longest text."""
    lengths = np.sort(lengths) if sort else np.asarray(lengths)
    return int(
        sum(
            len(chunk) * chunk.max()
            for chunk in np.array_split(
                lengths, range(batch_size, len(lengths), batch_size)
            )
        )
    )


def padding_tokens(model_dir, corpus, train, *, max_length, seed=0):
    """Tokens and predictions with dynamic padding vs padding to ``max_length``.

    A new head on the frozen encoder is fitted on ``train`` (texts, labels);
    its predictions on ``corpus`` come from the estimator (each batch of 16
    cut to its longest text; the encoder's inputs are counted by a hook) and
    from the same network run by hand on every text padded to
    ``max_length``. Returns a dict of token counts (``dynamic``, ``fixed``,
    ``sorted``: batches grouped by length, ``input_order``: batches in the
    input order) and the agreement.
    """
    clf = TransferClassifier(
        HuggingFaceNet(model_dir, max_length=max_length),
        frozen=ENCODER,
        lr=1e-2,
        random_state=seed,
        batch_size=BATCH_SIZE,
        max_epochs=5,
    ).fit(*train)
    module = clf.net_.module_
    counted = []

    def count(_, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        counted.append(int(ids.numel()))

    handle = module.embeddings.register_forward_pre_hook(count, with_kwargs=True)
    try:
        dynamic = clf.predict_proba(corpus)
    finally:
        handle.remove()
    tok, _ = _load_encoder(model_dir)
    enc = tok(
        list(corpus),
        padding="max_length",
        truncation=True,
        max_length=max_length,
        return_tensors="pt",
    )
    model = module.__dict__["model"]
    module.eval()
    fixed = []
    with torch.no_grad():
        for i in range(0, len(corpus), BATCH_SIZE):
            ids = enc["input_ids"][i : i + BATCH_SIZE]
            mask = enc["attention_mask"][i : i + BATCH_SIZE]
            states = model(input_ids=ids, attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).float()
            pooled = (states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            fixed.append(torch.softmax(module.head(pooled), 1))
    fixed = torch.cat(fixed).numpy()
    lengths = enc["attention_mask"].sum(1).numpy()
    return {
        "dynamic": sum(counted),
        "fixed": int(enc["input_ids"].numel()),
        "sorted": padded_tokens(lengths, BATCH_SIZE, sort=True),
        "input_order": padded_tokens(lengths, BATCH_SIZE),
        "same_predictions": bool(np.array_equal(dynamic.argmax(1), fixed.argmax(1))),
        "max_proba_difference": float(np.abs(dynamic - fixed).max()),
    }


def run_padding(model_dir):
    """Print the token counts of dynamic padding on two corpora of mixed lengths."""
    tweets, tweet_labels = sentiment_tweets()
    news, _ = bbc_news()
    rng = np.random.RandomState(0)
    rows = rng.permutation(len(tweets))
    train = (tweets[rows[:32]], tweet_labels[rows[:32]])
    mixed = np.concatenate(
        [tweets[rows[32:128]], news[rng.permutation(len(news))[:32]]]
    )
    corpora = {
        "128 tweets, max_length=128": (tweets[rows[32:160]], 128),
        "96 tweets + 32 news, max_length=256": (mixed[rng.permutation(128)], 256),
    }
    print("dynamic padding: tokens the encoder processes at prediction (batches of 16)")
    goals = []
    for name, (corpus, max_length) in corpora.items():
        r = padding_tokens(model_dir, corpus, train, max_length=max_length)
        ratio = r["fixed"] / r["dynamic"]
        print(
            f"  {name}: padded to max_length {r['fixed']}; as predicted "
            f"{r['dynamic']} ({ratio:.2f}x fewer); batches in the input order "
            f"would be {r['input_order']} ({r['fixed'] / r['input_order']:.2f}x), "
            f"grouped by length {r['sorted']} ({r['fixed'] / r['sorted']:.2f}x); "
            f"same predictions: {r['same_predictions']} (probabilities differ "
            f"by at most {r['max_proba_difference']:.1e})",
            flush=True,
        )
        goals.append(ratio >= 2 and r["same_predictions"])
    return goals


def report_goals(results, padding=None):
    """Print the goals of issue 20 and whether each is met.

    ``results`` maps (task, K, method) to {seed: (accuracy, seconds)}; each
    comparison uses the seeds both rows ran.
    """

    def pair(task, k, a, b):
        ra, rb = results.get((task, k, a), {}), results.get((task, k, b), {})
        seeds = sorted(set(ra) & set(rb))
        if not seeds:
            return None
        return (
            _mean([ra[s][0] for s in seeds]) - _mean([rb[s][0] for s in seeds]),
            statistics.median(ra[s][1] for s in seeds)
            / statistics.median(rb[s][1] for s in seeds),
            len(seeds),
        )

    cells = sorted({(task, k) for task, k, _ in results})
    print("\ngoals (accuracy differences in points; on the seeds both rows ran)")
    verdicts = []

    def verdict(name, checks):
        met = bool(checks) and all(checks)
        verdicts.append(met)
        state = "MET" if met else ("NOT MET" if checks else "not measured")
        print(f"  {name}: {state}")

    checks = []
    for task, k in cells:
        p = pair(task, k, "finetune", "hand_loop")
        if p:
            print(
                f"    {task} K={k}: fine-tuning {p[0]:+.1f} points vs the hand loop, "
                f"{p[1]:.2f}x its time ({p[2]} seeds)"
            )
            checks.append(p[0] >= -1 and p[1] <= 1.15)
    verdict("fine-tuning within 1 point of the hand loop at <= 1.15x its time", checks)
    checks = []
    for task, k in cells:
        p = pair(task, k, "probe", "hand_probe")
        if p:
            print(
                f"    {task} K={k}: probe {p[0]:+.1f} points vs the hand probe "
                f"({p[2]} seeds)"
            )
            checks.append(p[0] >= -1)
    verdict("linear probe within 1 point of the hand mean-pooled probe", checks)
    p = pair("sentiment", 16, "search", "tfidf_lr")
    checks = []
    if p:
        print(
            f"    sentiment K=16: selected {p[0]:+.1f} points vs TF-IDF ({p[2]} seeds)"
        )
        checks.append(p[0] >= 5)
    verdict("sentiment, K=16: the selected model beats TF-IDF by >= 5 points", checks)
    checks = []
    methods_ = ("tfidf_lr", "probe", "frozen_head", "finetune", "layer_decay", "l2sp")
    for task, k in cells:
        gaps = [
            (-p[0], name)
            for name in methods_
            if (p := pair(task, k, "search", name)) is not None
        ]
        if gaps:
            gap, best = max(gaps)
            print(
                f"    {task} K={k}: selected {-gap:+.1f} points vs the best method "
                f"({best})"
                if gap > 0
                else f"    {task} K={k}: selected is (level with) the best"
            )
            checks.append(gap <= 1)
    verdict("every task and K: the selected model within 1 point of the best", checks)
    if padding is not None:
        verdict("dynamic padding: >= 2x fewer tokens, identical predictions", padding)
    return verdicts
