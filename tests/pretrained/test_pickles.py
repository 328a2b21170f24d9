"""Fitted estimators pickled by sktransfer 0.1.0 still load and predict the same.

Labels are compared exactly, scores to float32 rounding (kernels differ by CPU).

The fixtures were written by ``tests/fixtures/make_pickles.py`` with the code of
0.1.0: a classifier whose frozen stage was cached, a regressor, a classifier
with augmentation and test-time views, and an early-stopped one. Each holds
the samples and the outputs the estimator gave before it was pickled.
"""

import importlib
import pickle
from pathlib import Path

import numpy as np
import pytest

FIXTURES = sorted(
    (Path(__file__).parents[1] / "fixtures" / "pickles_0_1_0").glob("*.pkl")
)


def test_the_fixtures_are_there():
    assert len(FIXTURES) == 4


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_a_pickle_of_0_1_0_predicts_as_it_did(path):
    with open(path, "rb") as f:
        payload = pickle.load(f)  # noqa: S301 (our own fixtures)
    estimator, X = payload["estimator"], payload["X"]
    for method, expected in payload["expected"].items():
        got = getattr(estimator, method)(X)
        if np.issubdtype(np.asarray(expected).dtype, np.floating):
            # The same float32 operations, but the CPU's kernels (vector width,
            # summation order) may differ from the machine that wrote the
            # fixture: equal to float32 rounding, not bit for bit.
            np.testing.assert_allclose(
                got, expected, rtol=1e-5, atol=1e-6, err_msg=method
            )
        else:
            np.testing.assert_array_equal(got, expected, err_msg=method)


@pytest.mark.parametrize(
    ("old", "name", "new"),
    [
        ("sktransfer._layers", "_hold_eval", "sktransfer._torch._held"),
        ("sktransfer._layers", "check_patterns", "sktransfer._torch._layers"),
        (
            "sktransfer._compare",
            "TransferComparison",
            "sktransfer._selection._comparison",
        ),
        ("sktransfer._cache", "FrozenStage", "sktransfer._frozen_stage._stage"),
    ],
)
def test_a_name_of_a_module_split_since_0_1_0_still_unpickles(old, name, new):
    # 0.1.0 pickled a network with a frozen layer's hook (a Checkpoint with
    # f_pickle during fit) as sktransfer._layers._hold_eval; that module was split.
    obj = getattr(importlib.import_module(new), name)
    data = pickle.dumps(obj, protocol=0)
    assert new.encode() in data
    assert pickle.loads(data.replace(new.encode(), old.encode())) is obj  # noqa: S301
