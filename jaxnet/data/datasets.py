"""What jaxnet knows about a named dataset, and what a loaded one is: :class:`DatasetSpec`,
:class:`Split`, :class:`Dataset`, and :class:`DatasetUnavailableError`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from jaxnet import _checks


class DatasetUnavailableError(RuntimeError):
    """No source could provide the dataset; the message says what to install or pass."""


@dataclass(frozen=True)
class DatasetSpec:
    """What jaxnet knows about a named dataset."""

    name: str
    image_shape: tuple[int, ...]
    class_names: tuple[str, ...]
    tfds_name: str


_DIGITS = tuple(str(i) for i in range(10))
DATASETS: dict[str, DatasetSpec] = {
    s.name: s
    for s in [
        DatasetSpec("mnist", (28, 28), _DIGITS, "mnist"),
        DatasetSpec("fashion_mnist", (28, 28), (
            "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
            "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"), "fashion_mnist"),
        DatasetSpec("kmnist", (28, 28),
                    ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"), "kmnist"),
        DatasetSpec("cifar10", (32, 32, 3), (
            "airplane", "automobile", "bird", "cat", "deer",
            "dog", "frog", "horse", "ship", "truck"), "cifar10"),
    ]
}


#: Labelled texts, loaded as word ids by :func:`jaxnet.data.reviews.load_reviews`; the
#: "shape" is the default number of words kept per text.
REVIEW_DATASETS: dict[str, DatasetSpec] = {
    "rotten_tomatoes": DatasetSpec("rotten_tomatoes", (64,), ("rotten", "fresh"), ""),
    "imdb_reviews": DatasetSpec("imdb_reviews", (256,), ("negative", "positive"),
                                "imdb_reviews"),
}


@dataclass(frozen=True)
class Split:
    """One split: ``x`` the examples (uint8 images (N, ...), or word ids (N, T)), ``y``
    integer labels (N,)."""

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Dataset:
    """A loaded dataset: ``train`` and ``test`` splits plus metadata. For a labelled text
    (``"rotten_tomatoes"``, ``"imdb_reviews"``) ``x`` holds word ids and ``vocab`` the words
    in id order (id 0 the padding, id 1 an unknown word); for images ``vocab`` is empty."""

    name: str
    train: Split
    test: Split
    class_names: tuple[str, ...]
    source: str = field(default="")
    vocab: tuple[str, ...] = field(default=())

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. (28, 28)."""
        return tuple(self.train.x.shape[1:])


def spec_for(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` of an image dataset's name; ValueError listing the known ones
    otherwise."""
    _checks.one_of("dataset", name, DATASETS)
    return DATASETS[name]
