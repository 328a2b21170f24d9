"""verbose: a summary line per phase, a plain epoch table, an optional progress bar."""

import re

import pytest
from nets import tiny_classifier_net
from skorch.callbacks import EarlyStopping, PrintLog, ProgressBar

from sktransfer import TransferClassifier
from sktransfer._fit._progress import PlainPrintLog

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

_SUMMARY = re.compile(
    r"\[sktransfer\] (Pretraining|Fine-tuning) done: (\d+) epochs?, (.*); "
    r"best train_loss (\S+) at epoch (\d+); \d+\.\d s\."
)


def test_summary_line_says_early_stopping_at_its_epoch_and_the_best_loss(
    digits, capsys
):
    stopper = EarlyStopping(monitor="train_loss", patience=2, threshold=10.0)
    net = tiny_classifier_net(max_epochs=50, callbacks=[("stop", stopper)])
    clf = TransferClassifier(net, verbose=1, random_state=0)
    clf.fit(digits.X_target, digits.y_target)
    out = capsys.readouterr().out
    (line,) = [line for line in out.splitlines() if "done:" in line]
    phase, epochs, why, best, at = _SUMMARY.fullmatch(line).groups()
    history = clf.net_.history
    # A threshold of 10 is never met: the stopper fires after patience + 1 epochs.
    assert (phase, int(epochs)) == ("Fine-tuning", len(history)) == ("Fine-tuning", 3)
    assert why == (
        "stopped early at epoch 3: train_loss did not improve by 10 for 2 epochs"
    )
    losses = history[:, "train_loss"]
    assert float(best) == pytest.approx(min(losses), rel=1e-3)
    assert int(at) == losses.index(min(losses)) + 1


def test_summary_line_per_phase_says_max_epochs_reached(digits, capsys):
    clf = TransferClassifier(
        tiny_classifier_net(max_epochs=2),
        source_params={"max_epochs": 3},
        verbose=1,
        random_state=0,
    )
    clf.fit_source(digits.X_source[:200], digits.y_source[:200])
    clf.fit(digits.X_target, digits.y_target)
    lines = [_SUMMARY.fullmatch(line) for line in capsys.readouterr().out.splitlines()]
    found = [m.groups()[:3] for m in lines if m]
    assert found == [
        ("Pretraining", "3", "max_epochs=3 reached"),
        ("Fine-tuning", "2", "max_epochs=2 reached"),
    ]


def test_epoch_table_has_no_colour_codes_off_a_terminal(digits, capsys):
    clf = TransferClassifier(tiny_classifier_net(max_epochs=3), verbose=1)
    clf.fit(digits.X_target, digits.y_target)
    out = capsys.readouterr().out
    assert "train_loss" in out  # skorch's table is printed
    assert "\x1b[" not in out
    # skorch's own PrintLog is back on the fitted net: nothing of ours outlives fit.
    printers = [cb for _, cb in clf.net_.callbacks_ if isinstance(cb, PrintLog)]
    assert [type(cb) for cb in printers] == [PrintLog]


def test_plain_print_log_prints_what_print_log_prints_without_colour():
    row = {"epoch": 1, "train_loss": 0.5, "train_loss_best": True, "dur": 0.1}
    coloured = PrintLog().initialize().table(row)
    plain = PlainPrintLog().initialize().table(row)
    assert "\x1b[" in coloured
    assert re.sub(r"\x1b\[\d+m", "", coloured) == plain


def test_verbose_2_adds_a_progress_bar_for_the_fit_only(digits, capsys):
    clf = TransferClassifier(tiny_classifier_net(max_epochs=2), verbose=2)
    clf.fit(digits.X_target, digits.y_target)
    err = capsys.readouterr().err
    # tqdm's bar, one per epoch: 50 samples in batches of 32 are 2 batches.
    assert err.count("| 0/2 [") == 2
    assert not any(isinstance(cb, ProgressBar) for _, cb in clf.net_.callbacks_)


def test_verbose_0_prints_nothing(digits, capsys):
    TransferClassifier(tiny_classifier_net(max_epochs=2)).fit(
        digits.X_target, digits.y_target
    )
    captured = capsys.readouterr()
    assert captured.out == captured.err == ""
