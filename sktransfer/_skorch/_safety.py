"""One public protocol for a callback or loss to declare itself safe.

A skorch callback, or a loss wrapper set as the net's ``get_loss``, declares
itself safe for sktransfer's fast paths with the class attribute
``sktransfer_safe = True`` in its own class body (a subclass does not inherit
the declaration, since it may do more). The declaration promises that
instances of the class:

- never read the training samples and never read or write parameters of the
  frozen layers, so the frozen-stage cache (``cache_frozen="auto"``) may stay
  on while it is installed (the network it sees as ``net.module_`` is then only
  the trainable rest);
- never switch a module between training and evaluation mode between two
  training batches (in a per-batch hook, or as the ``get_loss`` wrapper), so
  the lean training step may skip re-entering training mode before each batch.

sktransfer's own callbacks and losses declare themselves this way.

The private markers of earlier versions, ``_sktransfer_cache_safe`` and
``_sktransfer_step_safe``, are still honoured for their own path.
"""

SAFE = "sktransfer_safe"


def declares_safe(obj, legacy=None):
    """Whether ``type(obj)`` declares itself safe in its own class body.

    Parameters
    ----------
    obj : object
        A callback, or a callable set on a net (a ``get_loss`` wrapper).
    legacy : str, default=None
        A private marker of earlier versions also accepted in its place
        (``"_sktransfer_cache_safe"`` or ``"_sktransfer_step_safe"``).

    Returns
    -------
    safe : bool
        True when the class sets ``sktransfer_safe = True`` (or ``legacy =
        True``) in its own body; inherited declarations do not count.
    """
    own = vars(type(obj))
    if own.get(SAFE, False) is True:
        return True
    return legacy is not None and own.get(legacy, False) is True
