"""The pieces one adapting fit installs on the skorch net, and removes after.

- :class:`DomainBalancedLoader`, the net's ``iterator_train``: every training
  batch holds labelled and unlabelled rows in their overall proportion (at
  least 2 of each, so that CORAL's covariances exist);
- :func:`labelled_validation`, around the net's ``train_split``: a
  validation split of the rows keeps the labelled ones and sends the
  unlabelled ones to training, so that ``valid_loss``, ``valid_acc`` and
  early stopping score labelled rows only;
- :class:`LayerFeatures`, a forward hook at ``adapt_layer``;
- :class:`AdaptLoss`, the net's ``get_loss`` wrapper: the supervised loss of
  the labelled rows plus ``adapt_weight`` times the term of
  :mod:`._adapt_terms`; for DANN its domain classifier joins the optimizer
  as one parameter group.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from skorch.callbacks import Callback
from torch import nn
from torch.utils.data import Subset, TensorDataset

from .._common import warn_at_user
from .._torch import _layers
from . import _frozen
from ._adapt_terms import (
    DomainClassifier,
    coral_loss,
    domain_loss,
    mmd_loss,
    pseudo_labels,
    target_statistics,
)
from ._data import ArrayLoader, WeightedTarget

# The fewest rows of each kind in a training batch: CORAL's covariances need 2.
MIN_ROWS = 2


def batch_unlabelled(y_true):
    """Return which rows of a batch's encoded targets are unlabelled (bool tensor)."""
    y = y_true.y if isinstance(y_true, WeightedTarget) else y_true
    if y.is_floating_point():
        return torch.isnan(y.reshape(len(y), -1)).all(dim=1)
    return y.reshape(len(y), -1)[:, 0] < 0


def _rows(y_true, mask):
    if isinstance(y_true, WeightedTarget):
        return WeightedTarget(y_true.y[mask], y_true.sample_weight[mask])
    return y_true[mask]


# ------------------------------------------------------------ batches and split


def check_iterator(net):
    """Raise a ValueError unless the net's training batches come from ArrayLoader."""
    if net.iterator_train is not ArrayLoader:
        name = getattr(net.iterator_train, "__name__", net.iterator_train)
        msg = (
            "adapt draws training batches that hold both labelled and unlabelled "
            f"rows with sktransfer's ArrayLoader, but the net's iterator_train is "
            f"{name!r}. Leave iterator_train at its default."
        )
        raise ValueError(msg)


def _spread(rows, n_batches, generator):
    """Return ``rows`` cut into ``n_batches`` parts of near-equal size.

    Each part gets at least :data:`MIN_ROWS` rows: when there are fewer than
    ``MIN_ROWS * n_batches`` rows, they are drawn again (in a fresh order,
    when ``generator`` is given) until every part has that many.
    """
    n = len(rows)
    if n < MIN_ROWS * n_batches:
        needed = MIN_ROWS * n_batches
        draws = [rows]
        for _ in range(math.ceil(needed / n) - 1):
            again = rows
            if generator is not None:
                again = rows[torch.randperm(n, generator=generator)]
            draws.append(again)
        rows = torch.cat(draws)[:needed]
        n = needed
    bounds = [j * n // n_batches for j in range(n_batches + 1)]
    return [rows[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


class DomainBalancedLoader(ArrayLoader):
    """Training batches that each hold labelled and unlabelled rows.

    An :class:`~sktransfer.ArrayLoader` whose batches are stratified by
    domain: the labelled (source) and the unlabelled (target, encoded ``-1``
    or NaN) rows are each shuffled, then dealt out to the
    ``ceil(n_samples / batch_size)`` batches in equal shares, so that every
    batch holds both kinds in their overall proportion and an epoch still
    visits every row once (as skada's ``DomainBalancedSampler`` and TLlib's
    paired source and target iterators make sure that each step sees both
    domains). A kind with fewer than ``2 * n_batches`` rows is drawn again
    until each batch has 2 of its rows (those batches are then up to 2 rows
    larger than ``batch_size``). With only one kind of row it is an
    ``ArrayLoader``. Installed as the net's ``iterator_train`` for one fit.
    """

    def __init__(self, dataset, **kwargs):
        super().__init__(dataset, **kwargs)
        if not self.fast:
            msg = (
                "adapt draws batches that hold both labelled and unlabelled rows "
                f"from whole arrays, but the training data, a "
                f"{type(dataset).__name__} with these settings, goes through "
                "torch's DataLoader. Pass X and y as arrays and leave "
                "iterator_train's settings at batch_size and shuffle."
            )
            raise ValueError(msg)

    def _index_batches(self):
        if self._y is None:
            yield from super()._index_batches()
            return
        n = self._n_samples()
        rows = torch.arange(n) if self._indices is None else self._indices
        unlabelled = batch_unlabelled(self._y.index_select(0, rows))
        source, target = rows[~unlabelled], rows[unlabelled]
        if len(source) == 0 or len(target) == 0:
            yield from super()._index_batches()
            return
        generator = None
        if self.shuffle:
            generator = self._order_generator()
            source = source[torch.randperm(len(source), generator=generator)]
            target = target[torch.randperm(len(target), generator=generator)]
        if self.drop_last:
            n_batches = max(1, n // self.batch_size)
        else:
            n_batches = math.ceil(n / self.batch_size)
        parts = zip(
            _spread(source, n_batches, generator),
            _spread(target, n_batches, generator),
            strict=True,
        )
        for source_rows, target_rows in parts:
            yield torch.cat([source_rows, target_rows])


def _targets(dataset):
    """Return the targets of a dataset of whole arrays (None if unknown)."""
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2:
        return dataset.tensors[1]
    y = getattr(dataset, "y", None)
    return None if y is None else torch.as_tensor(np.asarray(y))


def labelled_validation(net):
    """Keep a validation split to labelled rows until the fit ends.

    Wraps the net's ``train_split`` (when it has one): when it splits the
    training data (two ``Subset`` of it, as skorch's ``ValidSplit``), its
    unlabelled validation rows move to the training part, so that the
    validation loss, ``valid_acc`` and early stopping score the labelled
    rows only, and no unlabelled row is left unused. A validation set from
    outside is left as it is.

    Raises
    ------
    ValueError
        When the split's validation part holds no labelled row.
    """
    original = net.train_split
    if not original:
        return

    def train_split(dataset, *args, **kwargs):
        train, valid = original(dataset, *args, **kwargs)
        if not (
            isinstance(train, Subset)
            and isinstance(valid, Subset)
            and train.dataset is dataset
            and valid.dataset is dataset
        ):
            return train, valid
        y = _targets(dataset)
        if y is None:
            return train, valid
        indices = torch.as_tensor(np.asarray(valid.indices), dtype=torch.int64)
        unlabelled = batch_unlabelled(y.index_select(0, indices)).numpy()
        if unlabelled.all():
            msg = (
                f"The validation split holds {len(indices)} rows, all unlabelled "
                "(y == -1 or NaN), so there is nothing to score them by. Give "
                "more labelled rows, or a larger validation share."
            )
            raise ValueError(msg)
        valid_rows = np.asarray(valid.indices)
        moved = valid_rows[unlabelled]
        train = Subset(dataset, np.concatenate([np.asarray(train.indices), moved]))
        return train, Subset(dataset, valid_rows[~unlabelled])

    net.train_split = train_split

    def undo():
        net.train_split = original

    _frozen.on_exit(undo)


# ------------------------------------------------------------ the hook and loss


def check_layer(module, adapt_layer):
    """Return the submodule ``adapt_layer`` names; a ValueError names near ones."""
    modules = dict(module.named_modules())
    if adapt_layer in modules and adapt_layer != "":
        return modules[adapt_layer]
    candidates = [name for name in modules if name]
    msg = (
        f"adapt_layer={adapt_layer!r} is not a submodule of "
        f"{type(module).__name__}.{_layers._nearest(str(adapt_layer), candidates)} "
        f"Submodules are: {_layers._listing(candidates)}."
    )
    raise ValueError(msg)


class LayerFeatures:
    """A forward hook that keeps the features of the last batch at one layer.

    The output of the submodule ``adapt_layer`` names, or with
    ``adapt_layer=None`` the input of the head's first submodule to run (a
    forward pre-hook, as ``transform`` reads it); flattened to one row per
    sample. Removed when fit ends.
    """

    def __init__(self, module, adapt_layer, head, roots=()):
        self.features = None
        if adapt_layer is None:
            if not head:
                msg = (
                    "adapt_layer=None aligns the head's input, but head=None: the "
                    "network has no head. Name the layer with adapt_layer=..."
                )
                raise ValueError(msg)
            self.layers = [module.get_submodule(name) for name in head]
            self.handles = [
                layer.register_forward_pre_hook(self._record_input)
                for layer in self.layers
            ]
        else:
            self.layers = [check_layer(module, adapt_layer)]
            self.handles = [self.layers[0].register_forward_hook(self._record_output)]
        self.where = "the head's input" if adapt_layer is None else repr(adapt_layer)
        self.first_only = adapt_layer is None
        # Each forward pass of the network starts afresh (not with a stale
        # batch's features from a prediction made by a callback).
        self.handles += [
            root.register_forward_pre_hook(self._forget) for root in (module, *roots)
        ]

    def _forget(self, _module, _args):
        self.features = None

    def _record_input(self, _module, args):
        if self.first_only and self.features is not None:
            return  # a head of several submodules: the first one's input
        self._keep(args[0] if args else None)

    def _record_output(self, _module, _args, output):
        self._keep(output[0] if isinstance(output, (tuple, list)) else output)

    def _keep(self, value):
        if not torch.is_tensor(value):
            msg = f"adapt needs one tensor at {self.where}; got {type(value).__name__}."
            raise TypeError(msg)
        self.features = value.flatten(1)

    def take(self):
        """Return the features of the batch just run, and forget them."""
        features, self.features = self.features, None
        return features

    def remove(self):
        for handle in self.handles:
            handle.remove()


class AdaptLoss:
    """The net's ``get_loss`` for rows of which some are unlabelled.

    The wrapped ``get_loss`` (the criterion, sample weights) sees the labelled
    rows only; while training, ``weight`` times the adaptation term between
    the labelled and the unlabelled rows of the batch is added. A batch with
    too few rows of either kind for the term (2 each for CORAL, 1 for the
    others) adds nothing.

    Parameters
    ----------
    net : skorch.NeuralNet
        The initialised net; its current ``get_loss`` is the one wrapped.
    method : {"coral", "mmd", "dann", "self_training"}
    weight : float
        ``adapt_weight``.
    features : LayerFeatures
        The hook at ``adapt_layer``.
    threshold : float
        ``adapt_threshold``, for self-training.
    """

    # Changes no module's mode (for the lean step).
    sktransfer_safe = True

    def __init__(self, net, method, weight, features, threshold):
        self.net = net
        self.get_loss = net.get_loss
        self.method = method
        self.weight = weight
        self.features = features
        self.threshold = threshold
        self.domain_classifier = None
        self.last_term = None
        self.checked = False

    def _check_it_can_act(self, features):
        """Warn when the alignment term can move no weight (first batch only)."""
        if (
            self.method in ("coral", "mmd", "dann")
            and self.weight != 0
            and not features.requires_grad
        ):
            warn_at_user(
                f"adapt={self.method!r} cannot act: the features at adapt_layer="
                f"{self.features.where} depend on no trainable parameter (every "
                "layer before it is frozen), so the alignment term moves no weight "
                "and the fit equals adapt_weight=0. Leave some shared layers "
                "trainable (frozen=...), or choose an adapt_layer after a "
                "trainable one."
            )

    def __call__(self, y_pred, y_true, X=None, training=False):
        if not torch.is_tensor(y_pred):
            msg = (
                f"adapt={self.method!r} needs the module's output to be one tensor; "
                f"got {type(y_pred).__name__}."
            )
            raise TypeError(msg)
        unlabelled = batch_unlabelled(y_true).to(y_pred.device)
        labelled = ~unlabelled
        per_sample = getattr(self.net.criterion_, "reduction", None) == "none"
        if labelled.any():
            loss = self.get_loss(
                y_pred[labelled], _rows(y_true, labelled), X=X, training=training
            )
        else:
            loss = y_pred.sum() * 0.0  # keeps the graph; nothing supervised
        if per_sample:  # asked for one loss per row: 0 for the unlabelled ones
            rest = tuple(loss.shape[1:]) if loss.ndim else ()
            full = loss.new_zeros((len(labelled), *rest))
            if labelled.any():
                full[labelled] = loss
            loss = full
        features = self.features.take()
        if not training:
            return loss
        if features is None:
            msg = (
                f"adapt_layer={self.features.where} did not run while training: "
                "it lies in the frozen stage whose outputs are cached. Set "
                "cache_frozen=False, or choose a layer after the frozen ones."
            )
            raise ValueError(msg)
        if not self.checked:
            self.checked = True
            self._check_it_can_act(features)
        term = self.term(features, y_pred, labelled, unlabelled)
        self.last_term = None if term is None else float(term.detach())
        return loss if term is None else loss + self.weight * term

    def term(self, features, y_pred, labelled, unlabelled):
        """Return the adaptation term of one training batch (None: nothing)."""
        n_l, n_u = int(labelled.sum()), int(unlabelled.sum())
        if self.method == "adabn":
            return None  # no term: the statistics change when training ends
        if self.method == "self_training":
            return self._pseudo_label_term(y_pred[unlabelled]) if n_u else None
        source, target = features[labelled], features[unlabelled]
        if self.method == "coral":
            return coral_loss(source, target) if min(n_l, n_u) >= 2 else None
        if min(n_l, n_u) < 1:
            return None
        if self.method == "mmd":
            return mmd_loss(source, target)
        classifier = self._domain_classifier(features)
        return domain_loss(classifier(source), classifier(target))

    def _pseudo_label_term(self, outputs):
        criterion = self.net.criterion_
        if isinstance(criterion, nn.CrossEntropyLoss):
            probabilities = outputs.softmax(dim=1)
        elif isinstance(criterion, nn.NLLLoss):
            probabilities = outputs  # skorch's convention: the module's softmax
        else:
            msg = (
                "adapt='self_training' reads class probabilities from the outputs "
                "of a network trained with CrossEntropyLoss or NLLLoss; the "
                f"criterion is {type(criterion).__name__}."
            )
            raise ValueError(msg)
        labels, confident = pseudo_labels(probabilities, self.threshold)
        if not confident.any():
            return None
        loss = self.get_loss(outputs[confident], labels, training=True)
        # The mean over the batch's unlabelled rows, unconfident ones adding 0.
        return loss * (confident.sum() / len(confident))

    def _domain_classifier(self, features):
        """DANN's domain classifier, built on the first batch, in the optimizer."""
        classifier = self.domain_classifier
        if classifier is None:
            classifier = DomainClassifier(features.shape[1]).to(features.device)
            self.domain_classifier = classifier
        optimizer = self.net.optimizer_
        first = next(classifier.parameters())
        if not any(
            p is first for group in optimizer.param_groups for p in group["params"]
        ):
            # Added again after a schedule rebuilds the optimizer.
            optimizer.add_param_group({"params": list(classifier.parameters())})
            _frozen.on_exit(_drop_group, self.net, classifier)
        return classifier


def _drop_group(net, classifier):
    """Take the domain classifier's parameter group out of the net's optimizer."""
    optimizer = getattr(net, "optimizer_", None)
    if optimizer is None:
        return
    params = {id(p) for p in classifier.parameters()}
    optimizer.param_groups[:] = [
        group
        for group in optimizer.param_groups
        if not any(id(p) in params for p in group["params"])
    ]
    for param in classifier.parameters():
        optimizer.state.pop(param, None)


class TargetStatistics(Callback):
    """AdaBN's last step: the target rows' normalisation statistics (``adapt="adabn"``).

    When training ends, :func:`~._adapt_terms.target_statistics` recomputes
    the running statistics of the network's ``BatchNorm`` layers on the
    unlabelled rows of the training data, so that prediction, which takes
    no domain marker and is made on the target, normalises with the
    target's statistics. Installed by ``fit`` for one fit.
    """

    sktransfer_safe = True

    def on_train_end(self, net, X=None, y=None, **kwargs):
        if X is None or y is None:
            return
        rows = batch_unlabelled(torch.as_tensor(np.asarray(y))).numpy()
        X_target = torch.as_tensor(np.asarray(X)[rows])
        size = net.get_params_for("iterator_valid").get("batch_size", net.batch_size)
        target_statistics(net.module_, X_target, size, net.device)
