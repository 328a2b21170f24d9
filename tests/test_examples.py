"""The examples run as a user runs them (MNIST from a fake mirror on disk)."""

import gzip
import hashlib
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sktransfer import datasets

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_mirror(folder, seed):
    """Write the four gzipped IDX files of a tiny MNIST-like data set."""

    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    md5 = {}
    for prefix, n in (("train", 60), ("t10k", 20)):
        X = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        for kind, array, magic in (("images-idx3", X, 2051), ("labels-idx1", y, 2049)):
            name = f"{prefix}-{kind}-ubyte.gz"
            header = np.array([magic, *array.shape], dtype=">u4").tobytes()
            (folder / name).write_bytes(gzip.compress(header + array.tobytes()))
            md5[name] = hashlib.md5((folder / name).read_bytes()).hexdigest()
    return {"base_url": folder.as_uri() + "/", "md5": md5}


def test_mnist_to_fashion_mnist_downloads_and_runs(tmp_path, monkeypatch, capsys):
    for seed, dataset in enumerate(("mnist", "fashion_mnist")):
        table = write_mirror(tmp_path / "mirror" / dataset, seed)
        monkeypatch.setitem(datasets._REMOTE, dataset, table)
    example = load_example("mnist_to_fashion_mnist")
    home = tmp_path / "home"
    example.main(
        [
            "--data-home", str(home),
            "--labels-per-class", "2",
            "--max-epochs-source", "1",
            "--max-epochs-target", "2",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "source: 60 MNIST images; target: 20 Fashion-MNIST images" in out
    assert "Pretraining on the source task: 60 samples, 10 classes" in out
    scores = re.findall(r"test accuracy, .*:\s+(\d\.\d{3})", out)
    assert len(scores) == 2
    assert all(0.0 <= float(s) <= 1.0 for s in scores)
    assert len(list((home / "sktransfer" / "fashion_mnist").iterdir())) == 4


@pytest.mark.network
def test_mnist_checksums_match_the_real_mirrors(tmp_path):
    for dataset in ("mnist", "fashion_mnist"):
        X, y = datasets.fetch_mnist(dataset, subset="test", data_home=tmp_path)
        assert X.shape == (10000, 28, 28)
        assert sorted(set(y.tolist())) == list(range(10))


def test_compare_methods_runs_and_saves_its_plot(tmp_path, capsys):
    example = load_example("compare_methods")
    output = tmp_path / "methods.png"
    comparison = example.main(
        [
            "--labels-per-class", "4",
            "--folds", "2",
            "--epochs", "2",
            "--source-epochs", "1",
            "--output", str(output),
        ]
    )  # fmt: skip
    assert list(comparison.scores) == [
        "scratch",
        "transfer",
        "linear probe",
        *example.SETTINGS,
    ]
    assert all(len(scores) == 2 for scores in comparison.scores.values())
    assert output.read_bytes().startswith(b"\x89PNG")
    printed = capsys.readouterr().out
    assert "Verdict:" in printed
    assert "gradual unfreezing" in printed


def test_pretrained_backbone_tunes_on_a_local_dask_cluster():
    pytest.importorskip("distributed")
    # As a user runs it: a script, so that the workers unpickle its SmallCNN.
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "pretrained_backbone.py")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "4 candidates x 3 folds on Dask" in out
    assert "best_estimator_ holds the hand-trained backbone's weights: True" in out
    test = float(re.search(r"refitted on all 100 labels: (\d\.\d{3})", out)[1])
    assert test > 0.6  # far above chance (0.2)
