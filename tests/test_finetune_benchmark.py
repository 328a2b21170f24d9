"""The fine-tuning benchmark compares like with like, and its cost table runs.

Speed is measured by the benchmarks, never asserted here.
"""

import contextlib
import io
import math
import warnings

import torch

from benchmarks import finetune, step_costs
from benchmarks.common import _mlp_net, mnist_like
from sktransfer import TransferClassifier


def _pretrained():
    X, y = mnist_like("source", 64, seed=2, flat=True)
    transfer = TransferClassifier(
        _mlp_net(32, 1), source_params={"max_epochs": 1}, random_state=0
    )
    return transfer.fit_source(X, y).source_weights_


def test_baselines_fine_tune_from_the_pretrained_weights():
    # The references start from the same shared weights as sktransfer's fit:
    # with no epoch run, plain skorch's module holds them, the head is fresh.
    pretrained = _pretrained()
    X, y = mnist_like("all", 40, seed=1, flat=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = finetune.plain_skorch_fit(
            X, y, batch_size=16, max_epochs=0, pretrained=pretrained
        )
    state = net.module_.state_dict()
    for name, tensor in pretrained.items():
        if name.startswith("head."):
            assert state[name].shape[0] == 10  # resized to the target's classes
        else:
            assert torch.equal(state[name], tensor), name
    # The hand loop's first batch loss is that of the pretrained features.
    torch.manual_seed(0)
    loss = finetune.hand_written_loop(
        X[:16], y[:16], batch_size=16, max_epochs=1, pretrained=pretrained
    )
    torch.manual_seed(0)
    fresh = finetune.hand_written_loop(X[:16], y[:16], batch_size=16, max_epochs=1)
    assert math.isfinite(loss)
    assert loss != fresh


def test_step_cost_table_runs_quick():
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rows = step_costs.main(["--quick"])
    names = [what for what, _ in rows]
    assert names[-1] == "total per batch (kept pieces)"
    assert any(name.startswith("[removed]") for name in names)
    assert all(math.isfinite(us) for _, us in rows)
    assert "once per fit" in out.getvalue()
