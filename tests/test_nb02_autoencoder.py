"""Notebook 02's study: the caption-embedding analyses against brute-force references."""

import itertools

import pytest
import torch

from invcap.data import embedded as E
from invcap.studies import nb02_autoencoder as study


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
    out = study.similarity_by_attribute_distance(emb, attributes)
    ref, counts = _reference_groups(emb, attributes)
    for group, value in ref.items():
        name = group if not group.isdigit() else f"{group} attribute{'s' if group != '1' else ''} differ"
        assert out["mean_cosine"][name] == pytest.approx(value, abs=1e-9)
        assert out["pairs"][name] == counts[group]


def test_caption_retrieval_accuracy():
    # two tight clusters per image: every nearest neighbour is a caption of the same image
    centres = torch.eye(4, 16) * 10
    emb = centres[:, None, :] + 0.01 * torch.randn(4, 5, 16, generator=torch.Generator().manual_seed(1))
    assert study.caption_retrieval_accuracy(emb) == 1.0
    # images 0 and 1 share a label and identical captions -> by label still perfect
    emb[1] = emb[0]
    assert study.caption_retrieval_accuracy(emb, labels=["a", "a", "b", "c"]) == 1.0
    # random directions in high dimension: nearly never the same image
    rand = torch.randn(50, 2, 512, generator=torch.Generator().manual_seed(2))
    assert study.caption_retrieval_accuracy(rand) < 0.2


def test_ridge_probe_matches_numpy_least_squares_and_reads_a_linear_label():
    import numpy as np

    g = torch.Generator().manual_seed(3)
    x = torch.randn(200, 5, generator=g)
    labels = ["a" if v > 0 else "b" for v in (x[:, 0] - 0.5 * x[:, 2]).tolist()]
    test = torch.randn(100, 5, generator=g)
    test_labels = ["a" if v > 0 else "b" for v in (test[:, 0] - 0.5 * test[:, 2]).tolist()]
    assert study.ridge_probe(x, labels, test, test_labels) > 0.9
    # same predictions as an explicit numpy solve of the ridge normal equations
    X = np.hstack([x.numpy().astype(np.float64), np.ones((200, 1))])
    Y = np.stack([[l == "a", l == "b"] for l in labels]).astype(np.float64)
    P = np.eye(6) * 1e-2
    P[-1, -1] = 0
    W = np.linalg.solve(X.T @ X + P, X.T @ Y)
    T = np.hstack([test.numpy().astype(np.float64), np.ones((100, 1))])
    ref = np.mean([["a", "b"][i] == l for i, l in zip((T @ W).argmax(1), test_labels)])
    assert study.ridge_probe(x, labels, test, test_labels) == pytest.approx(ref)
    # labels unrelated to the features: chance level
    noise = ["a" if v else "b" for v in (torch.rand(100, generator=g) > 0.5).tolist()]
    assert study.ridge_probe(x, labels, test, noise) < 0.7


def test_duplicate_caption_share():
    assert study.duplicate_caption_share([["x", "y"], ["x", "z"], ["w", "v"]]) == pytest.approx(2 / 6)
