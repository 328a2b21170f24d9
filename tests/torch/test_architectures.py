"""Model factories as ``net`` and ``head="auto"`` on the common families' structures.

torchvision's registry wheel does not import against this CPU torch, and timm
needs torchvision: the networks are built here with the module structure of
the families (names and nesting), at 8x8 inputs and random weights.
"""

import functools
import warnings
from collections import OrderedDict

import numpy as np
import pytest
import torch
from nets import tiny_classifier_net
from sklearn.exceptions import ConvergenceWarning
from torch import nn

from sktransfer import TransferClassifier
from sktransfer._torch._architectures import auto_head


class _Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.bn1(self.conv1(x)) + x)


class ResNetLike(nn.Module):
    """torchvision's ResNet layout: conv1, bn1, layer1, avgpool, fc."""

    def __init__(self, num_classes=1000, width=4):
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        self.layer1 = nn.Sequential(_Block(width))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        x = self.layer1(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet_like(*, num_classes=1000, width=4):
    """A factory in torchvision's style (``torchvision.models.resnet18``)."""
    return ResNetLike(num_classes, width)


class MobileNetV2Like(nn.Module):
    """features, then classifier = Sequential(Dropout, Linear)."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU6()
        )
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(8, num_classes))

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


class MobileNetV3Like(MobileNetV2Like):
    """classifier = Sequential(Linear, Hardswish, Dropout, Linear)."""

    def __init__(self, num_classes=1000):
        super().__init__(num_classes)
        self.classifier = nn.Sequential(
            nn.Linear(8, 16),
            nn.Hardswish(),
            nn.Dropout(0.2),
            nn.Linear(16, num_classes),
        )


class _Attention(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        weights = torch.softmax(q @ k.transpose(1, 2) / q.shape[-1] ** 0.5, dim=-1)
        return self.proj(weights @ v)


class ViTLike(nn.Module):
    """timm's VisionTransformer layout: patch_embed, blocks, norm, head."""

    def __init__(self, num_classes=1000, dim=8):
        super().__init__()
        self.patch_embed = nn.Conv2d(1, dim, 4, stride=4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.Sequential(_Attention(dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def get_classifier(self):
        return self.head

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1)
        return self.head(self.norm(self.blocks(x))[:, 0])


class TorchvisionViTLike(ViTLike):
    """torchvision's layout: the head inside ``heads``."""

    def __init__(self, num_classes=1000, dim=8):
        super().__init__(num_classes, dim)
        del self.head
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(dim, num_classes)))

    def get_classifier(self):  # torchvision has none; this one returns nothing
        return None

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1)
        return self.heads(self.norm(self.blocks(x))[:, 0])


class HeadBeforeProjection(nn.Module):
    """A classifier registered before another Linear (an auxiliary projection)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU())
        self.fc = nn.Linear(8, 10)
        self.projection = nn.Linear(8, 4)  # e.g. for a contrastive loss

    def forward(self, x):
        return self.fc(self.body(x))


@pytest.mark.parametrize(
    ("module", "head"),
    [
        (ResNetLike(), "fc"),
        (MobileNetV2Like(), "classifier.1"),
        (MobileNetV3Like(), "classifier.3"),
        (ViTLike(), "head"),
        (TorchvisionViTLike(), "heads.head"),
        (HeadBeforeProjection(), "fc"),
    ],
)
def test_auto_head_follows_the_families_conventions(module, head):
    assert auto_head(module) == head


def test_auto_head_falls_back_to_the_last_linear():
    module = nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 3))
    assert auto_head(module) == "3"
    assert auto_head(nn.Linear(2, 2)) is None


@pytest.mark.parametrize(
    ("factory", "head"),
    [
        (functools.partial(resnet_like, width=4), ("fc",)),
        (MobileNetV3Like, ("classifier.3",)),
        (ViTLike, ("head",)),
        (TorchvisionViTLike, ("heads.head",)),
    ],
)
def test_factories_pretrain_and_fine_tune(digit_images, factory, head):
    X, y = digit_images.X_source[:100], digit_images.y_source[:100]
    clf = TransferClassifier(tiny_classifier_net(factory, max_epochs=2), random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit_source(X, y)
        clf.fit(digit_images.X_target, digit_images.y_target)
    assert clf.head_ == head
    module = clf.net_.module_
    assert module.get_submodule(head[0]).out_features == 5  # digits 5-9
    proba = clf.predict_proba(digit_images.X_test[:7])
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_bare_factory_is_wrapped_with_the_defaults():
    factory = functools.partial(resnet_like, width=4)
    template = TransferClassifier(factory)._template()
    assert template.module is factory
    assert template.criterion is nn.CrossEntropyLoss


def trained_resnet_like(num_classes=1000):
    """Stands for a factory returning trained weights (``weights=...``)."""
    module = ResNetLike(num_classes)
    generator = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator))
    return module


def test_factory_weights_are_the_pretrained_weights(digit_images):
    # Without fit_source, fit starts from what the factory returns: shared
    # layers kept (here frozen), the head rebuilt for the target.
    net = tiny_classifier_net(trained_resnet_like, max_epochs=1)
    clf = TransferClassifier(net, frozen="conv1.*", random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(digit_images.X_target, digit_images.y_target)
    expected = trained_resnet_like()
    assert torch.equal(clf.net_.module_.conv1.weight, expected.conv1.weight)
    assert clf.head_ == ("fc",)
    assert clf.net_.module_.fc.out_features == 5


def test_real_torchvision_factory_if_importable(digit_images):
    try:
        from torchvision.models import resnet18
    except Exception as exc:  # noqa: BLE001 (a CUDA build fails with RuntimeError)
        pytest.skip(f"torchvision does not import here: {exc}")
    X = np.repeat(digit_images.X_target, 3, axis=1)  # 3 channels
    clf = TransferClassifier(
        tiny_classifier_net(resnet18, max_epochs=1, batch_size=25), random_state=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, digit_images.y_target)
    assert clf.head_ == ("fc",)
    assert clf.net_.module_.fc.out_features == 5


def test_not_a_factory_is_refused():
    clf = TransferClassifier(net="resnet18")
    with pytest.raises(TypeError, match="a function returning a module"):
        clf.fit(np.zeros((4, 2), np.float32), [0, 1, 0, 1])
