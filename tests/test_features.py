"""load_features: shapes, agreement with the frozen models, caching."""

import pytest
import torch

from invcap import features as Fe
from invcap.data import embedded as E

TINY_AE = {"widths": (4, 8), "epochs": 1, "batch_size": 32}


@pytest.fixture()
def tiny_embedded(tmp_path, monkeypatch):
    monkeypatch.setenv("INVCAP_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(E, "SPLIT_SIZES", {"train": 24, "val": 6, "test": 6, "compositional_val": 8,
                                           "compositional_test": 8})
    return tmp_path


def test_features_agree_with_the_frozen_models_and_are_cached(tiny_embedded, monkeypatch):
    feats = Fe.load_features("test", image_size=16, device="cpu", progress=False, **TINY_AE)
    assert len(feats) == 6 and feats.latents.shape == (6, 384)
    assert feats.caption_embeddings.shape == (6, 5, 384) and feats.images.shape == (6, 3, 16, 16)
    assert len(feats.attributes) == 6 and all(len(c) == 5 for c in feats.captions)
    assert len(feats.mentions) == 6 and all(len(m) == 5 and set(m[0]) <= set(E.ATTRIBUTES) for m in feats.mentions)
    torch.testing.assert_close(feats.latents, feats.autoencoder.encode(feats.images), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(feats.caption_embeddings[2, 3], feats.encoder.encode([feats.captions[2][3]])[0])
    assert (tiny_embedded / "autoencoder").is_dir() and (tiny_embedded / "features").is_dir()

    # a rerun trains nothing and encodes nothing
    def boom(*args, **kwargs):
        raise AssertionError("recomputed")

    monkeypatch.setattr(Fe, "_encode_images", boom)
    monkeypatch.setattr(type(feats.encoder), "_encode_uncached", boom)
    monkeypatch.setattr("invcap.autoencoder.train_autoencoder", boom)
    again = Fe.load_features("test", image_size=16, device="cpu", progress=False, **TINY_AE)
    torch.testing.assert_close(again.latents, feats.latents, atol=0, rtol=0)
    torch.testing.assert_close(again.caption_embeddings, feats.caption_embeddings, atol=0, rtol=0)
    assert again.info["autoencoder_key"] == feats.info["autoencoder_key"]
    comp = None
    with pytest.raises(AssertionError, match="recomputed"):  # a new split does need encoding
        comp = Fe.load_features("compositional_val", image_size=16, device="cpu", progress=False, **TINY_AE)
    assert comp is None


def test_bad_dataset_arguments():
    with pytest.raises(ValueError, match="dataset must be one of"):
        Fe.get_dataset("train", dataset="coco")
    with pytest.raises(ValueError, match="needs root="):
        Fe.load_features("train", dataset="flickr30k")
