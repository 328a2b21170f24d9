"""Gradient checkpointing of a Hugging Face net (``gradient_checkpointing=True``).

On the tiny offline BERT of ``test_text.py``: checkpointing recomputes each
block in the backward pass, so a fit does the same arithmetic (dropout
included, its random state restored) and must give the same weights.
"""

import io
import logging
import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from torch import nn

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import test_text  # noqa: E402 (its tiny offline BERT and texts)
from test_text import ENCODER, TEXTS, Y, _clf  # noqa: E402

from sktransfer import HuggingFaceNet  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

tiny_dir = test_text.tiny_dir  # the fixture
BertIntermediate = transformers.models.bert.modeling_bert.BertIntermediate


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _net(path, **params):
    return HuggingFaceNet(path, max_length=16, **params)


def _checkpointing(module):
    """Whether the fitted module's transformers model checkpoints its blocks."""
    model = module.__dict__["model"]
    return any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


def _fit_counting(monkeypatch, clf):
    """Fit ``clf``; return it and how often a block's MLP ran with gradients."""
    calls = []
    forward = BertIntermediate.forward

    def counted(self, *args, **kwargs):
        if self.training and torch.is_grad_enabled():
            calls.append(1)
        return forward(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(BertIntermediate, "forward", counted)
        clf.fit(TEXTS, Y)
    return clf, len(calls)


@pytest.mark.parametrize(
    "params",
    [
        {"frozen": ()},  # full fine-tuning
        # The blocks' input (the frozen embeddings' output) needs no gradient:
        # reentrant checkpointing would train nothing in them.
        {"frozen": ("embeddings.*",)},
        {"adapter": "lora", "lora_rank": 4, "lr": 1e-2},
    ],
    ids=["full", "frozen-embeddings", "lora"],
)
def test_checkpointing_fits_the_same_weights(tiny_dir, monkeypatch, params):
    if params.get("adapter"):
        pytest.importorskip("peft")
    config = transformers.BertConfig.from_pretrained(tiny_dir)
    assert config.hidden_dropout_prob > 0
    assert config.attention_probs_dropout_prob > 0
    fits, calls = {}, {}
    for checkpointing in (False, True):
        clf = _clf(
            tiny_dir,
            net=_net(tiny_dir, gradient_checkpointing=checkpointing),
            batch_size=8,
            **params,
        )
        fits[checkpointing], calls[checkpointing] = _fit_counting(monkeypatch, clf)
        assert _checkpointing(clf.net_.module_) is checkpointing
    # Each training step ran each block twice: once forward, once again in
    # the backward pass (2 blocks, 3 batches of 8, 3 epochs).
    steps = 3 * 3
    assert calls[False] == 2 * steps
    assert calls[True] == 2 * calls[False]
    plain, checkpointed = (fits[k].net_.module_.state_dict() for k in (False, True))
    assert plain.keys() == checkpointed.keys()
    # The fit trained the shared part (LoRA's B starts at zero).
    start = transformers.BertModel.from_pretrained(tiny_dir).state_dict()
    start.update({k: torch.zeros_like(v) for k, v in plain.items() if "lora_B" in k})
    moved = [k for k in start if k in plain and not torch.equal(plain[k], start[k])]
    assert any(k.startswith("encoder.") for k in moved)
    for name, value in plain.items():
        torch.testing.assert_close(
            checkpointed[name], value, rtol=0, atol=1e-5, msg=name
        )
    np.testing.assert_allclose(
        fits[True].predict_proba(TEXTS), fits[False].predict_proba(TEXTS), atol=1e-5
    )
    np.testing.assert_allclose(
        fits[True].transform(TEXTS), fits[False].transform(TEXTS), atol=1e-5
    )


def test_nothing_is_logged(tiny_dir):
    # transformers logs once per process that it turns a decoder's cache off
    # under checkpointing; an encoder has nothing to turn off.
    logging.Logger.warning_once.cache_clear()
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        net = _net(tiny_dir, gradient_checkpointing=True)
        clf = _clf(tiny_dir, net=net, max_epochs=1).fit(TEXTS, Y)
    finally:
        logger.removeHandler(handler)
    assert _checkpointing(clf.net_.module_)
    messages = [record.getMessage() for record in records]
    assert not [m for m in messages if "checkpointing" in m], messages


def test_frozen_encoder_is_cached_and_nothing_warns(tiny_dir, monkeypatch):
    # A frozen encoder runs once, in evaluation mode, without gradients:
    # checkpointing has nothing to do there, and says nothing.
    fits = {}
    for checkpointing in (False, True):
        clf = _clf(
            tiny_dir,
            net=_net(tiny_dir, gradient_checkpointing=checkpointing),
            frozen=ENCODER,
            lr=1e-2,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            warnings.simplefilter("ignore", ConvergenceWarning)
            fits[checkpointing], calls = _fit_counting(monkeypatch, clf)
        assert calls == 0
        assert clf.frozen_cache_["cached"]
        assert clf.frozen_cache_["stage"] == "forward_features"
    assert _checkpointing(fits[True].net_.module_)
    np.testing.assert_array_equal(
        fits[True].predict_proba(TEXTS), fits[False].predict_proba(TEXTS)
    )


class NoCheckpointing(transformers.BertModel):
    supports_gradient_checkpointing = False


class OwnNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(200, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, input_ids, attention_mask=None):
        return self.head(self.embed(input_ids).mean(1))


def test_unsupported_models_are_refused_before_anything_changes(tiny_dir):
    torch.manual_seed(0)
    model = NoCheckpointing(transformers.BertConfig.from_pretrained(tiny_dir))
    clf = _clf(tiny_dir, net=_net(model, tokenizer=tiny_dir), max_epochs=1)
    clf.fit(TEXTS, Y)
    net, proba = clf.net_, clf.predict_proba(TEXTS)
    clf.set_params(net__gradient_checkpointing=True)
    with pytest.raises(ValueError, match=r"e\.g\. BertModel.*NoCheckpointing does not"):
        clf.fit(TEXTS, Y)
    assert clf.net_ is net
    np.testing.assert_array_equal(clf.predict_proba(TEXTS), proba)
    own = _clf(
        tiny_dir, net=_net(OwnNet(), tokenizer=tiny_dir, gradient_checkpointing=True)
    )
    with pytest.raises(ValueError, match=r"OwnNet does not.*tokenizer="):
        own.fit(TEXTS, Y)
    assert not hasattr(own, "net_")
    bad = _clf(tiny_dir, net=_net(tiny_dir, gradient_checkpointing="yes"))
    with pytest.raises(ValueError, match="must be True or False; got 'yes'"):
        bad.fit(TEXTS, Y)


def test_clone_pickle_and_saved_source_keep_checkpointing(tiny_dir):
    net = _net(tiny_dir, gradient_checkpointing=True)
    clf = _clf(tiny_dir, net=net, max_epochs=1).fit(TEXTS, Y)
    assert clone(clf).get_params()["net__gradient_checkpointing"] is True
    assert (
        _clf(tiny_dir).set_params(net=net).get_params()["net__gradient_checkpointing"]
    )
    again = pickle.loads(pickle.dumps(clf))
    assert _checkpointing(again.net_.module_)
    np.testing.assert_array_equal(again.predict_proba(TEXTS), clf.predict_proba(TEXTS))
    # Pretrain with checkpointing, save, load into a fresh estimator: the
    # same fine-tuning, checkpointed too.
    source = _clf(tiny_dir, net=net, max_epochs=2).fit_source(TEXTS, 1 - Y)
    buffer = io.BytesIO()
    source.save_source(buffer)
    buffer.seek(0)
    loaded = _clf(tiny_dir, net=clone(net), max_epochs=2).load_source(buffer)
    direct = clone(source).fit(TEXTS[::2], Y[::2])
    reloaded = loaded.fit(TEXTS[::2], Y[::2])
    assert _checkpointing(reloaded.net_.module_)
    np.testing.assert_array_equal(
        reloaded.predict_proba(TEXTS), direct.predict_proba(TEXTS)
    )
