"""Sample and class weights: the loss, the fits they give, routing and errors."""

import numpy as np
import pytest
import sklearn
import torch
from sklearn.base import clone
from sklearn.ensemble import AdaBoostClassifier
from sklearn.metrics import recall_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError
from skorch import NeuralNetClassifier, NeuralNetRegressor
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import sktransfer
from sktransfer import MLP, ArrayLoader, TransferClassifier, TransferRegressor
from sktransfer._skorch import _finetune, _frozen, _weights
from sktransfer._skorch._data import WeightedTarget

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


def _net(cls=NeuralNetClassifier, **params):
    criterion = nn.CrossEntropyLoss if cls is NeuralNetClassifier else nn.MSELoss
    settings = {
        "criterion": criterion,
        "max_epochs": 5,
        "lr": 0.05,
        "batch_size": 64,
        "train_split": None,
        "module__hidden_layer_sizes": (8,),
        "iterator_train__shuffle": True,
    }
    return cls(MLP, **{**settings, **params})


def _params(estimator):
    return [p.detach().clone() for p in estimator.net_.module_.parameters()]


def test_weighted_loss_is_the_hand_computed_weighted_mean_of_one_batch():
    net = _net(module__n_features_in=4, module__n_outputs=3).initialize()
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 3, generator=gen)
    y = torch.tensor([0, 2, 1, 1, 0, 2])
    w = torch.tensor([0.5, 2.0, 0.0, 1.0, 3.0, 1.5])
    per_sample = -torch.log_softmax(logits, dim=1)[torch.arange(6), y]
    expected = (w * per_sample).sum() / w.sum()
    loss = _weights.WeightedLoss(net)(logits, WeightedTarget(y, w), training=True)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    # Plain targets (validation batches) get the unweighted mean.
    plain = _weights.WeightedLoss(net)(logits, y, training=False)
    assert plain.item() == pytest.approx(per_sample.mean().item(), rel=1e-6)
    assert net.criterion_.reduction == "mean"  # restored after each call


def test_weighted_loss_averages_several_targets_per_sample_first():
    net = _net(NeuralNetRegressor, module__n_features_in=4, module__n_outputs=2)
    net.initialize()
    gen = torch.Generator().manual_seed(1)
    pred, target = torch.randn(5, 2, generator=gen), torch.randn(5, 2, generator=gen)
    w = torch.tensor([1.0, 0.0, 2.0, 1.0, 4.0])
    expected = (w * ((pred - target) ** 2).mean(dim=1)).sum() / w.sum()
    loss = _weights.WeightedLoss(net)(pred, WeightedTarget(target, w), training=True)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_l2sp_wraps_the_weighted_loss_and_both_end_with_fit():
    net = _net(module__n_features_in=4, module__n_outputs=3, iterator_train=ArrayLoader)
    net.initialize()
    module = net.module_
    shared = [p for n, p in module.named_parameters() if not n.startswith("out")]
    with torch.no_grad():
        for p in shared:
            p.add_(0.1)
    source = [p.detach().clone() - 0.1 for p in shared]
    logits = torch.randn(4, 3)
    y, w = torch.tensor([0, 1, 2, 0]), torch.tensor([1.0, 2.0, 3.0, 0.0])
    per_sample = -torch.log_softmax(logits, dim=1)[torch.arange(4), y]
    drift = sum(((p - s) ** 2).sum() for p, s in zip(shared, source, strict=True))
    expected = (w * per_sample).sum() / w.sum() + 0.5 / 2 * drift
    with _frozen.fit_scope():
        _weights.install(net, np.ones(10, np.float32))
        with _finetune.l2sp_penalty(net, shared, [], 0.5, 0.0):
            loss = net.get_loss
            loss.source = dict(enumerate(source))
            got = loss(logits, WeightedTarget(y, w), training=True)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert "get_loss" not in vars(net)
    assert "iterator_train__sample_weight" not in vars(net)


def test_array_loader_slices_the_weights_with_the_samples():
    X = torch.arange(20.0).reshape(10, 2)
    y = torch.arange(10)
    w = np.arange(10, dtype=np.float32) / 10
    loader = ArrayLoader(
        TensorDataset(X, y), batch_size=4, shuffle=True, sample_weight=w
    )
    seen = []
    for Xb, target in loader:
        assert isinstance(target, WeightedTarget)
        np.testing.assert_array_equal(target.sample_weight.numpy(), w[target.y.numpy()])
        np.testing.assert_array_equal(Xb[:, 0].numpy(), 2 * target.y.numpy())
        seen.extend(target.y.tolist())
    assert sorted(seen) == list(range(10))


def test_array_loader_refuses_weights_for_a_dataset_it_cannot_slice():
    class Samples(torch.utils.data.Dataset):
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return torch.zeros(2), 0

    with pytest.raises(ValueError, match="sample_weight travels with the batches"):
        ArrayLoader(Samples(), sample_weight=np.ones(3))
    with pytest.raises(
        ValueError, match=r"one weight per row of its dataset, shape \(3,\)"
    ):
        ArrayLoader(
            TensorDataset(torch.zeros(3, 2), torch.zeros(3)), sample_weight=[1, 2]
        )


def test_integer_weights_equal_repeated_samples_in_one_batch(digits):
    X, y = digits.X_target, digits.y_target
    counts = np.random.RandomState(0).randint(0, 3, size=len(X))
    counts[:10] = 1  # every class stays
    net = _net(batch_size=1000, iterator_train__shuffle=False)
    weighted = TransferClassifier(net, random_state=0).fit(X, y, sample_weight=counts)
    repeated = TransferClassifier(net, random_state=0).fit(
        np.repeat(X, counts, axis=0), np.repeat(y, counts)
    )
    for a, b in zip(_params(weighted), _params(repeated), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    ones = TransferClassifier(net, random_state=0).fit(
        X, y, sample_weight=np.ones(len(X))
    )
    plain = TransferClassifier(net, random_state=0).fit(X, y)
    for a, b in zip(_params(ones), _params(plain), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_balanced_class_weight_raises_the_rare_class_recall(digits):
    X, y = digits.X_source, digits.y_source
    rare = y == 0
    keep = ~rare | (np.cumsum(rare) <= 8)  # 8 zeros among ~700 samples
    X, y = X[keep], y[keep]
    net = _net(max_epochs=15, batch_size=128)
    plain = TransferClassifier(net, random_state=0).fit(X, y)
    balanced = TransferClassifier(net, class_weight="balanced", random_state=0).fit(
        X, y
    )
    X_test, y_test = digits.X_source[rare][8:], digits.y_source[rare][8:]
    recall = {
        name: recall_score(y_test, est.predict(X_test), labels=[0], average="macro")
        for name, est in {"plain": plain, "balanced": balanced}.items()
    }
    assert recall["balanced"] > recall["plain"] + 0.2, recall


def test_class_weight_dict_is_sample_weight_by_label(digits):
    X, y = digits.X_target, digits.y_target
    weights = {5: 3.0, 7: 0.5}
    net = _net()
    by_class = TransferClassifier(net, class_weight=weights, random_state=0).fit(X, y)
    by_sample = TransferClassifier(net, random_state=0).fit(
        X, y, sample_weight=np.array([weights.get(label, 1.0) for label in y])
    )
    for a, b in zip(_params(by_class), _params(by_sample), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_pipeline_routes_sample_weight_and_nothing_outlives_fit(digits):
    X, y = digits.X_target, digits.y_target
    w = np.random.RandomState(0).uniform(0.1, 2, size=len(X))
    with sklearn.config_context(enable_metadata_routing=True):
        clf = TransferClassifier(_net(), random_state=0).set_fit_request(
            sample_weight=True
        )
        pipe = make_pipeline(StandardScaler().set_fit_request(sample_weight=False), clf)
        pipe.fit(X, y, sample_weight=w)
    direct = TransferClassifier(_net(), random_state=0).fit(
        StandardScaler().fit_transform(X), y, sample_weight=w
    )
    for a, b in zip(_params(pipe[-1]), _params(direct), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    unweighted = TransferClassifier(_net(), random_state=0).fit(
        StandardScaler().fit_transform(X), y
    )
    assert not torch.equal(_params(direct)[0], _params(unweighted)[0])
    assert "get_loss" not in vars(direct.net_)
    assert "sample_weight" not in direct.net_.get_params_for("iterator_train")


def test_adaboost_boosts_a_transfer_classifier(digits):
    X, y = digits.X_source, digits.y_source
    boost = AdaBoostClassifier(
        TransferClassifier(_net(max_epochs=20), random_state=0), n_estimators=3
    ).fit(X[::2], y[::2])
    assert len(boost.estimators_) == 3
    assert boost.score(X[1::2], y[1::2]) > 0.8
    # SAMME by hand: the second network is fitted on the first one's mistakes
    # weighted up, and is the network those weights give, not an unweighted one.
    X, y = X[::2], y[::2]
    w = np.full(len(X), 1 / len(X))
    incorrect = boost.estimators_[0].predict(X) != y
    error = np.average(incorrect, weights=w)
    alpha = np.log((1 - error) / error) + np.log(len(np.unique(y)) - 1)
    w = w * np.exp(alpha * incorrect)
    w /= w.sum()
    second = boost.estimators_[1]
    by_hand = clone(second).fit(X, y, sample_weight=w)
    for a, b in zip(_params(second), _params(by_hand), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    unweighted = clone(second).fit(X, y)
    assert not torch.allclose(_params(second)[0], _params(unweighted)[0], atol=1e-3)


def test_fit_source_with_zero_weights_equals_leaving_the_samples_out(digits):
    X, y = digits.X_source, digits.y_source
    w = (np.arange(len(X)) % 3 != 0).astype(float)
    net = _net(batch_size=2000, iterator_train__shuffle=False)
    weighted = TransferClassifier(net, random_state=0).fit_source(X, y, sample_weight=w)
    dropped = TransferClassifier(net, random_state=0).fit_source(X[w > 0], y[w > 0])
    for name, value in weighted.source_weights_.items():
        torch.testing.assert_close(
            value, dropped.source_weights_[name], rtol=1e-4, atol=1e-6
        )
    pipe = make_pipeline(StandardScaler(), TransferClassifier(net, random_state=0))
    sktransfer.fit_source(pipe, X, y, sample_weight=w)
    plain = sktransfer.fit_source(
        make_pipeline(StandardScaler(), TransferClassifier(net, random_state=0)), X, y
    )
    first = next(iter(pipe[-1].source_weights_))
    assert not torch.equal(
        pipe[-1].source_weights_[first], plain[-1].source_weights_[first]
    )


def test_partial_fit_takes_sample_weight_and_refuses_balanced(digits):
    X, y = digits.X_target, digits.y_target
    classes = np.unique(y)
    w = np.where(y == 5, 4.0, 1.0)
    net = _net()
    weighted = TransferClassifier(net, random_state=0)
    weighted.partial_fit(X, y, classes=classes, sample_weight=w)
    by_dict = TransferClassifier(net, class_weight={5: 4.0}, random_state=0)
    by_dict.partial_fit(X, y, classes=classes)
    for a, b in zip(_params(weighted), _params(by_dict), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    balanced = TransferClassifier(net, class_weight="balanced")
    with pytest.raises(ValueError, match="'balanced' is not supported by partial_fit"):
        balanced.partial_fit(X, y, classes=classes)
    assert not hasattr(balanced, "net_")
    reg = TransferRegressor(_net(NeuralNetRegressor), random_state=0)
    reg.partial_fit(X, X[:, :2], sample_weight=w)
    assert hasattr(reg, "net_")


@pytest.mark.parametrize(
    ("sample_weight", "match"),
    [
        (-1.0, "Negative values in data passed to `sample_weight`"),
        (np.ones(3), r"sample_weight.shape == \(3,\), expected \(50,\)"),
        (np.zeros(50), "Sample weights must contain at least one non-zero number"),
    ],
)
def test_bad_weights_are_refused_and_change_nothing(digits, sample_weight, match):
    X, y = digits.X_target, digits.y_target
    clf = TransferClassifier(_net(), random_state=0)
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y, sample_weight=sample_weight)
    assert not hasattr(clf, "net_")
    with pytest.raises(ValueError, match=match):
        clf.fit_source(X, y, sample_weight=sample_weight)
    assert not hasattr(clf, "_pretrained")


def test_weights_need_array_loader_and_a_reduction(digits):
    X, y = digits.X_target, digits.y_target
    w = np.ones(len(X))

    class Loader(DataLoader):
        pass

    own_loader = TransferClassifier(_net(iterator_train=Loader))
    with pytest.raises(ValueError, match="iterator_train is 'Loader'"):
        own_loader.fit(X, y, sample_weight=w)

    class Summed(nn.Module):
        def forward(self, y_pred, y_true):
            return nn.functional.cross_entropy(y_pred, y_true)

    no_reduction = TransferClassifier(_net(criterion=Summed))
    with pytest.raises(ValueError, match="reduction=None"):
        no_reduction.fit(X, y, sample_weight=w)
    with pytest.raises(InvalidParameterError, match="class_weight"):
        TransferClassifier(class_weight="even").fit(X, y)
    dataset = TensorDataset(torch.as_tensor(X), torch.as_tensor(y - 5))
    with pytest.raises(
        ValueError, match="fit_source got a TensorDataset and sample_weight"
    ):
        TransferClassifier(_net()).fit_source(dataset, sample_weight=w)


@pytest.mark.parametrize("mixed_inside", [True, False])
def test_mixup_with_sample_weights_is_the_weighted_mean_of_mixed_losses(mixed_inside):
    from sktransfer._fit._augment import MixedLoss, MixedTarget
    from sktransfer._skorch import _frozen
    from sktransfer._skorch._data import WeightedTarget
    from sktransfer._skorch._weights import WeightedLoss

    net = NeuralNetClassifier(
        torch.nn.Linear,
        module__in_features=4,
        module__out_features=3,
        criterion=torch.nn.CrossEntropyLoss,
    ).initialize()
    gen = torch.Generator().manual_seed(0)
    y_pred = torch.randn(6, 3, generator=gen)
    a = torch.tensor([0, 1, 2, 0, 1, 2])
    b = torch.tensor([2, 2, 1, 1, 0, 0])
    w = torch.tensor([0.5, 1.0, 2.0, 0.0, 1.5, 1.0])
    lam = 0.3
    with _frozen.fit_scope():
        wrappers = (
            [MixedLoss, WeightedLoss] if mixed_inside else [WeightedLoss, MixedLoss]
        )
        for wrapper in wrappers:
            _frozen.wrap_get_loss(net, wrapper(net))
        loss = net.get_loss(
            y_pred, WeightedTarget(MixedTarget(a, b, lam), w), training=True
        )
    per_sample = lam * torch.nn.functional.cross_entropy(
        y_pred, a, reduction="none"
    ) + (1 - lam) * torch.nn.functional.cross_entropy(y_pred, b, reduction="none")
    expected = (w * per_sample).sum() / w.sum()
    torch.testing.assert_close(loss, expected)
    assert "get_loss" not in vars(net)


@pytest.mark.parametrize("early_stopping", [False, True])
def test_validation_loss_is_the_hand_computed_weighted_mean(digits, early_stopping):
    # The loss that chooses the epoch weighs the validation rows as the
    # training loss weighs the training rows: sum(w * l) / sum(w).
    from skorch.dataset import ValidSplit

    X, y = digits.X_source[:300], digits.y_source[:300]
    w = np.random.RandomState(0).uniform(0, 3, len(y)).astype(np.float32)
    w[::4] = 0.0
    if early_stopping:
        net = _net(max_epochs=1)
        clf = TransferClassifier(
            net, early_stopping=True, validation_fraction=0.2, random_state=0
        )
        split = ValidSplit(0.2, stratified=True, random_state=0)
    else:
        split = ValidSplit(0.2, stratified=True, random_state=3)
        clf = TransferClassifier(_net(max_epochs=1, train_split=split), random_state=0)
    clf.fit(X, y, sample_weight=w)
    _, valid = split(np.arange(len(y)), y)
    rows = np.asarray(valid.indices)
    module = clf.net_.module_.eval()
    with torch.no_grad():
        logits = module(torch.as_tensor(X[rows], dtype=torch.float32))
    per_sample = nn.functional.cross_entropy(
        logits, torch.as_tensor(clf._encode_y(y)[0][rows]), reduction="none"
    ).double()
    weights = torch.as_tensor(w[rows], dtype=torch.float64)
    expected = float((weights * per_sample).sum() / weights.sum())
    unweighted = float(per_sample.mean())
    recorded = clf.net_.history[-1, "valid_loss"]
    assert recorded == pytest.approx(expected, rel=1e-5)
    # Apart by more than the precision of the match above.
    assert recorded != pytest.approx(unweighted, rel=1e-5)
    # Installed for the fit only.
    assert _weights._VALID_CALLBACK not in dict(clf.net_.callbacks_)


def test_weighted_validation_loss_chooses_the_epoch(digits):
    # Rows weighted 0 do not count: validation rows of one class weighted 0 and
    # the rest 1 give the validation loss of the rest, epoch by epoch.
    X, y = digits.X_source[:300], digits.y_source[:300]
    w = np.where(y == 3, 0.0, 1.0).astype(np.float32)
    clf = TransferClassifier(
        _net(max_epochs=4, lr=0.5),
        early_stopping=True,
        validation_fraction=0.2,
        n_iter_no_change=2,
        random_state=0,
    ).fit(X, y, sample_weight=w)
    losses = clf.net_.history[:, "valid_loss"]
    best = clf.net_.history[:, "valid_loss_best"]
    running = np.minimum.accumulate(losses)
    assert best == [
        bool(i == 0 or loss < running[i - 1]) for i, loss in enumerate(losses)
    ]


def test_all_zero_validation_weights_warn_and_keep_the_unweighted_loss(digits):
    from skorch.dataset import ValidSplit

    X, y = digits.X_source[:300], digits.y_source[:300]
    split = ValidSplit(0.2, stratified=True, random_state=3)
    _, valid = split(np.arange(len(y)), y)
    w = np.ones(len(y), dtype=np.float32)
    w[np.asarray(valid.indices)] = 0.0
    clf = TransferClassifier(_net(max_epochs=2, train_split=split), random_state=0)
    with pytest.warns(UserWarning, match="Every validation sample has sample_weight 0"):
        clf.fit(X, y, sample_weight=w)
    rows = np.asarray(valid.indices)
    module = clf.net_.module_.eval()
    with torch.no_grad():
        logits = module(torch.as_tensor(X[rows], dtype=torch.float32))
    unweighted = nn.functional.cross_entropy(
        logits, torch.as_tensor(clf._encode_y(y)[0][rows])
    )
    assert clf.net_.history[-1, "valid_loss"] == pytest.approx(
        float(unweighted), rel=1e-5
    )
