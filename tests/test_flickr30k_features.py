"""Flickr30k at full size needs bounded memory: images decoded once into a uint8 cache, a float view
that converts per batch, uint8 training for the autoencoder, captions encoded in chunks."""

import pytest
import torch

from invcap import features as Fe
from invcap.autoencoder import AutoencoderConfig, train_autoencoder
from invcap.data import rehearsal as R
from invcap.data.images import UInt8Images


@pytest.fixture()
def rehearsal(tmp_path, monkeypatch):
    monkeypatch.setenv("INVCAP_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "f30k"
    R.make_rehearsal(out, R.RehearsalConfig(images=24, seed=5), workers=1, progress=False)
    return out


def test_images_are_decoded_once_into_a_uint8_cache(rehearsal, monkeypatch):
    with pytest.warns(UserWarning):
        data = Fe.get_dataset("train", "flickr30k", rehearsal, image_size=16)
    key = Fe.data_key("flickr30k", rehearsal, 16)
    view = Fe.get_images(data, key, progress=False)
    assert isinstance(view, UInt8Images) and view.pixels.dtype == torch.uint8 and view.shape == (len(data), 3, 16, 16)
    assert 0.0 <= float(view[0].min()) and float(view[0:3].max()) <= 1.0 and view[0:3].dtype == torch.float32
    monkeypatch.setattr(type(data), "decode", lambda *a, **k: pytest.fail("decoded twice"))
    again = Fe.get_images(data, key, progress=False)
    assert torch.equal(again.pixels, view.pixels)


def test_autoencoder_trains_on_uint8_exactly_as_on_floats():
    pixels = torch.randint(0, 256, (12, 3, 16, 16), dtype=torch.uint8)
    config = AutoencoderConfig(latent_dim=8, image_size=16, widths=(4, 8), epochs=2, batch_size=4)
    a, info_a = train_autoencoder(pixels.float() / 255, pixels[:4].float() / 255, config, "cpu", progress=False)
    b, info_b = train_autoencoder(pixels, UInt8Images(pixels[:4]), config, "cpu", progress=False)
    assert info_a["history"]["train_mse"] == pytest.approx(info_b["history"]["train_mse"], rel=1e-6)
    assert info_a["history"]["val_mse"] == pytest.approx(info_b["history"]["val_mse"], rel=1e-6)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, msg=name)


class _CountingEncoder:
    dim = 3

    def __init__(self):
        self.calls = []

    def encode(self, texts, progress=True):
        self.calls.append(len(texts))
        return torch.tensor([[len(t), t.count("a"), 1.0] for t in texts])


def test_captions_are_encoded_in_chunks(capsys, monkeypatch):
    monkeypatch.setenv("INVCAP_PROGRESS", "final")
    encoder = _CountingEncoder()
    texts = [f"caption {'a' * (i % 4)} {i}" for i in range(10)]
    out = Fe.encode_captions(encoder, texts, chunk=4)
    assert encoder.calls == [4, 4, 2]
    torch.testing.assert_close(out, _CountingEncoder().encode(texts))
    assert "encoding captions: 10/10" in capsys.readouterr().err
