"""Checks of texts and token dicts for a Hugging Face net, on the tiny offline BERT.

A token dict without ``attention_mask`` (a warning when its ids hold the
padding id), ``max_length``, token ids outside the vocabulary, what a
sequence that is not texts holds, ``token_type_ids`` out of range, and a
network of one's own on tokens traced through for the frozen-stage cache.
"""

import re
import warnings

import numpy as np
import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import test_text  # noqa: E402 (its tiny offline BERT and texts)
from test_text import ENCODER, TEXTS, Y, _clf  # noqa: E402

from sktransfer import HuggingFaceNet, PretrainedFeatures  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

tiny_dir = test_text.tiny_dir  # the fixture


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _tokenizer(path):
    return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)


@pytest.fixture(scope="module")
def fitted(tiny_dir):
    """Fitted on raw texts, max_length=16, the encoder frozen (read-only)."""
    return _clf(
        tiny_dir, net=HuggingFaceNet(tiny_dir, max_length=16), frozen=ENCODER
    ).fit(TEXTS, Y)


def _padding_warnings(record):
    return [w for w in record if "hold the padding id" in str(w.message)]


# ---------------------------------------------- a token dict without attention_mask


def test_ids_with_padding_and_no_mask_warn_at_fit_and_predict(tiny_dir, fitted):
    enc = _tokenizer(tiny_dir)(
        list(TEXTS), padding="max_length", max_length=16, return_tensors="np"
    )
    ids = {"input_ids": enc["input_ids"]}
    pattern = (
        r"24 of 24 rows of input_ids hold the padding id 0, but the dict has no "
        r"attention_mask: every token counts, padding included.*Pass the "
        r"tokenizer's attention_mask"
    )
    clf = _clf(tiny_dir, net=HuggingFaceNet(tiny_dir, max_length=16), max_epochs=1)
    with pytest.warns(UserWarning, match=pattern) as record:
        clf.fit(ids, Y)
    assert [w.filename for w in _padding_warnings(record)] == [__file__]
    with pytest.warns(UserWarning, match=pattern) as record:
        features = fitted.transform(ids)
    assert [w.filename for w in _padding_warnings(record)] == [__file__]
    # As documented: every token counts, padding included: the mean over all
    # 16 positions of the (frozen, unchanged) encoder's states, by hand.
    model = transformers.BertModel.from_pretrained(tiny_dir, local_files_only=True)
    with torch.no_grad():
        states = model.eval()(input_ids=torch.as_tensor(enc["input_ids"]))
    hand = states.last_hidden_state.mean(1).numpy()
    np.testing.assert_allclose(features, hand, atol=1e-5)
    assert np.abs(features - fitted.transform(TEXTS)).max() > 1e-3  # not the texts'
    with pytest.warns(UserWarning, match=pattern) as record:
        fitted.predict(ids)
    assert [w.filename for w in _padding_warnings(record)] == [__file__]


def test_ids_without_padding_and_no_mask_are_taken_silently(tiny_dir, fitted):
    # Truncated but not padded: rows of their own lengths, no padding id.
    ids = _tokenizer(tiny_dir)(list(TEXTS), truncation=True, max_length=16)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        proba = fitted.predict_proba({"input_ids": ids["input_ids"]})
    assert not _padding_warnings(record)
    np.testing.assert_allclose(proba, fitted.predict_proba(TEXTS), atol=1e-6)


# ------------------------------------------------------------------- max_length


@pytest.mark.parametrize("value", [0, 1, 2, -5, 2.5, "16", True])
def test_max_length_is_checked_at_fit_before_any_change(tiny_dir, value):
    clf = _clf(tiny_dir, net=HuggingFaceNet(tiny_dir, max_length=value))
    pattern = (
        r"max_length must be None \(the model's default\) or an int of at least 3 "
        r"\(room for the tokenizer's 2 special token\(s\) and at least one token "
        rf"of text\); got {re.escape(repr(value))}"
    )
    with pytest.raises(ValueError, match=pattern):
        clf.fit(TEXTS, Y)
    assert not hasattr(clf, "net_")
    assert not hasattr(clf, "n_truncated_")


def test_a_bad_max_length_leaves_a_fitted_estimator_as_it_was(tiny_dir):
    clf = _clf(tiny_dir, net=HuggingFaceNet(tiny_dir, max_length=8), max_epochs=1)
    clf.fit(TEXTS, Y)
    net, weights = clf.net_, clf.net_.module_.state_dict()
    clf.set_params(net__max_length=2)
    with pytest.raises(ValueError, match="at least 3.*got 2"):
        clf.fit(TEXTS, Y)
    assert clf.net_ is net
    for name, value in clf.net_.module_.state_dict().items():
        assert torch.equal(value, weights[name]), name


def test_an_integer_max_length_of_any_integer_type_is_taken(tiny_dir):
    tok = _tokenizer(tiny_dir)
    assert (
        HuggingFaceNet(tiny_dir, max_length=np.int64(3)).resolved_max_length(tok) == 3
    )
    # Building (no tokenizer at hand) asks for a positive int at least.
    with pytest.raises(ValueError, match="at least 1 .*got 0"):
        HuggingFaceNet(tiny_dir, max_length=0).build()


# --------------------------------------------------- ids outside the vocabulary


def test_ids_outside_the_vocabulary_name_the_id_and_vocabulary(tiny_dir, fitted):
    enc = _tokenizer(tiny_dir)(list(TEXTS), padding=True, return_tensors="np")
    size = transformers.AutoConfig.from_pretrained(tiny_dir).vocab_size
    mask = enc["attention_mask"]
    big = {"input_ids": enc["input_ids"] + 1000 * mask, "attention_mask": mask}
    top = int(big["input_ids"].max())
    pattern = (
        rf"input_ids holds token id {top} \(the largest\), but the model at .* "
        rf"embeds {size} tokens \(ids 0..{size - 1}, its vocab_size\): the ids "
        r"probably come from another tokenizer"
    )
    for call in (
        fitted.predict,
        fitted.transform,
        PretrainedFeatures(fitted).fit(TEXTS).transform,
        lambda X: _clf(tiny_dir, max_epochs=1).fit(X, Y),
    ):
        with pytest.raises(ValueError, match=pattern):
            call(big)
    negative = {"input_ids": enc["input_ids"].copy(), "attention_mask": mask}
    negative["input_ids"][3, 1] = -100
    with pytest.raises(ValueError, match=r"token id -100 \(the smallest\)"):
        fitted.predict_proba(negative)
    # Ids under the padding (mask 0) are never read: taken.
    masked = {
        "input_ids": np.where(mask == 1, enc["input_ids"], 5000),
        "attention_mask": mask,
    }
    np.testing.assert_allclose(
        fitted.predict_proba(masked), fitted.predict_proba(TEXTS), atol=1e-6
    )


# ------------------------------------------------------- messages of bad inputs


def test_bytes_are_named_with_how_to_decode_them(fitted):
    with pytest.raises(TypeError, match=r"got list of bytes; decode bytes to strings"):
        fitted.predict([b"great", b"bad"])
    with pytest.raises(TypeError, match=r"entry 1 is b'bad' of type bytes; decode"):
        fitted.predict(["great", b"bad"])
    with pytest.raises(TypeError, match=r"ndarray of bytes; decode them"):
        fitted.predict(np.array([b"great", b"bad"]))


def test_token_type_ids_out_of_range_name_the_value_and_range(tiny_dir):
    enc = dict(_tokenizer(tiny_dir)(list(TEXTS), padding=True, return_tensors="np"))
    types = np.zeros_like(enc["input_ids"])
    types[:, 1] = 2  # every text has a token there
    enc["token_type_ids"] = types
    pattern = (
        r"token_type_ids value of 2, but BertModel takes values 0..1 \(its "
        r"config's type_vocab_size=2\)"
    )
    with pytest.raises(ValueError, match=pattern):
        _clf(tiny_dir, max_epochs=1).fit(enc, Y)


# ------------------------------------------ a network of one's own, traced through


class MaskedBag(nn.Module):
    """A bag of embeddings, mean over the attention mask, then an MLP."""

    def __init__(self, vocab_size):
        super().__init__()
        self.emb = nn.Embedding(vocab_size, 8, padding_idx=0)
        self.body = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
        self.fc = nn.Linear(8, 2)

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.unsqueeze(-1).float()
        pooled = (self.emb(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1)
        return self.fc(self.body(pooled))


class PlainBag(MaskedBag):
    """The mean over all positions; takes the mask but does not read it."""

    def forward(self, input_ids, attention_mask=None):
        return self.fc(self.body(self.emb(input_ids).mean(1)))


class Branching(MaskedBag):
    def forward(self, input_ids, attention_mask):
        if input_ids.sum() > 0:  # control flow on the data: not traceable
            return super().forward(input_ids, attention_mask)
        return self.fc(self.body(self.emb(input_ids).sum(1)))


def _own(tok, module, **params):
    torch.manual_seed(0)
    net = HuggingFaceNet(module(tok.vocab_size), tokenizer=tok, max_length=16)
    params = {"head": "fc", "frozen": "emb.*", "max_epochs": 4, "lr": 0.05, **params}
    return _clf(None, net=net, **params)


def test_own_network_on_tokens_caches_its_frozen_stage(tiny_dir):
    tok = _tokenizer(tiny_dir)
    cached = _own(tok, MaskedBag, cache_frozen=True).fit(TEXTS, Y)
    plain = _own(tok, MaskedBag, cache_frozen=False).fit(TEXTS, Y)
    report = cached.frozen_cache_
    assert report["cached"] is True, report["reason"]
    assert report["stage"] == "truediv"  # the masked mean: the user's own cut
    assert plain.frozen_cache_["cached"] is False
    np.testing.assert_allclose(
        cached.predict_proba(TEXTS), plain.predict_proba(TEXTS), atol=1e-6
    )


def test_own_network_on_tokens_cuts_where_it_does_on_integer_arrays(tiny_dir):
    tok = _tokenizer(tiny_dir)
    tokens = _own(tok, PlainBag).fit(TEXTS, Y)

    class OnIds(PlainBag):
        def forward(self, x):
            return super().forward(x)

    ids = tok(list(TEXTS), padding="max_length", max_length=16, return_tensors="np")
    torch.manual_seed(0)
    on_ids = _clf(None, net=OnIds(tok.vocab_size), head="fc", frozen="emb.*")
    on_ids.fit(ids["input_ids"].astype(np.int64), Y)
    assert on_ids.frozen_cache_["cached"] is True
    assert tokens.frozen_cache_["cached"] is True, tokens.frozen_cache_["reason"]
    assert tokens.frozen_cache_["stage"] == on_ids.frozen_cache_["stage"] == "mean"


def test_an_untraceable_own_network_is_named_in_the_reason(tiny_dir):
    clf = _own(_tokenizer(tiny_dir), Branching, max_epochs=1).fit(TEXTS, Y)
    reason = clf.frozen_cache_["reason"]
    assert clf.frozen_cache_["cached"] is False
    assert reason.startswith("torch.fx cannot trace Branching:"), reason
    assert "TokenNet" not in reason
