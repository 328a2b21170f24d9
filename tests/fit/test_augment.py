"""augment, MixUp / CutMix, test-time augmentation and cached views."""

import pickle
import warnings

import numpy as np
import pytest
import torch
from nets import ConvNet, equal_weights, tiny_classifier_net
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import cross_val_score
from skorch.dataset import Dataset, ValidSplit
from torch import nn

from sktransfer import ArrayLoader, TransferClassifier, TransferRegressor
from sktransfer._fit import _augment
from sktransfer._skorch._finetune import L2SPLoss


class AddConstant:
    """A deterministic augmentation: shifts every value by ``c``."""

    def __init__(self, c=10.0):
        self.c = c

    def __call__(self, X):
        return X + self.c


class AddNoise:
    """A random augmentation drawing from torch's global random stream."""

    def __call__(self, X):
        return X + 0.1 * torch.randn_like(X)


def identity(X):
    return X


class Recorder(nn.Module):
    """A linear model on 8x8 images that records each input with its mode."""

    seen = []

    def __init__(self, n_outputs=10):
        super().__init__()
        self.flatten = nn.Flatten()
        self.out = nn.Linear(64, n_outputs)

    def forward(self, X):
        Recorder.seen.append((self.training, X.detach().clone()))
        return self.out(self.flatten(X))


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def test_training_batches_augmented_validation_and_predict_not(digit_images):
    Recorder.seen.clear()
    net = tiny_classifier_net(
        Recorder, max_epochs=2, train_split=ValidSplit(5, stratified=False)
    )
    clf = TransferClassifier(net, augment=AddConstant(10.0), random_state=0)
    clf.fit(digit_images.X_target, digit_images.y_target)
    clf.predict(digit_images.X_test[:20])
    # fit's check runs the first training batch (un-augmented) in training
    # mode, without side effects, before training.
    probe, *training = [X for mode, X in Recorder.seen if mode]
    evaluating = [X for mode, X in Recorder.seen if not mode]
    assert torch.equal(probe, torch.as_tensor(digit_images.X_target[:32]))
    assert training
    assert evaluating
    # Digits lie in [0, 1]: augmented ones in [10, 11].
    assert all(X.min() >= 10 for X in training)
    assert all(X.max() <= 1 for X in evaluating)
    assert sum(len(X) for X in training) == 2 * 40  # 2 epochs of 4/5 of 50
    sizes = [len(X) for X in evaluating]  # also fit's probes of a few samples
    assert sizes.count(10) == 2  # a validation batch per epoch
    assert sizes[-1] == 20  # predict
    # Nothing of the augmentation outlives fit.
    assert "iterator_train__transform" not in vars(clf.net_)
    assert "get_loss" not in vars(clf.net_)


def test_held_out_folds_never_augmented(digit_images):
    Recorder.seen.clear()
    clf = TransferClassifier(
        tiny_classifier_net(Recorder, max_epochs=1),
        augment=AddConstant(10.0),
        random_state=0,
    )
    X, y = digit_images.X_target, digit_images.y_target
    cross_val_score(clf, X, y, cv=2)
    scored = [X for mode, X in Recorder.seen if not mode]
    assert [len(X) for X in scored].count(25) == 2  # each fold, beside fit's probes
    assert all(X.max() <= 1 for X in scored)
    # Training batches are augmented; fit's check of the first training batch
    # (one per fit, in training mode without side effects) is not.
    training = [X for mode, X in Recorder.seen if mode]
    probes = [X for X in training if X.max() <= 1]
    assert [len(X) for X in probes] == [25, 25]
    assert all(X.min() >= 10 for X in training if X.max() > 1)


def test_same_seed_same_augmented_batches_and_separate_stream(digit_images):
    X, y = digit_images.X_target, digit_images.y_target
    net = tiny_classifier_net(ConvNet, max_epochs=2)

    def weights(**params):
        clf = TransferClassifier(net, random_state=0, **params).fit(X, y)
        return clf.net_.module_.state_dict()

    noisy = weights(augment=AddNoise())
    assert equal_weights(noisy, weights(augment=AddNoise()))
    other = TransferClassifier(net, augment=AddNoise(), random_state=1).fit(X, y)
    assert not equal_weights(noisy, other.net_.module_.state_dict())
    # The augmentation draws from a stream of its own: an identity augmentation
    # leaves initialisation, shuffling and weights exactly as without one.
    assert equal_weights(weights(augment=identity), weights())


def test_array_loader_transform_applies_to_its_batches_only():
    X = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    y = torch.arange(6)
    calls = []

    def transform(Xb, yb):
        calls.append(len(Xb))
        return Xb * -1, yb

    loader = ArrayLoader(Dataset(X, y), batch_size=4, transform=transform)
    batches = list(loader)
    assert calls == [4, 2]
    assert torch.equal(torch.cat([Xb for Xb, _ in batches]), -X)
    assert torch.equal(X, torch.arange(12, dtype=torch.float32).reshape(6, 2))
    plain = torch.cat([Xb for Xb, _ in ArrayLoader(Dataset(X, y), batch_size=4)])
    assert torch.equal(plain, X)


def _initialized_net():
    return tiny_classifier_net(ConvNet).initialize()


def test_mixup_loss_is_cross_entropy_on_mixed_targets():
    torch.manual_seed(0)
    X = torch.rand(8, 1, 8, 8)
    y = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    Xm, target = _augment.mix_batch(X, y, mixup_alpha=0.4, cutmix_alpha=0.0)
    perm = target.b  # y is arange: the partners' labels are their indices
    assert torch.allclose(Xm, target.lam * X + (1 - target.lam) * X[perm])
    net = _initialized_net()
    logits = torch.randn(8, 10)
    loss = _augment.MixedLoss(net)(logits, target, training=True)
    soft = target.lam * nn.functional.one_hot(y, 10) + (
        1 - target.lam
    ) * nn.functional.one_hot(perm, 10)
    expected = nn.functional.cross_entropy(logits, soft.float())
    assert torch.allclose(loss, expected, atol=1e-6)
    # Batches that are not mixed (validation) get the plain loss.
    plain = _augment.MixedLoss(net)(logits, y)
    assert torch.allclose(plain, nn.functional.cross_entropy(logits, y))


def test_cutmix_pastes_a_box_and_weights_by_its_area():
    torch.manual_seed(3)
    X = torch.arange(4 * 64, dtype=torch.float32).reshape(4, 1, 8, 8)
    y = torch.arange(4)
    Xm, target = _augment.mix_batch(X, y, mixup_alpha=0.0, cutmix_alpha=1.0)
    partner = X[target.b]
    from_partner = (Xm == partner) & (Xm != X)
    assert torch.all((Xm == X) | (Xm == partner))
    fraction = from_partner[0].float().mean().item()  # the same box in every image
    assert fraction == pytest.approx(1 - target.lam)
    assert X[0, 0, 0, 0] == 0  # the input is not changed in place


def test_wrappers_of_get_loss_compose():
    # L2-SP and MixUp each wrap the net's current get_loss: the penalty is
    # added once, the lam-weighted pair of losses is kept.
    net = _initialized_net()
    params = list(net.module_.parameters())
    shared, head = params[:4], params[4:]
    with torch.no_grad():
        before = [p.clone() for p in shared]
        for p in shared:
            p.add_(0.5)
    net.get_loss = L2SPLoss(net, [], head, 0.0, 0.0)  # an earlier wrapper
    inner = net.get_loss
    l2sp = L2SPLoss(net, shared, head, 0.0, 0.0)
    l2sp.source = dict(enumerate(before))
    l2sp.alpha = 2.0
    net.get_loss = l2sp
    mixed = _augment.MixedLoss(net)
    logits = torch.randn(4, 10)
    target = _augment.MixedTarget(
        torch.tensor([0, 1, 2, 3]), torch.tensor([3, 2, 1, 0]), 0.3
    )
    penalty = sum(((p - b) ** 2).sum() for p, b in zip(shared, before, strict=True))
    expected = (
        0.3 * nn.functional.cross_entropy(logits, target.a)
        + 0.7 * nn.functional.cross_entropy(logits, target.b)
        + penalty
    )
    assert torch.allclose(mixed(logits, target, training=True), expected, rtol=1e-5)
    assert l2sp.get_loss is inner


def test_mixup_fit_trains_on_the_lam_weighted_loss(digit_images):
    # One epoch, one batch: the reported train loss is the mixed loss of the
    # initial network on the mixed batch, recomputed here by hand.
    X, y = digit_images.X_target, digit_images.y_target
    net = tiny_classifier_net(
        ConvNet, max_epochs=1, batch_size=50, iterator_train__shuffle=False
    )
    clf = TransferClassifier(net, mixup_alpha=0.4, random_state=0)
    start = clone(clf).set_params(net__max_epochs=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start.fit(X, y)
    clf.fit(X, y)
    batches = _augment.TrainingBatches(None, 0.4, 0.0, _augment.augmentation_seed(0))
    Xb, target = batches(
        torch.as_tensor(X), torch.as_tensor(clf.classes_.searchsorted(y))
    )
    module = start.net_.module_.train()
    logits = module(Xb)
    expected = target.lam * nn.functional.cross_entropy(logits, target.a) + (
        1 - target.lam
    ) * nn.functional.cross_entropy(logits, target.b)
    assert clf.net_.history[-1, "train_loss"] == pytest.approx(
        expected.item(), rel=1e-4
    )


def test_tta_zero_views_is_plain_predict_proba_and_views_average(digit_images):
    X, y = digit_images.X_target, digit_images.y_target
    clf = TransferClassifier(
        tiny_classifier_net(ConvNet, max_epochs=2),
        augment=AddConstant(0.5),
        random_state=0,
    ).fit(X, y)
    module = clf.net_.module_.eval()
    with torch.no_grad():
        plain = torch.softmax(module(torch.as_tensor(X)).double(), dim=1).numpy()
        shifted = torch.softmax(module(torch.as_tensor(X) + 0.5).double(), 1).numpy()
    np.testing.assert_array_equal(clf.predict_proba(X), plain)
    clf.set_params(tta_views=2)
    np.testing.assert_allclose(clf.predict_proba(X), (plain + 2 * shifted) / 3)
    assert np.array_equal(
        clf.predict(X), clf.classes_[((plain + 2 * shifted) / 3).argmax(1)]
    )
    np.testing.assert_allclose(
        clf.predict_log_proba(X), np.log((plain + 2 * shifted) / 3)
    )


def test_tta_views_are_seeded(digit_images):
    X, y = digit_images.X_target, digit_images.y_target
    clf = TransferClassifier(
        tiny_classifier_net(ConvNet, max_epochs=1),
        augment=AddNoise(),
        tta_views=3,
        random_state=0,
    ).fit(X, y)
    np.testing.assert_array_equal(clf.predict_proba(X), clf.predict_proba(X))
    assert not np.array_equal(
        clf.predict_proba(X), clf.set_params(tta_views=0).predict_proba(X)
    )


def test_tta_regressor_averages_predictions():
    rng = np.random.RandomState(0)
    X = rng.rand(30, 4).astype(np.float32)
    y = X.sum(axis=1)
    reg = TransferRegressor(augment=AddConstant(1.0), random_state=0)
    reg.set_params(net=None).fit(X, y)
    plain = reg.predict(X)
    reg.set_params(tta_views=1)
    np.testing.assert_allclose(
        reg.predict(X),
        (plain + reg.set_params(tta_views=0).predict(X + 1)) / 2,
        rtol=1e-6,
    )


def test_cached_views_reproduce_uncached_views(digit_images):
    X, y = digit_images.X_source[:200], digit_images.y_source[:200]
    net = tiny_classifier_net(ConvNet, max_epochs=3)
    params = {"augment": AddNoise(), "cache_views": 3, "frozen": "features.*"}
    base = TransferClassifier(net, random_state=0, **params)
    base.fit_source(X, y)
    cached = clone(base).fit(digit_images.X_target, digit_images.y_target)
    uncached = clone(base).set_params(cache_frozen=False)
    uncached.fit(digit_images.X_target, digit_images.y_target)
    assert cached.frozen_cache_["cached"]
    assert cached.frozen_cache_["views"] == 3
    assert cached.frozen_cache_["nbytes"] == 3 * 50 * 64 * 4  # views x samples
    assert not uncached.frozen_cache_["cached"]
    a, b = cached.net_.module_.state_dict(), uncached.net_.module_.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def test_augment_without_views_does_not_cache(digit_images):
    X, y = digit_images.X_target, digit_images.y_target
    net = tiny_classifier_net(ConvNet, max_epochs=1)
    clf = TransferClassifier(net, augment=identity, frozen="features.*")
    clf.fit(X, y)
    assert not clf.frozen_cache_["cached"]
    assert "augment changes the training samples" in clf.frozen_cache_["reason"]
    with pytest.raises(ValueError, match="cache_frozen=True, but .* augment"):
        clf.set_params(cache_frozen=True).fit(X, y)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"cache_views": 2}, "cache_views=2 .* augment=None"),
        (
            {"cache_views": 2, "augment": identity, "mixup_alpha": 0.2},
            "MixUp and CutMix",
        ),
        ({"cache_views": 10**6, "augment": identity}, "cache_views=1000000 would take"),
    ],
)
def test_view_settings_refused_with_reason(digit_images, params, match):
    X, y = digit_images.X_target, digit_images.y_target
    clf = TransferClassifier(tiny_classifier_net(ConvNet, max_epochs=1), **params)
    with pytest.raises(ValueError, match=match):
        clf.fit(X, y)
    assert not hasattr(clf, "net_")


def test_cutmix_needs_images_and_tta_needs_augment(digits):
    clf = TransferClassifier(tiny_classifier_net(), cutmix_alpha=1.0)
    with pytest.raises(ValueError, match=r"cutmix_alpha=1.0 cuts boxes .* \(64,\)"):
        clf.fit(digits.X_target, digits.y_target)
    clf = TransferClassifier(tiny_classifier_net(), tta_views=2)
    with pytest.raises(ValueError, match="tta_views=2 .* augment=None"):
        clf.fit(digits.X_target, digits.y_target)  # refused before training
    # A fitted estimator whose tta_views is set afterwards says so at predict.
    clf.set_params(tta_views=0).fit(digits.X_target, digits.y_target)
    with pytest.raises(ValueError, match="tta_views=2 .* augment=None"):
        clf.set_params(tta_views=2).predict_proba(digits.X_target)


@pytest.mark.parametrize(
    ("augment", "match"),
    [
        (lambda X: X, "must be picklable.* a lambda"),
        (AddConstant, "Pass an instance, not a class"),
        ("flip", "must be None or a callable"),
    ],
)
def test_augment_must_be_a_picklable_callable(digits, augment, match):
    clf = TransferClassifier(tiny_classifier_net(), augment=augment)
    with pytest.raises(TypeError, match=match):
        clf.fit(digits.X_target, digits.y_target)
    assert not hasattr(clf, "net_")


def test_kornia_pipeline_augments_and_pickles(digit_images):
    K = pytest.importorskip("kornia.augmentation")
    augment = K.AugmentationSequential(
        K.RandomAffine(degrees=10.0, translate=(0.1, 0.1), p=1.0)
    )
    X, y = digit_images.X_target, digit_images.y_target
    net = tiny_classifier_net(ConvNet, max_epochs=2)
    clf = TransferClassifier(net, augment=augment, tta_views=2, random_state=0)
    clf.fit(X, y)
    again = pickle.loads(pickle.dumps(clone(clf))).fit(X, y)
    assert equal_weights(clf.net_.module_.state_dict(), again.net_.module_.state_dict())
    np.testing.assert_array_equal(clf.predict_proba(X), again.predict_proba(X))
    # The augmentation is the only difference from a plain fit: the same
    # pipeline that never transforms (p=0) gives the plain fit, bit for bit.
    plain = TransferClassifier(net, random_state=0).fit(X, y)
    never = K.AugmentationSequential(
        K.RandomAffine(degrees=10.0, translate=(0.1, 0.1), p=0.0)
    )
    idle = TransferClassifier(net, augment=never, random_state=0).fit(X, y)
    expected = plain.net_.module_.state_dict()
    assert equal_weights(idle.net_.module_.state_dict(), expected)
    assert not equal_weights(clf.net_.module_.state_dict(), expected)
    # Test-time views by hand: the mean of the plain probabilities and those of
    # two views drawn from the estimator's seeded test-time stream.
    views = pickle.loads(pickle.dumps(clf)).set_params(tta_views=0)
    generator = torch.Generator().manual_seed(_augment.augmentation_seed(0, "tta"))
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.set_rng_state(generator.get_state())
        drawn = [augment(torch.as_tensor(X)).numpy() for _ in range(2)]
    assert not np.allclose(drawn[0], X)
    total = views.predict_proba(X).astype(np.float64)
    for view in drawn:
        total += views.predict_proba(view)
    np.testing.assert_allclose(clf.predict_proba(X), total / 3, rtol=1e-6)


class IdBag(nn.Module):
    """Mean of token embeddings, then a linear head: takes integer token ids."""

    def __init__(self, n_outputs=2):
        super().__init__()
        self.emb = nn.EmbeddingBag(50, 4)
        self.head = nn.Linear(4, n_outputs)

    def forward(self, X):
        return self.head(self.emb(X))


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"mixup_alpha": 0.4}, "mixup_alpha=0.4"),
        ({"cutmix_alpha": 1.0}, "cutmix_alpha=1.0"),
        ({"mixup_alpha": 0.2, "cutmix_alpha": 1.0}, "mixup_alpha=0.2 and cutmix"),
    ],
)
def test_token_ids_are_never_mixed(params, named):
    # A mix of two token ids is no token id: MixUp/CutMix on integer samples
    # that the network takes as ids (an nn.EmbeddingBag here) is refused with
    # the settings named, and a fitted estimator is left as it was.
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 50, (32, 6)).astype(np.int64)
    y = (ids[:, 0] > 25).astype(int)
    clf = TransferClassifier(IdBag, head="head", max_epochs=2, random_state=0)
    clf.fit(ids, y)
    net, proba = clf.net_, clf.predict_proba(ids)
    with pytest.raises(ValueError, match=rf"{named}.*Token ids cannot be mixed"):
        clf.set_params(**params).fit(ids, y)
    assert clf.net_ is net
    np.testing.assert_array_equal(clf.predict_proba(ids), proba)


def test_integer_features_of_a_float_network_are_still_mixed():
    # Integer samples that the network takes as floats (no embedding) are
    # numbers, which MixUp mixes: the check reads the network's input dtype.
    Recorder.seen = []
    X = np.random.default_rng(0).integers(0, 9, (20, 1, 8, 8)).astype(np.int64)
    y = np.arange(20) % 2
    TransferClassifier(
        Recorder, head="out", mixup_alpha=0.4, max_epochs=1, batch_size=20
    ).fit(X, y)
    training = [x for mode, x in Recorder.seen if mode]
    assert training[-1].dtype == torch.float32
    assert not torch.equal(training[-1], training[-1].round())  # mixed
