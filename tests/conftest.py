"""Shared fixtures: seeded randomness and tiny networks and data sets."""

import os

# scikit-learn's array-API check (one of the estimator checks) runs only when
# SciPy sees this before it is imported; the tests import SciPy after this file.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from sktransfer.datasets import make_digits_transfer  # noqa: E402

# The tests' networks have a few dozen units: torch's intra-op threads gain them
# nothing and, on 2 cores, cost several times the run time in synchronisation.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_everything():
    np.random.seed(0)  # noqa: NPY002 (seeds code that uses the legacy global RNG)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def digits():
    """Digits 0-4 as the source task, 10 labelled digits 5-9 per class as target."""
    return make_digits_transfer(10, random_state=0)


@pytest.fixture(scope="session")
def digit_images():
    return make_digits_transfer(10, random_state=0, images=True)


@pytest.fixture
def empty_frozen_store():
    """An empty frozen-output store, emptied again and its bound restored after."""
    from sktransfer import clear_frozen_store, set_frozen_store_limit
    from sktransfer._frozen_stage import _store

    limit = _store.STORE.max_bytes
    clear_frozen_store()
    yield
    clear_frozen_store()
    set_frozen_store_limit(limit)


@pytest.fixture(scope="module")
def source_weights(digit_images):
    """Weights of the tests' small ConvNet pretrained on 200 source images."""
    from nets import ConvNet, tiny_classifier_net

    from sktransfer import TransferClassifier

    net = tiny_classifier_net(ConvNet, max_epochs=2)
    clf = TransferClassifier(net, random_state=0)
    clf.fit_source(digit_images.X_source[:200], digit_images.y_source[:200])
    return clf.source_weights_
