"""Searches on a Dask cluster: the source weights travel once and are used everywhere.

The cluster is a LocalCluster with two worker processes. Bytes are measured by
wrapping ``distributed.protocol.pickle.dumps`` in this process, which holds the
client and the scheduler: every task graph the client sends, every task the
scheduler forwards and every scattered object is pickled there.
"""

import copy
import os
import pickle
import subprocess
import sys

import joblib
import numpy as np
import pytest
import torch

distributed = pytest.importorskip("distributed")

import distributed.protocol.pickle as dask_pickle  # noqa: E402
from nets import tiny_classifier_net  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.model_selection import (  # noqa: E402
    GridSearchCV,
    StratifiedKFold,
    cross_val_score,
)

from sktransfer import TransferClassifier  # noqa: E402
from sktransfer._pretrained import _dask  # noqa: E402

FEATURES = ("features.1.weight", "features.1.bias")


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    client = distributed.Client(cluster)
    client.wait_for_workers(2)
    yield client
    client.close()
    cluster.close()


@pytest.fixture(scope="module")
def pretrained(digits):
    # 512 hidden units: about 140 kB of weights, ten times a task without them.
    net = tiny_classifier_net(module__hidden_layer_sizes=(512,))
    clf = TransferClassifier(net, random_state=0)
    return clf.fit_source(digits.X_source, digits.y_source)


def n_bytes(state_dict):
    return sum(value.numel() * value.element_size() for value in state_dict.values())


@pytest.fixture
def pickle_sizes(monkeypatch):
    """The sizes of the pickles Dask makes in this process, in-band and out-of-band."""
    sizes = []
    dumps = dask_pickle.dumps

    def counting_dumps(x, *args, **kwargs):
        out = dumps(x, *args, **kwargs)
        buffers = kwargs.get("buffers") or ()
        sizes.append(len(out) + sum(memoryview(b).nbytes for b in buffers))
        return out

    monkeypatch.setattr(dask_pickle, "dumps", counting_dumps)
    return sizes


class FeaturesEqual:
    """Scorer: 1.0 when the fitted network's features are bit-identical to given ones.

    It holds digests, not tensors, so that it does not bring weights to the
    workers itself.
    """

    def __init__(self, state_dict):
        self.digests = {key: _dask.digest({key: state_dict[key]}) for key in FEATURES}

    def __call__(self, estimator, X, y):
        state = estimator.net_.module_.state_dict()
        return float(
            all(_dask.digest({k: state[k]}) == d for k, d in self.digests.items())
        )


def got_a_reference(estimator, X, y):
    """Scorer: 1.0 when the task received the weights as a reference."""
    return float(isinstance(estimator._pretrained, _dask._Remote))


def times_received():
    return dict(_dask._RECEIVED)


async def dumps_in_event_loop(obj):
    return pickle.dumps(obj)


def test_grid_search_on_dask_fine_tunes_every_candidate_from_the_source(
    client, pretrained, digits
):
    source = {key: value.clone() for key, value in pretrained.source_weights_.items()}
    grid = GridSearchCV(
        pretrained,
        {"frozen": [(), "features.*"], "net__lr": [0.01, 0.003]},
        scoring={
            "accuracy": "accuracy",
            "kept": FeaturesEqual(source),
            "by_reference": got_a_reference,
        },
        refit="accuracy",
        cv=StratifiedKFold(2),
    )
    with joblib.parallel_backend("dask"):
        grid.fit(digits.X_target, digits.y_target)
    results = grid.cv_results_
    # Every fit on a worker started from the source weights: frozen candidates
    # hold them bit for bit, the others moved away from them.
    for i, params in enumerate(results["params"]):
        for split in range(2):
            kept = results[f"split{split}_test_kept"][i]
            assert kept == (1.0 if params["frozen"] else 0.0)
    assert (results["mean_test_by_reference"] == 1.0).all()
    # Each worker received the weights once at most, whatever its number of tasks.
    ((future, _),) = _dask._SHIPMENTS[pretrained._pretrained].values()
    for received in client.run(times_received).values():
        assert received.get(future.key, 0) <= 1
    # The same search without Dask scores the same.
    local = clone(grid).set_params(scoring="accuracy", refit=False)
    local.fit(digits.X_target, digits.y_target)
    np.testing.assert_array_equal(
        results["mean_test_accuracy"], local.cv_results_["mean_test_score"]
    )
    best = grid.best_estimator_
    assert best._pretrained is pretrained._pretrained
    for key, value in source.items():
        assert torch.equal(best.source_weights_[key], value)
    assert best.source_history_ == pretrained.source_history_


def test_source_weights_cross_to_the_cluster_once(
    client, pretrained, digits, pickle_sizes, monkeypatch
):
    weights = n_bytes(pretrained.source_weights_)
    # Deep copies hold records of their own, never shipped before.
    with_shipping = copy.deepcopy(pretrained).set_params(net__max_epochs=1)
    without_shipping = copy.deepcopy(with_shipping)

    def search(estimator):
        pickle_sizes.clear()
        with joblib.parallel_backend("dask"):
            cross_val_score(
                estimator, digits.X_target, digits.y_target, cv=StratifiedKFold(4)
            )
        return list(pickle_sizes)

    shipped = search(with_shipping)
    with monkeypatch.context() as patch:
        patch.setattr(_dask, "ship", lambda record: None)
        carried = search(without_shipping)
    # Without shipping, the weights go with every batch of tasks: client to
    # scheduler and scheduler to worker.
    assert sum(size > weights for size in carried) >= 4
    # With it, one pickle carries them (the scatter); every task is small.
    assert sum(size > weights for size in shipped) == 1
    assert max(size for size in shipped if size < weights) < weights / 4
    assert sum(shipped) < sum(carried) / 2


def test_pickles_outside_the_event_loop_carry_the_weights(
    client, pretrained, digits, tmp_path
):
    estimator = copy.deepcopy(pretrained)
    weights = n_bytes(estimator.source_weights_)
    with joblib.parallel_backend("dask"):
        twin = clone(estimator)  # ships the weights to the cluster
    # Pickled by the client's event loop, as task submission does: a reference...
    submitted = client.sync(dumps_in_event_loop, twin)
    assert len(submitted) < weights / 4
    # ...that reads the same weights back from the cluster.
    received = pickle.loads(submitted)
    assert isinstance(received._pretrained, _dask._Remote)
    for key, value in estimator.source_weights_.items():
        assert torch.equal(received.source_weights_[key], value)
    # Any other pickle carries the weights and loads in a process without Dask.
    pickled = tmp_path / "twin.pkl"
    pickled.write_bytes(pickle.dumps(twin))
    assert pickled.stat().st_size > weights
    joblib.dump(twin, tmp_path / "twin.joblib")
    torch.save(dict(estimator.source_weights_), tmp_path / "source.pt")
    code = (
        "import pickle, sys, joblib, torch\n"
        "source = torch.load('source.pt', weights_only=True)\n"
        "with open('twin.pkl', 'rb') as f:\n"
        "    twins = [pickle.load(f), joblib.load('twin.joblib')]\n"
        "for twin in twins:\n"
        "    weights = twin.source_weights_\n"
        "    print(type(twin._pretrained).__name__, weights.keys() == source.keys()\n"
        "          and all(torch.equal(weights[k], v) for k, v in source.items()))\n"
        "print('distributed' in sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=env,
    ).stdout.split()
    assert out == ["_Pretrained", "True", "_Pretrained", "True", "False"]


def test_a_lost_shipment_falls_back_to_carrying_the_weights(client, pretrained):
    estimator = copy.deepcopy(pretrained)
    weights = n_bytes(estimator.source_weights_)
    with joblib.parallel_backend("dask"):
        clone(estimator)
    ((future, _),) = _dask._SHIPMENTS[estimator._pretrained].values()
    client.cancel(future)
    assert len(client.sync(dumps_in_event_loop, estimator)) > weights
    with joblib.parallel_backend("dask"):
        clone(estimator)  # ships them again
    assert len(client.sync(dumps_in_event_loop, estimator)) < weights / 4


def test_a_failed_scatter_warns_and_the_weights_go_with_every_task(
    client, pretrained, monkeypatch
):
    estimator = copy.deepcopy(pretrained)

    def unreachable(*args, **kwargs):
        raise OSError("no route to the workers")

    monkeypatch.setattr(client, "scatter", unreachable)
    with (
        joblib.parallel_backend("dask"),
        pytest.warns(UserWarning, match="no route to the workers.*every task"),
    ):
        clone(estimator)
    weights = n_bytes(estimator.source_weights_)
    assert len(client.sync(dumps_in_event_loop, estimator)) > weights


def read_weights(key, hex_digest):
    return len(_dask._Remote(key, hex_digest, (64,), 5, None).state_dict)


def test_a_task_fails_rather_than_use_other_weights(client, pretrained):
    hex_digest = _dask.digest(pretrained.source_weights_)
    gone = client.submit(read_weights, "sktransfer-gone", hex_digest, pure=False)
    with pytest.raises(RuntimeError, match="gone from the Dask cluster"):
        gone.result()
    other = {key: torch.zeros_like(v) for key, v in pretrained.source_weights_.items()}
    future = client.scatter(_dask._Payload(other, []), hash=False)
    wrong = client.submit(read_weights, future.key, hex_digest, pure=False)
    with pytest.raises(RuntimeError, match="differ from those that were sent"):
        wrong.result()


def test_a_worker_receives_the_weights_once(client, pretrained):
    holder, other = client.scheduler_info()["workers"]
    state = pretrained.source_weights_
    future = client.scatter(_dask._Payload(state, []), workers=[holder], hash=False)
    key, hex_digest = future.key, _dask.digest(state)
    for worker in (holder, other, other):
        task = client.submit(
            read_weights, key, hex_digest, workers=[worker], pure=False
        )
        assert task.result() == len(state)
    received = client.run(times_received)
    assert received[holder].get(key, 0) == 0  # it held them
    assert received[other][key] == 1
