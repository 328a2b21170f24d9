"""The CUDA paths: run with ``python -m pytest -m gpu`` on a machine with a GPU.

Deselected by default (``-m 'not gpu'``) and skipped without CUDA.
"""

import copy
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from nets import ConvNet, tiny_classifier_net
from sklearn.base import clone
from torch.utils.data import TensorDataset

from sktransfer import ArrayLoader, TransferClassifier

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _on_gpu(module):
    return all(p.is_cuda for p in module.parameters())


def _trained_and_predicts_as_its_weights(clf, X):
    """The loss fell; predict_proba is the softmax of the outputs on the CPU."""
    losses = clf.net_.history[:, "train_loss"]
    assert losses[-1] < losses[0]
    module = copy.deepcopy(clf.net_.module_).cpu().eval()
    with torch.no_grad():
        expected = torch.softmax(module(torch.as_tensor(X)), dim=1).numpy()
    np.testing.assert_allclose(clf.predict_proba(X), expected, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def gpu_pretrained(digit_images):
    net = tiny_classifier_net(ConvNet, device="cuda", max_epochs=3)
    clf = TransferClassifier(net, frozen="features.*", random_state=0)
    return clf.fit_source(digit_images.X_source, digit_images.y_source)


def test_pretrain_fine_tune_and_predict_on_the_gpu(gpu_pretrained, digit_images):
    assert all(not w.is_cuda for w in gpu_pretrained.source_weights_.values())
    clf = clone(gpu_pretrained).fit(digit_images.X_target, digit_images.y_target)
    assert _on_gpu(clf.net_.module_)
    proba = clf.predict_proba(digit_images.X_test)
    assert isinstance(proba, np.ndarray)
    np.testing.assert_allclose(proba.sum(axis=1), 1, rtol=1e-6)
    _trained_and_predicts_as_its_weights(clf, digit_images.X_test)
    # The frozen features were not updated on the GPU either.
    fitted = clf.net_.module_.state_dict()
    for key, value in gpu_pretrained.source_weights_.items():
        if key.startswith("features."):
            assert torch.equal(fitted[key].cpu(), value)


def test_the_frozen_stage_is_cached_on_the_gpu(gpu_pretrained, digit_images):
    X, y = digit_images.X_target, digit_images.y_target
    cached = clone(gpu_pretrained).fit(X, y)
    uncached = clone(gpu_pretrained).set_params(cache_frozen=False).fit(X, y)
    assert cached.frozen_cache_["cached"]
    assert cached.frozen_cache_["device"].startswith("cuda")
    for key, value in cached.net_.module_.state_dict().items():
        torch.testing.assert_close(
            value, uncached.net_.module_.state_dict()[key], rtol=1e-4, atol=1e-5
        )


def test_l2sp_and_discriminative_rates_on_the_gpu(gpu_pretrained, digit_images):
    clf = clone(gpu_pretrained).set_params(frozen=(), l2sp=0.1, shared_lr_scale=0.1)
    clf.fit(digit_images.X_target, digit_images.y_target)
    assert _on_gpu(clf.net_.module_)


def test_bfloat16_autocast_on_the_gpu(gpu_pretrained, digit_images):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    clf = clone(gpu_pretrained).set_params(frozen=(), autocast="bfloat16")
    clf.fit(digit_images.X_target, digit_images.y_target)
    assert all(p.dtype == torch.float32 for p in clf.net_.module_.parameters())
    _trained_and_predicts_as_its_weights(clf, digit_images.X_test)


def test_weight_files_move_between_devices(gpu_pretrained, digit_images, tmp_path):
    gpu_pretrained.save_source(tmp_path / "source.pt")
    cpu = TransferClassifier(tiny_classifier_net(ConvNet), random_state=0)
    cpu.load_source(tmp_path / "source.pt").fit(
        digit_images.X_target, digit_images.y_target
    )
    assert not any(p.is_cuda for p in cpu.net_.module_.parameters())
    gpu = TransferClassifier(
        tiny_classifier_net(ConvNet, device="cuda"), random_state=0
    ).load_source(tmp_path / "source.pt")
    gpu.fit(digit_images.X_target, digit_images.y_target)
    assert _on_gpu(gpu.net_.module_)


def test_array_loader_slices_gpu_tensors():
    X = torch.arange(20.0, device="cuda").reshape(10, 2)
    y = torch.arange(10, device="cuda")
    loader = ArrayLoader(TensorDataset(X, y), batch_size=4, shuffle=True)
    batches = list(loader)
    assert loader.fast
    assert all(Xb.is_cuda for Xb, _ in batches)
    assert sorted(torch.cat([yb for _, yb in batches]).tolist()) == list(range(10))


_LOAD_ON_CPU = textwrap.dedent(
    """
    import pickle, sys
    import numpy as np, torch
    sys.path.insert(0, {tests!r})
    assert not torch.cuda.is_available()
    clf = pickle.load(open({path!r}, "rb"))
    X = np.load({X!r})
    np.save({out!r}, clf.predict_proba(X))
    """
)


def test_a_gpu_fitted_pickle_loads_on_a_cpu_only_machine(
    gpu_pretrained, digit_images, tmp_path
):
    clf = clone(gpu_pretrained).set_params(unfreeze=((2, "features.1.*"),))
    clf.fit(digit_images.X_target, digit_images.y_target)
    expected = clf.predict_proba(digit_images.X_test)
    path, X, out = tmp_path / "clf.pkl", tmp_path / "X.npy", tmp_path / "proba.npy"
    path.write_bytes(pickle.dumps(clf))
    np.save(X, digit_images.X_test)
    script = _LOAD_ON_CPU.format(
        tests=str(Path(__file__).parent),
        path=str(path),
        X=str(X),
        out=str(out),
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "CUDA_VISIBLE_DEVICES": ""},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(np.load(out), expected, rtol=1e-4, atol=1e-5)
