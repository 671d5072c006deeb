"""Bounded memory at Flickr30k scale without changing a number: every blocked computation gives
exactly (bit for bit) what the one-shot computation it replaces gave."""

import pytest
import torch

from invcap.autoencoder import psnr, ssim
from invcap.baselines import NearestNeighbour
from invcap.captioning import caption_targets
from invcap.linalg import cosine_similarity_matrix, most_similar


def _images(n, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    return x, (x + 0.1 * torch.randn(n, 3, size, size, generator=g)).clamp(0, 1)


@pytest.mark.parametrize("block", [1, 7, 64])
def test_pixel_metrics_in_blocks_equal_the_one_shot_values(block):
    x, y = _images(37)
    assert torch.equal(ssim(x, y, block=block), ssim(x, y, block=len(x)))
    assert torch.equal(psnr(x, y, block=block), psnr(x, y, block=len(x)))


def test_pixel_metrics_in_blocks_at_64_px():
    x, y = _images(300, size=64)
    assert torch.equal(ssim(x, y), ssim(x, y, block=len(x)))   # default block 256: two blocks
    assert torch.equal(psnr(x, y), psnr(x, y, block=len(x)))
    with pytest.raises(ValueError, match="block"):
        ssim(x, y, block=0)


@pytest.mark.parametrize("cells", [1, 5000, 10**9])
def test_most_similar_in_blocks_equals_the_argmax_of_the_full_matrix(cells):
    g = torch.Generator().manual_seed(1)
    queries, keys = torch.randn(257, 384, generator=g), torch.randn(3001, 384, generator=g)
    keys[10] = keys[2000]          # a tie: the first index wins, as argmax
    queries[0] = keys[2000]
    full = cosine_similarity_matrix(queries, keys).argmax(dim=1)
    assert torch.equal(most_similar(queries, keys, cells=cells), full)
    assert int(most_similar(queries, keys, cells=cells)[0]) == 10


def test_most_similar_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same d"):
        most_similar(torch.zeros(3, 4), torch.zeros(5, 6))
    with pytest.raises(ValueError, match="at least one key"):
        most_similar(torch.zeros(3, 4), torch.zeros(0, 4))
    assert most_similar(torch.zeros(0, 4), torch.ones(5, 4)).shape == (0,)


def test_nearest_neighbour_equals_its_one_shot_definition():
    g = torch.Generator().manual_seed(2)
    latents, captions = torch.randn(400, 32, generator=g), torch.randn(400, 5, 32, generator=g)
    model = NearestNeighbour.fit(latents, captions)
    queries, images = torch.randn(90, 32, generator=g), torch.randn(70, 32, generator=g)
    bank = captions.reshape(2000, 32)
    expected = latents[cosine_similarity_matrix(queries, bank).argmax(dim=1) // 5]
    assert torch.equal(model.invert(queries, samples=2), expected[:, None].expand(90, 2, 32))
    centre = latents.mean(dim=0)
    nearest = cosine_similarity_matrix(images - centre, latents - centre).argmax(dim=1)
    assert torch.equal(model.caption(images), caption_targets(captions)[nearest])
