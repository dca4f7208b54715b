import pytest
import torch

from workbench.data.fashion_mnist import CLASSES, PIXEL_MEAN, PIXEL_STD, fashion_mnist_identity, load_fashion_mnist
from workbench.errors import AssetError


def test_splits_shapes_and_labels():
    train, test = load_fashion_mnist("train"), load_fashion_mnist("test")
    assert train.images.shape == (60_000, 28, 28) and test.images.shape == (10_000, 28, 28)
    assert train.images.dtype == torch.uint8 and train.labels.dtype == torch.int64
    # balanced classes: 6000 / 1000 of each of the 10
    assert torch.bincount(train.labels).tolist() == [6000] * len(CLASSES)
    assert torch.bincount(test.labels).tolist() == [1000] * len(CLASSES)
    # the first training image is an ankle boot (label 9), as in the data set's own documentation
    assert int(train.labels[0]) == 9


def test_normalisation_uses_training_statistics():
    images = load_fashion_mnist("train").images[:5000].float() / 255
    assert float(images.mean()) == pytest.approx(PIXEL_MEAN, abs=0.01)
    assert float(images.std()) == pytest.approx(PIXEL_STD, abs=0.01)
    normalised = load_fashion_mnist("test").normalised()
    assert normalised.shape == (10_000, 1, 28, 28)


def test_identity_is_stable_and_missing_files_say_how_to_install(tmp_path, monkeypatch):
    assert fashion_mnist_identity() == fashion_mnist_identity()
    assert fashion_mnist_identity().startswith("fashion-mnist:")
    monkeypatch.setenv("WORKBENCH_FASHION_MNIST", str(tmp_path))
    load_fashion_mnist.cache_clear()
    try:
        with pytest.raises(AssetError, match="apt-get install dataset-fashion-mnist"):
            load_fashion_mnist("test")
    finally:
        load_fashion_mnist.cache_clear()


def test_bad_idx_header_is_refused(tmp_path):
    import gzip

    from workbench.data.fashion_mnist import read_idx

    path = tmp_path / "bad.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + b"abc"))
    with pytest.raises(AssetError, match="not an unsigned-byte IDX"):
        read_idx(path)
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + (5).to_bytes(4, "big") + b"abc"))
    with pytest.raises(AssetError, match="header says"):
        read_idx(path)
