"""Where the common model families keep their classifier, for ``head="auto"``.

torchvision and timm name the layer that maps features to class scores by a
few conventions: ResNet, RegNet, Inception and GoogLeNet call it ``fc``;
MobileNet, EfficientNet, DenseNet, VGG, AlexNet and ConvNeXt ``classifier``
(a ``Sequential`` ending in ``nn.Linear`` in torchvision); ViT, Swin and most of
timm ``head`` (torchvision's ViT ``heads.head``); timm models also return it
from ``get_classifier()``. :func:`auto_head` finds the output layer there, and
otherwise falls back to the module's last ``nn.Linear``.
"""

from __future__ import annotations

from torch import nn

# Top-level children that hold the classifier, by the families' conventions.
CLASSIFIER_NAMES = ("fc", "classifier", "head", "heads", "last_linear")


def _last_linear(module, prefix=""):
    """Return the name of the last ``nn.Linear`` inside ``module``, or None."""
    names = [name for name, sub in module.named_modules() if isinstance(sub, nn.Linear)]
    if not names:
        return None
    name = names[-1]
    return f"{prefix}.{name}" if prefix and name else prefix or name


def auto_head(module: nn.Module) -> str | None:
    """Return the name of the output layer of ``module``, or None if it has none.

    Parameters
    ----------
    module : torch.nn.Module
        The network.

    Returns
    -------
    name : str or None
        In order: the ``nn.Linear`` that timm's ``get_classifier()`` returns;
        the last ``nn.Linear`` inside the last-registered top-level child named
        ``fc``, ``classifier``, ``head``, ``heads`` or ``last_linear`` (so
        ``"fc"`` for a ResNet, ``"classifier.1"`` for a MobileNetV2,
        ``"heads.head"`` for torchvision's ViT); the module's last
        ``nn.Linear`` in ``named_modules()`` order. None when there is none
        (or it is the module itself).
    """
    get_classifier = getattr(module, "get_classifier", None)
    if callable(get_classifier):
        try:
            classifier = get_classifier()
        except Exception:  # noqa: BLE001 (not timm's method: ignore it)
            classifier = None
        if isinstance(classifier, nn.Linear):
            for name, sub in module.named_modules():
                if sub is classifier and name:
                    return name
    children = dict(module.named_children())
    for name in reversed(children):
        if name in CLASSIFIER_NAMES:
            found = _last_linear(children[name], prefix=name)
            if found is not None:
                return found
    return _last_linear(module) or None
