import torch

from workbench.store.masks import decode_mask, encode_mask


def test_masks_round_trip_bit_exactly_and_are_compact():
    torch.manual_seed(0)
    for shape in [(1, 1), (3, 5), (64, 48), (7, 13)]:
        mask = torch.rand(shape) > 0.5
        encoded = encode_mask(mask)
        assert torch.equal(decode_mask(encoded.data, *shape), mask)
        assert encoded.kept == int(mask.sum())
    big = torch.rand(512, 512) > 0.5
    assert len(encode_mask(big).data) <= big.numel() / 8 * 1.01  # at most about one bit per weight


def test_mask_hash_is_content_addressed():
    mask = torch.rand(8, 8) > 0.5
    assert encode_mask(mask).hash == encode_mask(mask.clone()).hash
    flipped = mask.clone()
    flipped[0, 0] = ~flipped[0, 0]
    assert encode_mask(flipped).hash != encode_mask(mask).hash
    # same bits, other shape: another mask
    assert encode_mask(mask.reshape(4, 16)).hash != encode_mask(mask).hash


def test_nm_masks_compress_below_one_bit_per_weight():
    from workbench.pruning.masks import nm_mask

    mask = nm_mask(torch.rand(256, 256), 2, 4)
    assert len(encode_mask(mask).data) < mask.numel() / 8
