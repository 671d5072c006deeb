"""invcap.linalg and invcap.optim: the one PCA, cosine matrix, label lookup and cosine schedule."""

import math

import numpy as np
import pytest
import torch

from invcap import linalg, optim


def test_cosine_similarity_matrix_matches_a_loop():
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(5, 7, generator=gen), torch.randn(4, 7, generator=gen)
    out = linalg.cosine_similarity_matrix(q, k)
    assert out.dtype == torch.float64 and out.shape == (5, 4)
    ref = [[float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0)) for b in k] for a in q]
    np.testing.assert_allclose(out.numpy(), np.array(ref), atol=1e-12)
    torch.testing.assert_close(linalg.cosine_similarity_matrix(q), linalg.cosine_similarity_matrix(q, q))
    with pytest.raises(ValueError, match="same d"):
        linalg.cosine_similarity_matrix(q, torch.randn(3, 6))


def test_principal_directions_match_an_svd_reference():
    gen = torch.Generator().manual_seed(1)
    points = torch.randn(300, 6, generator=gen, dtype=torch.float64) * torch.tensor([5, 3, 2, 1, 0.5, 0.1],
                                                                                     dtype=torch.float64)
    points = points @ torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))[0] + 2.0
    pca = linalg.principal_directions(points)
    centred = points - points.mean(0)
    _, sv, vh = torch.linalg.svd(centred, full_matrices=False)
    torch.testing.assert_close(pca.std, sv / math.sqrt(299))
    # same directions up to sign, and the sign rule: largest-magnitude entry positive
    torch.testing.assert_close(pca.directions.abs(), vh.abs(), atol=1e-9, rtol=0)
    assert bool((pca.directions.gather(1, pca.directions.abs().argmax(1, keepdim=True)) > 0).all())
    torch.testing.assert_close(pca.directions @ pca.directions.T, torch.eye(6, dtype=torch.float64))
    torch.testing.assert_close(pca.rotate(points).std(0), pca.std)
    # (N, k, d) clouds are flattened; the chunked covariance equals the one-matmul one
    torch.testing.assert_close(linalg.principal_directions(points.view(100, 3, 6)).std, pca.std)


def test_principal_directions_chunked_covariance(monkeypatch):
    points = torch.randn(50, 4, generator=torch.Generator().manual_seed(2))
    whole = linalg.principal_directions(points)
    monkeypatch.setattr(linalg, "_PCA_CHUNK", 7)
    torch.testing.assert_close(linalg.principal_directions(points).std, whole.std)
    with pytest.raises(ValueError, match="at least 2"):
        linalg.principal_directions(points[:1])


def test_label_codes():
    codes, table = linalg.label_codes(["b", "a", "b", ("x", 1)])
    assert codes.tolist() == [0, 1, 0, 2] and table == {"b": 0, "a": 1, ("x", 1): 2}


def test_cosine_factor_and_schedule():
    assert optim.cosine_factor(0, 10) == 1.0 and optim.cosine_factor(10, 10) == pytest.approx(0.0, abs=1e-15)
    assert optim.cosine_factor(5, 10) == pytest.approx(0.5)
    assert optim.cosine_factor(10, 10, final=0.1) == pytest.approx(0.1)
    # bit-identical to the formula the captioning loop and the judge used before
    for step in range(0, 101, 7):
        assert optim.cosine_factor(step, 100) == 0.5 * (1.0 + math.cos(math.pi * step / 100))
    weight = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([weight], lr=2.0)
    sched = optim.cosine_schedule(opt, 4)
    seen = []
    for _ in range(4):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen == pytest.approx([2.0 * optim.cosine_factor(s, 4) for s in range(4)])
    with pytest.raises(ValueError, match="steps"):
        optim.cosine_factor(0, 0)
