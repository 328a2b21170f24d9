"""Augmentation of training batches: ``augment``, MixUp / CutMix, fixed views, TTA.

Everything here acts on whole batches of tensors, never sample by sample, so
that the fast :class:`~sktransfer.ArrayLoader` path stays fast:

- :class:`TrainingBatches` is the per-batch ``transform`` that ``fit`` gives
  the net's ``iterator_train`` (never ``iterator_valid``, which ``predict``
  and validation scoring use). It applies the estimator's ``augment``
  callable, then MixUp (Zhang et al., "mixup: Beyond Empirical Risk
  Minimization", ICLR 2018) or CutMix (Yun et al., "CutMix: Regularization
  Strategy to Train Strong Classifiers with Localizable Features", ICCV 2019),
  from a random stream of its own seeded by ``random_state``: the training
  stream (initialisation, shuffling, dropout) is the same without them.
- :class:`MixedLoss` wraps the net's *current* ``get_loss`` for mixed
  batches: ``lam * loss(y_a) + (1 - lam) * loss(y_b)`` (for mean
  ``CrossEntropyLoss``, the cross-entropy against the mixed one-hot targets).
- :class:`ViewedStage` precomputes ``cache_views`` augmented views of the
  training set (through the frozen stage when that is cached), of which
  :class:`TrainingBatches` draws one per sample per batch.
- :func:`tta_average` averages the predictions over the plain input and
  ``tta_views`` augmented views.
"""

from __future__ import annotations

import os
import pickle
import time
from contextlib import contextmanager

import numpy as np
import torch

from .._common import derive_seed
from .._frozen_stage import _report, _stage, _store
from .._skorch import _frozen
from .._skorch._data import STREAM_LOCK, WeightedTarget

# ----------------------------------------------------------------- checks


def check_augment(augment, owner):
    """Raise a TypeError unless ``augment`` is None or a picklable callable."""
    if augment is None:
        return
    if isinstance(augment, type) or not callable(augment):
        what = "a class" if isinstance(augment, type) else type(augment).__name__
        msg = (
            f"augment must be None or a callable applied to each training batch "
            f"(a tensor of shape (batch_size, ...)), e.g. an instance of a "
            f"kornia.augmentation.AugmentationSequential; got {augment!r} "
            f"({what}). Pass an instance, not a class."
        )
        raise TypeError(msg)
    try:
        pickle.dumps(augment)
    except Exception as exc:  # noqa: BLE001 (any pickling failure is the answer)
        qualname = getattr(augment, "__qualname__", "")
        kind = "a lambda" if "<lambda>" in qualname else f"{augment!r}"
        msg = (
            f"augment must be picklable, because clone, joblib workers and "
            f"pickled {owner}s copy it; got {kind}, which is not "
            f"({type(exc).__name__}: {exc}). Use a module-level function or an "
            "instance of a class (an nn.Module such as a kornia pipeline)."
        )
        raise TypeError(msg) from exc


def check_tta(estimator):
    """Raise a ValueError when ``tta_views`` asks for views without ``augment``."""
    views = estimator.tta_views
    if views and estimator.augment is None:
        msg = (
            f"tta_views={views!r} averages predictions over augmented views, but "
            f"{type(estimator).__name__} has augment=None. Set augment, or "
            "tta_views=0."
        )
        raise ValueError(msg)


def check_settings(estimator, X, net):
    """Check the augmentation settings of ``estimator`` against ``X`` and ``net``.

    Raises
    ------
    ValueError
        For MixUp/CutMix on samples the network takes as integers (token
        ids), ``cutmix_alpha`` on samples that are not images, and
        ``cache_views`` without ``augment``, with MixUp/CutMix or with a
        validation split of the net.
    """
    name = type(estimator).__name__
    names = ("mixup_alpha", "cutmix_alpha")
    values = {key: getattr(estimator, key) for key in names}
    mixing = " and ".join(f"{key}={value!r}" for key, value in values.items() if value)
    if mixing and X.dtype.kind in "biu":  # X as the network takes it (int64)
        msg = (
            f"{mixing}: MixUp and CutMix mix samples as floats, but the network takes "
            f"integer samples ({X.dtype}: the token ids of texts or a token dict, or "
            "ids for an nn.Embedding). Token ids cannot be mixed (a mix of two ids "
            "is no token; mixing embeddings is not supported): set mixup_alpha=0 "
            "and cutmix_alpha=0."
        )
        raise ValueError(msg)
    if estimator.cutmix_alpha and X.ndim < 3:
        msg = (
            f"cutmix_alpha={estimator.cutmix_alpha!r} cuts boxes out of images of "
            f"shape (n_samples, ..., height, width); got samples of shape "
            f"{X.shape[1:]}. Use mixup_alpha for samples that are not images."
        )
        raise ValueError(msg)
    views = estimator.cache_views
    if views is None:
        return
    if estimator.augment is None:
        msg = (
            f"cache_views={views!r} precomputes augmented views of the training "
            f"set, but {name} has augment=None. Set augment, or cache_views=None."
        )
        raise ValueError(msg)
    if estimator.mixup_alpha or estimator.cutmix_alpha:
        msg = (
            f"cache_views={views!r} with mixup_alpha={estimator.mixup_alpha!r} "
            f"and cutmix_alpha={estimator.cutmix_alpha!r}: MixUp and CutMix mix "
            "the input images, which a cached frozen stage has already seen. Set "
            "cache_views=None to mix while augmenting every batch afresh."
        )
        raise ValueError(msg)
    if net.train_split is not None:
        msg = (
            f"cache_views={views!r} trains on precomputed views of the training "
            f"set, and a validation set from train_split={net.train_split!r} "
            "would be cut from those views (augmented). Set train_split=None on "
            "the net, or cache_views=None."
        )
        raise ValueError(msg)


def augmentation_seed(random_state, stream="augment"):
    """Return the seed of the augmentation's own random stream (``"tta"``: TTA's)."""
    return derive_seed(random_state, stream, advance=stream != "tta")


@contextmanager
def _own_stream(state):
    """Run the block on the CPU random stream ``state[0]``, updated in place."""
    with torch.random.fork_rng(devices=[]):
        torch.set_rng_state(state[0])
        try:
            yield
        finally:
            state[0] = torch.get_rng_state()


def _seeded_state(seed):
    return [torch.Generator().manual_seed(seed).get_state()]


# ---------------------------------------------------------------- mixing


class MixedTarget:
    """The targets of a mixed batch: ``lam`` of ``a`` and ``1 - lam`` of ``b``.

    Only :class:`MixedLoss` reads it; it reaches ``get_loss`` as ``y_true``.
    """

    def __init__(self, a, b, lam):
        self.a, self.b, self.lam = a, b, float(lam)

    def __len__(self):
        return len(self.a)

    def __repr__(self):
        return f"MixedTarget(lam={self.lam:.3f}, n={len(self.a)})"


def mix_batch(Xb, yb, mixup_alpha, cutmix_alpha):
    """Mix a batch with a shuffled copy of itself: MixUp or CutMix.

    Draws from torch's (current) random stream: the choice between the two
    when both alphas are positive (even odds, as timm's ``Mixup`` does),
    ``lam ~ Beta(alpha, alpha)``, the partner of each sample and, for CutMix,
    the box, whose area fraction ``1 - lam`` it cuts from the partner.

    Returns the mixed samples and a :class:`MixedTarget`.
    """
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or bool(torch.rand(()) < 0.5))
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(len(Xb))
    if not use_cutmix:
        mixed = Xb * lam + Xb[perm] * (1.0 - lam)
        return mixed, MixedTarget(yb, yb[perm], lam)
    height, width = Xb.shape[-2:]
    ratio = (1.0 - lam) ** 0.5
    cut_h, cut_w = int(height * ratio), int(width * ratio)
    cy = int(torch.randint(height, ()))
    cx = int(torch.randint(width, ()))
    y1, y2 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
    x1, x2 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
    mixed = Xb.clone()
    mixed[..., y1:y2, x1:x2] = Xb[perm][..., y1:y2, x1:x2]
    lam = 1.0 - (y2 - y1) * (x2 - x1) / (height * width)  # the box actually cut
    return mixed, MixedTarget(yb, yb[perm], lam)


class MixedLoss:
    """The net's ``get_loss`` for mixed batches: the lam-weighted pair of losses.

    Wraps the ``get_loss`` the net has when it is made (skorch's, or another
    wrapper such as L2-SP's), so wrappers compose; batches that are not mixed
    (validation) go to it unchanged.
    """

    def __init__(self, net):
        self.get_loss = net.get_loss

    def __call__(self, y_pred, y_true, X=None, training=False):
        mixed, weights = y_true, None
        if isinstance(y_true, WeightedTarget):  # sample weights around the mix
            mixed, weights = y_true.y, y_true.sample_weight
        if not isinstance(mixed, MixedTarget):
            return self.get_loss(y_pred, y_true, X=X, training=training)

        def target(part):
            return part if weights is None else WeightedTarget(part, weights)

        lam = mixed.lam
        loss_a = self.get_loss(y_pred, target(mixed.a), X=X, training=training)
        loss_b = self.get_loss(y_pred, target(mixed.b), X=X, training=training)
        return lam * loss_a + (1.0 - lam) * loss_b


# ------------------------------------------------------- training batches


class TrainingBatches:
    """The per-batch transform of training batches (``iterator_train__transform``).

    Parameters
    ----------
    augment : callable or None
        Applied to each batch of samples as a whole tensor.
    mixup_alpha, cutmix_alpha : float
        MixUp / CutMix after ``augment`` when positive.
    seed : int
        Seeds the augmentation's own random stream.
    views : int or None
        With precomputed views (batches of shape ``(batch_size, views, ...)``),
        draw one view per sample instead of augmenting.
    """

    def __init__(self, augment, mixup_alpha, cutmix_alpha, seed, views=None):
        self.augment = augment
        self.mixup_alpha = float(mixup_alpha)
        self.cutmix_alpha = float(cutmix_alpha)
        self.views = views
        self._state = _seeded_state(seed)

    def __call__(self, Xb, yb):
        with _own_stream(self._state):
            if self.views is not None:
                pick = torch.randint(self.views, (len(Xb),))
                Xb = Xb[torch.arange(len(Xb)), pick.to(Xb.device)]
            elif self.augment is not None:
                Xb = self.augment(Xb)
            if self.mixup_alpha > 0 or self.cutmix_alpha > 0:
                Xb, yb = mix_batch(Xb, yb, self.mixup_alpha, self.cutmix_alpha)
        return Xb, yb


def install(estimator, net, seed, views=None):
    """Apply the estimator's augmentation to ``net``'s training batches this fit.

    Sets ``iterator_train__transform`` (and, for MixUp / CutMix, wraps
    ``get_loss``); both are removed when the fit ends.

    Raises
    ------
    ValueError
        When the net's ``iterator_train`` is not :class:`~sktransfer.ArrayLoader`,
        the only iterator that takes a batch transform.
    """
    from .._skorch._data import ArrayLoader

    mixing = estimator.mixup_alpha or estimator.cutmix_alpha
    if estimator.augment is None and not mixing:
        return
    if net.iterator_train is not ArrayLoader:
        msg = (
            f"augment, mixup_alpha and cutmix_alpha transform the training batches "
            f"of sktransfer.ArrayLoader, but the net's iterator_train is "
            f"{net.iterator_train!r}. Leave iterator_train at its default, or "
            "augment in your own iterator."
        )
        raise ValueError(msg)
    if "iterator_train__transform" in vars(net):
        msg = (
            "The net template sets iterator_train__transform, which augment, "
            "mixup_alpha and cutmix_alpha would replace; use one or the other."
        )
        raise ValueError(msg)
    alphas = (estimator.mixup_alpha, estimator.cutmix_alpha)
    transform = TrainingBatches(estimator.augment, *alphas, seed, views=views)
    # skorch reads iterator_train__ settings from the instance (get_params_for).
    net.iterator_train__transform = transform
    _frozen.on_exit(vars(net).pop, "iterator_train__transform", None)
    if mixing:
        _frozen.wrap_get_loss(net, MixedLoss(net))


# ------------------------------------------------------------ fixed views


def _available_memory():
    """Bytes of physical memory available now (Linux), or None if unknown."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class ViewedStage:
    """``cache_views`` augmented views of the training set, computed once per fit.

    Each view is ``augment`` applied to the whole training set in batches,
    from the augmentation's own seeded stream; the views go through the frozen
    stage when that is cached (``stage`` not None). :meth:`transform` returns
    them as one tensor of shape ``(n_samples, views, ...)``, from which
    :class:`TrainingBatches` draws one view per sample per batch.
    """

    def __init__(self, stage, augment, views, seed):
        self.stage = stage
        self.augment = augment
        self.views = views
        self._state = _seeded_state(seed)

    def transform(self, X, *, batch_size, device, keep_on="cpu"):
        """Return the views of ``X``: a tensor of shape ``(n_samples, views, ...)``."""
        X = torch.as_tensor(X)
        keep_on = keep_on or "cpu"
        out = None
        for view in range(self.views):
            for start in range(0, len(X), batch_size):
                with _own_stream(self._state):
                    chunk = self.augment(X[start : start + batch_size])
                if self.stage is not None:
                    chunk = self.stage.transform(
                        chunk, batch_size=len(chunk), device=device, keep_on=keep_on
                    )
                if out is None:
                    shape = (len(X), self.views, *chunk.shape[1:])
                    out = torch.empty(shape, dtype=chunk.dtype, device=keep_on)
                out[start : start + len(chunk), view] = chunk.detach().to(keep_on)
        return out

    def outputs(self, X, *, batch_size, device, keep_on="cpu", report=None):
        """As :meth:`transform`; the views are never shared across fits."""
        start = time.perf_counter()
        out = self.transform(X, batch_size=batch_size, device=device, keep_on=keep_on)
        if report is not None:
            report.update(
                outputs="computed",
                digest_seconds=0.0,
                compute_seconds=time.perf_counter() - start,
                store=_store.STORE.info(),
            )
        return out

    @contextmanager
    def training_rest(self, net):
        """Train the rest on the views when the stage is cached, else the whole net."""
        if self.stage is None:
            yield
            return
        with self.stage.training_rest(net):
            yield


def plan(estimator, net, X, *, plan_stage, limit):
    """Decide how ``fit`` trains with augmentation; the ``_frozen_stage`` step.

    Parameters
    ----------
    estimator, net : _BaseTransfer, skorch.NeuralNet
        The estimator that fits and its initialised, frozen net.
    X : ndarray of shape (n_samples, ...)
        The training samples, in the dtype the network takes.
    plan_stage : callable
        ``plan_stage(cache_frozen, limit)`` returns the frozen stage's split
        and report (:func:`sktransfer._frozen_stage._cache.plan`).
    limit : int
        The most bytes ``cache_frozen="auto"`` lets a cache take.

    Returns
    -------
    split : FrozenStage, ViewedStage or None
        What ``fit`` trains through (None: the whole network on ``X``).
    report : dict
        ``frozen_cache_`` (:func:`sktransfer._frozen_stage._report.new_report`), with
        ``views`` (the number of precomputed views).
    """
    check_settings(estimator, X, net)
    augmenting = estimator.augment is not None
    mixing = bool(estimator.mixup_alpha or estimator.cutmix_alpha)
    views = estimator.cache_views
    cache_frozen = estimator.cache_frozen
    if not augmenting and not mixing:
        return plan_stage(cache_frozen, limit)
    seed = augmentation_seed(estimator.random_state)
    if views is None:
        what = "augment" if augmenting else "MixUp/CutMix"
        why = f"{what} changes the training samples before the frozen stage" + (
            "; cache_views=N caches N augmented views" if augmenting else ""
        )
        if all(param.requires_grad for param in net.module_.parameters()):
            why = "no parameter is frozen"
        elif cache_frozen is True:
            msg = (
                f"cache_frozen=True, but the frozen layers cannot be computed once: "
                f"{why}. Set cache_frozen='auto'."
            )
            raise ValueError(msg)
        install(estimator, net, seed)
        return None, _report.new_report(why)
    # Precomputed views: through the frozen stage when it may be cached.
    if cache_frozen is False:
        stage, report = None, _report.new_report("cache_frozen=False")
    else:
        stage, report = plan_stage(cache_frozen, float("inf"))
    per_view = stage.nbytes(len(X)) if stage is not None else X.nbytes
    nbytes = per_view * views
    available = _available_memory()
    if cache_frozen != "auto":
        limit = float("inf")
    fits = nbytes <= limit and (available is None or nbytes <= available // 2)
    if not fits:
        room = min(limit, available // 2 if available is not None else limit)
        msg = (
            f"cache_views={views} would take {nbytes / 2**20:.1f} MiB "
            f"({per_view / 2**20:.1f} MiB per view of {len(X)} samples), more "
            f"than the {room / 2**20:.0f} MiB allowed (the training data or 1 GiB "
            "under cache_frozen='auto', else half the available memory). Set "
            "fewer views, or cache_views=None to augment every batch afresh."
        )
        raise ValueError(msg)
    keep_on = "cpu"
    if stage is not None:
        keep_on = str(_stage.cache_device(net.device, nbytes))
        report["device"] = keep_on
    report.update(nbytes=nbytes, views=views)
    install(estimator, net, seed, views=views)
    return ViewedStage(stage, estimator.augment, views, seed + 1), report


# ------------------------------------------------------ test-time views


def tta_average(estimator, X, predict):
    """Average ``predict`` over ``X`` and ``estimator.tta_views`` augmented views.

    Parameters
    ----------
    estimator : _BaseTransfer
        A fitted estimator with ``augment`` set when ``tta_views > 0``.
    X : ndarray of shape (n_samples, ...)
        Validated samples.
    predict : callable
        Maps samples to a float tensor or array of predictions (probabilities,
        outputs).

    Returns
    -------
    average : same as ``predict(X)``
        ``predict(X)`` itself when ``tta_views == 0``. Otherwise the mean of
        ``predict(X)`` and ``predict(augment(X))`` for each of the views, each
        view drawn from a stream seeded by ``random_state``, so that repeated
        calls, from any thread, give the same answer. Nothing of the
        estimator is changed.
    """
    plain = predict(X)
    views = estimator.tta_views
    if not views:
        return plain
    check_tta(estimator)
    state = _seeded_state(augmentation_seed(estimator.random_state, "tta"))
    total = plain.astype(np.float64) if isinstance(plain, np.ndarray) else plain
    X = torch.as_tensor(X)
    for _ in range(views):
        # torch's CPU stream is the process's: one thread at a time swaps in
        # the views' own stream (and runs augment, which may keep state);
        # ArrayLoader's draws from it wait meanwhile.
        with STREAM_LOCK, _own_stream(state), torch.no_grad():
            augmented = estimator.augment(X)
        total = total + predict(augmented.detach().cpu().numpy())
    return total / (views + 1)
