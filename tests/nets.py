"""Tiny networks and helpers for the tests (joblib workers unpickle them by name)."""

import torch
from skorch import NeuralNetClassifier, NeuralNetRegressor
from torch import nn

from sktransfer import MLP


class ConvNet(nn.Module):
    """A tiny CNN for 8x8 images with BatchNorm in its features and a 2-layer head."""

    def __init__(self, n_outputs=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Sequential(
            nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, n_outputs)
        )

    def forward(self, X):
        return self.head(self.features(X))


class FixedOutputNet(nn.Module):
    """A network whose constructor does not know the number of outputs."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(64, 16), nn.ReLU())
        self.out = nn.Linear(16, 10)

    def forward(self, X):
        return self.out(self.body(X))


def tiny_classifier_net(module=MLP, **kwargs):
    params = {
        "criterion": nn.CrossEntropyLoss,
        "optimizer": torch.optim.Adam,
        "lr": 0.01,
        "max_epochs": 3,
        "batch_size": 32,
        "train_split": None,
        "iterator_train__shuffle": True,
        "verbose": 0,
    }
    if module is MLP:
        params["module__hidden_layer_sizes"] = (16,)
    params.update(kwargs)
    return NeuralNetClassifier(module, **params)


def tiny_regressor_net(**kwargs):
    params = {
        "lr": 0.01,
        "max_epochs": 3,
        "batch_size": 32,
        "train_split": None,
        "optimizer": torch.optim.Adam,
        "module__hidden_layer_sizes": (16,),
        "verbose": 0,
    }
    params.update(kwargs)
    return NeuralNetRegressor(MLP, **params)


def equal_weights(a, b):
    """Whether two state dicts hold the same names, in order, and equal tensors."""
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


class FlipImages:
    """A picklable batch augmentation: flip the images left to right."""

    def __call__(self, X):
        return torch.flip(X, dims=(-1,))
