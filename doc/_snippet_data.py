"""What the user guide's snippets assume the reader has (tiny, for the tests).

``tests/test_docs.py`` runs every snippet of the pages; a page's hidden
``testsetup`` imports these names. They are small so that the snippets run in
seconds: a two-block CNN, 200 source images of digits 0-4 and 10 labelled
images per class of digits 5-9.
"""

import numpy as np  # noqa: F401 (the snippets use it)
import torch
from skorch import NeuralNetClassifier
from torch import nn

from sktransfer import TransferClassifier
from sktransfer.datasets import make_digits_transfer


class ConvNet(nn.Module):
    """Two convolution blocks (``features``) and a linear ``head``."""

    def __init__(self, n_outputs=10):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, kernel_size=3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 8, kernel_size=3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Linear(8 * 2 * 2, n_outputs)

    def forward(self, X):
        """Return the logits of a batch of ``(n, 1, 8, 8)`` images."""
        return self.head(self.features(X))


torch.set_num_threads(1)  # tiny networks: one thread is fastest (see pitfalls)
data = make_digits_transfer(10, random_state=0, images=True)
X_source, y_source = data.X_source[:200], data.y_source[:200]
X_target, y_target = data.X_target, data.y_target
X, y = data.X_test[:100], data.y_test[:100]
net = NeuralNetClassifier(
    ConvNet,
    max_epochs=3,
    lr=1e-3,
    optimizer=torch.optim.Adam,
    criterion=nn.CrossEntropyLoss,
    train_split=None,
    iterator_train__shuffle=True,
)
clf = TransferClassifier(net, head="head", random_state=0).fit_source(
    X_source, y_source
)
