"""Fashion-MNIST (Xiao et al., 2017): 60k training and 10k test images of clothing, 28x28 grey, 10 classes.

Read from the gzip IDX files that Debian's ``dataset-fashion-mnist`` package installs (no download);
``WORKBENCH_FASHION_MNIST`` points at another folder holding the same four files.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from workbench.errors import AssetError

DEBIAN_FOLDER = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# pixel mean and standard deviation of the 60k training images (scaled to [0, 1])
PIXEL_MEAN, PIXEL_STD = 0.2860, 0.3530

Split = Literal["train", "test"]


@dataclass(frozen=True)
class ImageSet:
    images: torch.Tensor  # uint8, (N, 28, 28)
    labels: torch.Tensor  # int64, (N,)

    def __len__(self) -> int:
        return len(self.labels)

    def first(self, count: int | None) -> "ImageSet":
        """The first ``count`` images (all when None)."""
        return self if count is None else ImageSet(self.images[:count], self.labels[:count])

    def normalised(self) -> torch.Tensor:
        """Float images (N, 1, 28, 28), standardised with the training set's pixel statistics."""
        return ((self.images.float() / 255.0 - PIXEL_MEAN) / PIXEL_STD).unsqueeze(1)


def folder() -> Path:
    path = Path(os.environ.get("WORKBENCH_FASHION_MNIST", DEBIAN_FOLDER))
    missing = [name for pair in FILES.values() for name in pair if not (path / name).is_file()]
    if missing:
        raise AssetError(f"Fashion-MNIST is not in {path} (missing {missing[0]})",
                         "run `apt-get install dataset-fashion-mnist`, or set WORKBENCH_FASHION_MNIST to a folder "
                         "with the four gzip IDX files")
    return path


def read_idx(path: Path) -> np.ndarray:
    """One gzip IDX file: two zero bytes, a type code (0x08 = uint8), the number of dimensions, then
    each dimension as a big-endian int32, then the values."""
    with gzip.open(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise AssetError(f"{path} is not an unsigned-byte IDX file", "reinstall dataset-fashion-mnist")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    values = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if values.size != int(np.prod(dims)):
        raise AssetError(f"{path} holds {values.size} values, its header says {dims}", "reinstall dataset-fashion-mnist")
    return values.reshape(dims)


@lru_cache(maxsize=2)
def load_fashion_mnist(split: Split) -> ImageSet:
    """The ``train`` (60k) or ``test`` (10k) split."""
    if split not in FILES:
        raise AssetError(f"unknown Fashion-MNIST split {split!r}", "use 'train' or 'test'")
    images_file, labels_file = FILES[split]
    images = read_idx(folder() / images_file)
    labels = read_idx(folder() / labels_file)
    if len(images) != len(labels):
        raise AssetError(f"Fashion-MNIST {split}: {len(images)} images but {len(labels)} labels",
                         "reinstall dataset-fashion-mnist")
    return ImageSet(torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64)))


@lru_cache(maxsize=1)
def fashion_mnist_identity() -> str:
    """Names the exact files: a hash over the four files' own hashes."""
    from workbench.models import file_sha256

    digest = hashlib.sha256()
    for name in sorted(n for pair in FILES.values() for n in pair):
        digest.update(f"{name}:{file_sha256(folder() / name)}".encode())
    return f"fashion-mnist:{digest.hexdigest()[:16]}"
