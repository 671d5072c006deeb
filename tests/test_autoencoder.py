"""ConvAutoencoder: the latent size contract, training, checkpoint reuse, PSNR/SSIM vs scikit-image."""

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from invcap.autoencoder import (AutoencoderConfig, ConvAutoencoder, evaluate_reconstruction,
                                load_or_train_autoencoder, psnr, ssim, train_autoencoder)


@pytest.mark.parametrize("size", [16, 32, 64])
def test_flattened_latent_has_exactly_latent_dim(size):
    model = ConvAutoencoder(384, size)
    x = torch.rand(2, 3, size, size)
    z = model.encode(x)
    assert z.shape == (2, 384) and model.latent_shape[0] * model.latent_shape[1] * model.latent_shape[2] == 384
    out = model.decode(z)
    assert out.shape == x.shape and float(out.detach().min()) >= 0 and float(out.detach().max()) <= 1


def test_default_latent_is_an_8x8_grid_of_384_numbers():
    model = AutoencoderConfig().model()
    assert model.latent_shape == (6, 8, 8) and model.latent_dim == 384   # the sentence embedding's size
    assert ConvAutoencoder(384, 64).latent_shape == (6, 8, 8)  # Flickr30k at 64 px: one more stage


def test_mismatch_is_an_error_naming_both_numbers():
    with pytest.raises(ValueError, match=r"16 x 8 x 8 = 1024 != latent_dim 384"):
        ConvAutoencoder(384, 32, latent_channels=16)
    with pytest.raises(ValueError, match=r"latent_dim=100.*multiple of 16"):
        ConvAutoencoder(100, 32, downsamples=3)
    with pytest.raises(ValueError, match="not divisible"):
        ConvAutoencoder(384, 36, downsamples=3)


def test_bad_inputs_are_clear():
    model = ConvAutoencoder(384, 32)
    with pytest.raises(ValueError, match=r"images must be \(N, 3, 32, 32\)"):
        model.encode(torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"latents must be \(N, 384\)"):
        model.decode(torch.rand(2, 100))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        train_autoencoder(torch.rand(4, 3, 16, 16) * 2, config=AutoencoderConfig(image_size=16, epochs=1))


def _blobs(n, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    centre = torch.rand(n, 2, 1, 1, generator=g) * size
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    blob = torch.exp(-((yy - centre[:, 0]) ** 2 + (xx - centre[:, 1]) ** 2) / 8.0)
    colour = torch.rand(n, 3, 1, 1, generator=g)
    return (blob[:, None] * colour).clamp(0, 1)


TINY = AutoencoderConfig(image_size=16, widths=(8, 16), epochs=10, batch_size=16, lr=3e-3)


def test_training_lowers_the_error_and_is_deterministic():
    train, val = _blobs(96), _blobs(32, seed=1)
    untrained = evaluate_reconstruction(TINY.model(), val)["mse"]
    model, info = train_autoencoder(train, val, TINY, device="cpu", progress=False)
    again, _ = train_autoencoder(train, val, TINY, device="cpu", progress=False)
    assert info["history"]["val_mse"][-1] < 0.5 * untrained
    assert len(info["history"]["train_mse"]) == 10
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k
    assert not any(p.requires_grad for p in model.parameters())  # frozen


@pytest.mark.parametrize("n_images", [64, 192, 640])  # 1, 3 and 10 steps
def test_short_runs_train(n_images):
    images = torch.rand(n_images, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    config = AutoencoderConfig(image_size=16, latent_dim=48, widths=(4, 8), epochs=1, batch_size=64)
    _, info = train_autoencoder(images, None, config, device="cpu", progress=False)
    assert len(info["history"]["train_mse"]) == 1 and info["history"]["train_mse"][0] > 0


def test_checkpoint_is_reused_and_keyed_by_config(tmp_path, monkeypatch):
    monkeypatch.setenv("INVCAP_CACHE_DIR", str(tmp_path))
    train = _blobs(48)
    first, info = load_or_train_autoencoder(train, None, TINY, data_key="blobs", device="cpu", progress=False)
    assert not info["reused"]
    state = torch.load(info["checkpoint"], weights_only=True)  # a plain state dict
    assert set(state) == set(first.state_dict())
    second, info2 = load_or_train_autoencoder(train, None, TINY, data_key="blobs", device="cpu", progress=False)
    assert info2["reused"] and info2["checkpoint"] == info["checkpoint"]
    assert info2["history"] == info["history"]
    x = _blobs(4, seed=3)
    torch.testing.assert_close(second(x), first(x), atol=0, rtol=0)
    other = AutoencoderConfig(**{**TINY.__dict__, "epochs": 2})
    _, info3 = load_or_train_autoencoder(train, None, other, data_key="blobs", device="cpu", progress=False)
    assert not info3["reused"] and info3["checkpoint"] != info["checkpoint"]
    _, info4 = load_or_train_autoencoder(train, None, TINY, data_key="other data", device="cpu", progress=False)
    assert not info4["reused"]


def test_psnr_and_ssim_match_scikit_image():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((3, 3, 32, 32))).float()
    y = (x + 0.1 * torch.from_numpy(rng.standard_normal((3, 3, 32, 32))).float()).clamp(0, 1)
    ours_p, ours_s = psnr(y, x), ssim(y, x)
    for i in range(3):
        a, b = x[i].numpy().astype(np.float64), y[i].numpy().astype(np.float64)
        assert float(ours_p[i]) == pytest.approx(peak_signal_noise_ratio(a, b, data_range=1.0), abs=1e-4)
        ref = structural_similarity(a, b, data_range=1.0, channel_axis=0, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
        assert float(ours_s[i]) == pytest.approx(ref, abs=1e-5)
    assert float(ssim(x, x).min()) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        psnr(x, x[:, :2])
