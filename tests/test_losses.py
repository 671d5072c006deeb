import itertools
import math

import pytest
import torch

from invcap.inn import InvertibleMLP
from invcap.losses import info_nce, mmd, projected_mse, singular_value_spread


def _mmd_reference(x, y, scales):
    """Direct float64 double loops over the unbiased estimator's three sums."""
    x, y = x.double(), y.double()
    dim = x.shape[1]

    def k(a, b):
        d2 = float(((a - b) ** 2).sum())
        return sum(s * dim / (s * dim + d2) for s in scales)

    n, m = len(x), len(y)
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(n) for j in range(m)) / (n * m)
    return xx + yy - 2 * xy


def test_mmd_matches_direct_float64_computation_and_separates_distributions():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(9, 3, generator=g, dtype=torch.float64), 1.5 + torch.randn(7, 3, generator=g, dtype=torch.float64)
    scales = (0.1, 1.0, 3.0)
    assert float(mmd(x, y, scales)) == pytest.approx(_mmd_reference(x, y, scales), rel=1e-10)
    assert float(mmd(x.float(), y.float(), scales)) == pytest.approx(_mmd_reference(x, y, scales), rel=1e-4, abs=1e-6)
    a, b = torch.randn(300, 8, generator=g), torch.randn(300, 8, generator=g)
    same, shifted = float(mmd(a, b)), float(mmd(a + 1.0, b))
    assert abs(same) < 0.01 and shifted > 10 * abs(same)
    moved = (a + 1.0).requires_grad_(True)
    mmd(moved, b).backward()
    assert float(moved.grad.sum()) > 0   # moving back towards N(0, I) lowers it
    with pytest.raises(ValueError, match="samples"):
        mmd(torch.zeros(1, 2), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="must be"):
        mmd(torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="scales"):
        mmd(torch.zeros(4, 2), torch.zeros(4, 2), scales=(0.0,))


def test_singular_value_spread_matches_svd_and_lu_determinant():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(6, 6, generator=g, dtype=torch.float64)
    s2 = torch.linalg.svdvals(w) ** 2
    assert float(singular_value_spread(w)) == pytest.approx(float(torch.log(s2.mean()) - torch.log(s2).mean()), rel=1e-10)
    q, _ = torch.linalg.qr(w)
    assert float(singular_value_spread(3.0 * q)) == pytest.approx(0.0, abs=1e-12)
    net = InvertibleMLP(6, 2, diagonal=torch.tensor([1.0, -2.0, 0.5, 1.5, 1.0, 3.0]), init_std=0.5).double()
    layer = net.linears[0].requires_grad_(False)
    s2 = torch.linalg.svdvals(layer.weight.detach()) ** 2
    assert float(singular_value_spread(layer.weight, layer.log_abs_det())) == pytest.approx(
        float(torch.log(s2.mean()) - torch.log(s2).mean()), rel=1e-9)
    with pytest.raises(ValueError, match="square"):
        singular_value_spread(torch.zeros(2, 3))


def _info_nce_reference(p, t, temperature):
    p, t = p.double(), t.double()
    total = 0.0
    for i in range(len(p)):
        logits = [float(p[i] @ t[j] / (p[i].norm() * t[j].norm())) / temperature for j in range(len(t))]
        top = max(logits)
        total += top + math.log(sum(math.exp(v - top) for v in logits)) - logits[i]
    return total / len(p)


def test_info_nce_matches_direct_float64_computation_and_validates():
    g = torch.Generator().manual_seed(3)
    p, t = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(7, 5, generator=g, dtype=torch.float64)
    for temperature in (0.05, 1.0):
        assert float(info_nce(p, t, temperature)) == pytest.approx(_info_nce_reference(p, t, temperature), rel=1e-10)
    assert float(info_nce(p, torch.ones(7, 5, dtype=torch.float64), 0.05)) == pytest.approx(math.log(7.0), rel=1e-12)
    assert float(info_nce(t, t, 0.01)) < 1e-3
    with pytest.raises(ValueError, match="must both be"):
        info_nce(p, t[:, :4], 0.1)
    with pytest.raises(ValueError, match="at least 2"):
        info_nce(p[:1], t[:1], 0.1)
    with pytest.raises(ValueError, match="temperature"):
        info_nce(p, t, 0.0)


def test_projected_mse_measures_only_inside_the_subspace():
    g = torch.Generator().manual_seed(4)
    error = torch.randn(10, 6, generator=g, dtype=torch.float64)
    assert float(projected_mse(error)) == pytest.approx(float((error ** 2).mean()), rel=1e-12)
    basis, _ = torch.linalg.qr(torch.randn(6, 2, generator=g, dtype=torch.float64))
    inside = error @ basis @ basis.T
    assert float(projected_mse(error, basis)) == pytest.approx(float((inside ** 2).sum(1).mean() / 6), rel=1e-12)
    assert float(projected_mse(error - inside, basis)) == pytest.approx(0.0, abs=1e-12)
    full, _ = torch.linalg.qr(torch.randn(6, 6, generator=g, dtype=torch.float64))
    assert float(projected_mse(error, full)) == pytest.approx(float((error ** 2).mean()), rel=1e-10)
    with pytest.raises(ValueError, match="basis"):
        projected_mse(error, basis[:4])
