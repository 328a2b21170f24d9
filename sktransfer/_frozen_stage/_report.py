"""The ``frozen_cache_`` report: what ``fit`` decided about the frozen stage."""

from __future__ import annotations


def new_report(reason=None, **values):
    """Return a ``frozen_cache_`` report with every documented key.

    ``cached`` (bool), ``stage`` (the traced node the network is cut after),
    ``nbytes``, ``device`` (where the cached outputs or views are kept),
    ``reason`` (why not cached), ``views`` (``cache_views``) and ``outputs``
    (``"computed"``, ``"reused"``, ``"partly reused"`` or None); a cached fit's
    :meth:`~sktransfer._frozen_stage._stage.FrozenStage.outputs` adds
    ``digest_seconds``, ``compute_seconds`` and ``store``. The one place the
    report is made, on every path of ``fit``.
    """
    report = {
        "cached": False,
        "stage": None,
        "nbytes": 0,
        "device": None,
        "reason": reason,
        "views": None,
        "outputs": None,
    }
    report.update(values)
    return report
