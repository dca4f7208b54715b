import torch

from workbench.models.fashion_cnn import build_fashion_cnn, fashion_cnn_prunable


def test_shapes_and_sparse_layers():
    model = build_fashion_cnn(0)
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    layers = fashion_cnn_prunable(model)
    assert list(layers) == ["conv2", "fc1", "fc2"]
    # every sparse layer's input width is a multiple of 4 (N:M groups along it)
    assert [m.weight.shape[1] for m in layers.values()] == [16, 1568, 128]
    assert sum(m.weight.numel() for m in layers.values()) == 4608 + 200_704 + 1280


def test_initialisation_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a, b, c = build_fashion_cnn(0), build_fashion_cnn(0), build_fashion_cnn(1)
    assert torch.rand(1) == expected
    assert torch.equal(a.fc1.weight, b.fc1.weight) and not torch.equal(a.fc1.weight, c.fc1.weight)
