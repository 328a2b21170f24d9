"""The estimators ``compare_transfer`` scores: scratch, transfer, probe, settings."""

from __future__ import annotations

from collections.abc import Mapping

from sklearn.base import clone
from sklearn.pipeline import Pipeline

from .._estimators._base import _SCRATCH_PARAMS, _BaseTransfer
from .._estimators._pipeline import WeightedPipeline, transfer_step
from ._select import linear_probe

# The names of the two settings every comparison has.
SCRATCH = "scratch"


TRANSFER = "transfer"


PROBE = "linear probe"


def from_scratch(estimator):
    """Return an unfitted copy of ``estimator`` that trains from fresh weights.

    The public switch ``pretrained=False``, with nothing frozen and no other
    fine-tuning method, on the transfer estimator (the last step of a
    pipeline).
    """
    params = dict(_SCRATCH_PARAMS)
    if isinstance(estimator, Pipeline):
        name = estimator.steps[-1][0]
        params = {f"{name}__{key}": value for key, value in params.items()}
    return clone(estimator).set_params(**params)


def probe_pipeline(estimator):
    """Return the linear probe: a linear model on the pretrained features.

    Standardised head inputs of the pretrained network
    (:class:`PretrainedFeatures`), then :class:`LogisticRegressionCV` for a
    classifier or :class:`RidgeCV` otherwise, each choosing its L2 strength
    by cross-validation on the training labels (:func:`linear_probe`); a
    pipeline's earlier steps come first, under their own names (the probe's
    steps take names no earlier step has).
    """
    steps = list(estimator.steps[:-1]) if isinstance(estimator, Pipeline) else []
    probe = linear_probe(transfer_step(estimator, "compare_transfer"))
    taken = {name for name, _ in steps}
    for name, step in zip(
        ("pretrainedfeatures", "standardscaler", "probe"), probe, strict=True
    ):
        steps.append((_free_name(name, taken), step))
        taken.add(steps[-1][0])
    return type(probe)(steps)


def weighted(candidate):
    """Return a pipeline ``candidate`` as a :class:`WeightedPipeline`, else as is."""
    if isinstance(candidate, Pipeline) and not isinstance(candidate, WeightedPipeline):
        return WeightedPipeline(**candidate.get_params(deep=False))
    return candidate


def _free_name(name, taken):
    """Return ``name``, or ``name`` with the first free suffix ``-2``, ``-3``, ..."""
    if name not in taken:
        return name
    suffix = 2
    while f"{name}-{suffix}" in taken:
        suffix += 1
    return f"{name}-{suffix}"


def seeded(estimator, seed):
    """Set the ``random_state`` of the transfer estimator in ``estimator``.

    The linear probe (a pipeline whose last step is not a transfer
    estimator) is left as it is: its folds are its own.
    """
    if seed is None:
        return estimator
    if isinstance(estimator, Pipeline):
        name, step = estimator.steps[-1]
        if not isinstance(step, _BaseTransfer):
            return estimator
        return estimator.set_params(**{f"{name}__random_state": seed})
    return estimator.set_params(random_state=seed)


def check_steps(name, candidate):
    """Raise a ValueError before any fit if a pipeline's step names clash.

    scikit-learn checks a pipeline's names only when it is fitted, which in
    ``compare_transfer`` would be after every earlier setting had run.
    """
    if not isinstance(candidate, Pipeline):
        return
    names = [step for step, _ in candidate.steps]
    repeated = sorted({step for step in names if names.count(step) > 1})
    bad = [step for step in names if "__" in step]
    if repeated or bad:
        msg = (
            f"The pipeline of the setting {name!r} has step names "
            f"{names}, of which {repeated or bad} are "
            + ("repeated" if repeated else "not valid (they contain '__')")
            + "; a pipeline's step names must be unique and free of '__'."
        )
        raise ValueError(msg)


def check_settings(settings):
    """Check the ``settings`` of compare_transfer; return them as a dict."""
    if settings is None:
        return {}
    if not isinstance(settings, Mapping):
        msg = (
            "settings must be a dict mapping a setting's name to a dict of "
            f"parameters, e.g. {{'frozen backbone': {{'frozen': 'features.*'}}}}; "
            f"got {type(settings).__name__}: {settings!r}."
        )
        raise TypeError(msg)
    seen = {SCRATCH: SCRATCH, TRANSFER: TRANSFER, PROBE: PROBE}
    for name, params in settings.items():
        if not isinstance(name, str):
            msg = (
                f"Setting names must be strings; got {name!r} of type "
                f"{type(name).__name__}."
            )
            raise TypeError(msg)
        key = name.strip().casefold()
        if not key:
            msg = f"Setting names must not be empty; got {name!r}."
            raise ValueError(msg)
        if key in seen:
            if seen[key] in (SCRATCH, TRANSFER, PROBE):
                msg = (
                    f"The setting name {name!r} is reserved: every comparison has "
                    f"{SCRATCH!r} (training from scratch), {TRANSFER!r} "
                    "(fine-tuning with the estimator's own parameters) and "
                    f"{PROBE!r} (a linear model on the pretrained features). "
                    "Name it otherwise."
                )
            else:
                msg = (
                    f"The setting names {seen[key]!r} and {name!r} are duplicates "
                    "(names are compared ignoring case and surrounding spaces)."
                )
            raise ValueError(msg)
        seen[key] = name
        if not isinstance(params, Mapping):
            msg = (
                f"The setting {name!r} must be a dict of parameters to set on the "
                f"estimator, e.g. {{'frozen': 'features.*'}}; got "
                f"{type(params).__name__}: {params!r}."
            )
            raise TypeError(msg)
    return dict(settings)


def with_params(estimator, name, params, seed):
    """Return a clone of ``estimator`` seeded and with a setting's ``params``."""
    candidate = seeded(clone(estimator), seed)
    try:
        candidate.set_params(**params)
        transfer_step(candidate, "compare_transfer")._validate_params()
    except (TypeError, ValueError) as exc:
        msg = f"Invalid parameters {dict(params)!r} in the setting {name!r}: {exc}"
        if isinstance(candidate, Pipeline) and any("__" not in k for k in params):
            step = candidate.steps[-1][0]
            prefixed = {f"{step}__{key}": value for key, value in params.items()}
            msg += f" On a pipeline, name the transfer estimator's step: {prefixed!r}."
        raise type(exc)(msg) from exc
    return candidate
