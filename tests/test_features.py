"""load_features: shapes, agreement with the frozen models, caching; the similarity analyses."""

import itertools

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


def _reference_groups(emb, attributes):
    """Brute force over caption pairs."""
    n, k, _ = emb.shape
    flat = torch.nn.functional.normalize(emb.reshape(n * k, -1).double(), dim=1)
    sums, counts = {}, {}
    for a, b in itertools.permutations(range(n * k), 2):
        ia, ib = a // k, b // k
        d = sum(attributes[ia][key] != attributes[ib][key] for key in attributes[ia])
        group = "same image" if ia == ib else ("same attributes, other image" if d == 0 else f"{d}")
        sums[group] = sums.get(group, 0.0) + float(flat[a] @ flat[b])
        counts[group] = counts.get(group, 0) + 1
    return {g: sums[g] / counts[g] for g in sums}, counts


def test_similarity_by_attribute_distance_matches_brute_force():
    g = torch.Generator().manual_seed(0)
    combos = E.all_combinations()
    attributes = [combos[i] for i in [0, 0, 1, 5, 60, 190]]
    emb = torch.randn(6, 3, 8, generator=g)
    out = Fe.similarity_by_attribute_distance(emb, attributes)
    ref, counts = _reference_groups(emb, attributes)
    for group, value in ref.items():
        name = group if not group.isdigit() else f"{group} attribute{'s' if group != '1' else ''} differ"
        assert out["mean_cosine"][name] == pytest.approx(value, abs=1e-9)
        assert out["pairs"][name] == counts[group]


def test_caption_retrieval_accuracy():
    # two tight clusters per image: every nearest neighbour is a caption of the same image
    centres = torch.eye(4, 16) * 10
    emb = centres[:, None, :] + 0.01 * torch.randn(4, 5, 16, generator=torch.Generator().manual_seed(1))
    assert Fe.caption_retrieval_accuracy(emb) == 1.0
    # images 0 and 1 share a label and identical captions -> by label still perfect
    emb[1] = emb[0]
    assert Fe.caption_retrieval_accuracy(emb, labels=["a", "a", "b", "c"]) == 1.0
    # random directions in high dimension: nearly never the same image
    rand = torch.randn(50, 2, 512, generator=torch.Generator().manual_seed(2))
    assert Fe.caption_retrieval_accuracy(rand) < 0.2


def test_ridge_probe_matches_numpy_least_squares_and_reads_a_linear_label():
    import numpy as np

    g = torch.Generator().manual_seed(3)
    x = torch.randn(200, 5, generator=g)
    labels = ["a" if v > 0 else "b" for v in (x[:, 0] - 0.5 * x[:, 2]).tolist()]
    test = torch.randn(100, 5, generator=g)
    test_labels = ["a" if v > 0 else "b" for v in (test[:, 0] - 0.5 * test[:, 2]).tolist()]
    assert Fe.ridge_probe(x, labels, test, test_labels) > 0.9
    # same predictions as an explicit numpy solve of the ridge normal equations
    X = np.hstack([x.numpy().astype(np.float64), np.ones((200, 1))])
    Y = np.stack([[l == "a", l == "b"] for l in labels]).astype(np.float64)
    P = np.eye(6) * 1e-2
    P[-1, -1] = 0
    W = np.linalg.solve(X.T @ X + P, X.T @ Y)
    T = np.hstack([test.numpy().astype(np.float64), np.ones((100, 1))])
    ref = np.mean([["a", "b"][i] == l for i, l in zip((T @ W).argmax(1), test_labels)])
    assert Fe.ridge_probe(x, labels, test, test_labels) == pytest.approx(ref)
    # labels unrelated to the features: chance level
    noise = ["a" if v else "b" for v in (torch.rand(100, generator=g) > 0.5).tolist()]
    assert Fe.ridge_probe(x, labels, test, noise) < 0.7


def test_duplicate_caption_share():
    assert Fe.duplicate_caption_share([["x", "y"], ["x", "z"], ["w", "v"]]) == pytest.approx(2 / 6)
