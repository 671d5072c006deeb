import pytest
import torch

from invcap.baselines import (MLP, LeastSquaresModel, MLPConfig, NearestNeighbour, TwoNetworks, inn_parameter_count,
                              mlp_width_for, train_mlp)
from invcap.inn import InvertibleMLP
from invcap.methods import parameter_count


def _pair(n=200, d=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g)
    a = torch.eye(d) + 0.2 * torch.randn(d, d, generator=g)
    return z, (z @ a.T)[:, None, :] + 0.01 * torch.randn(n, 3, d, generator=g)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_mlp_width_matches_the_invertible_networks_parameter_count(layers):
    target = inn_parameter_count(384, 4)
    assert target == parameter_count(InvertibleMLP(384, 4)) == 589_824
    width = mlp_width_for(target, 384, layers)
    count = parameter_count(MLP(384, width, layers))
    assert abs(count - target) <= 2 * width + layers   # one unit of width either way
    with pytest.raises(ValueError, match="fewer"):
        mlp_width_for(10, 384, 2)


def test_least_squares_inverts_a_linear_map_both_ways():
    z, y = _pair()
    model = LeastSquaresModel.fit(z, y)
    x = model.invert(y[:, 0], samples=2)
    assert x.shape == (200, 2, 12) and torch.equal(x[:, 0], x[:, 1])
    assert float(((x[:, 0] - z) ** 2).mean()) < 1e-3
    assert float(((model.caption(z) - y.mean(1)) ** 2).mean()) < 1e-4
    with pytest.raises(ValueError, match=r"\(N, 12\)"):
        model.invert(y[:, 0, :5])


def test_nearest_neighbour_returns_training_latents_only():
    z, y = _pair()
    model = NearestNeighbour.fit(z, y)
    x = model.invert(y[:7, 1] + 1e-4, samples=1)[:, 0]
    assert torch.equal(x, z[:7])                      # the closest caption's own image
    fresh = model.invert(torch.randn(5, 12, generator=torch.Generator().manual_seed(9)))[:, 0]
    assert all(any(torch.equal(row, t) for t in z) for row in fresh)   # never anything new
    assert torch.allclose(model.caption(z[:4]), y[:4].mean(1))


def test_mlp_trains_caches_and_two_networks_have_the_interface(tmp_path, monkeypatch):
    monkeypatch.setenv("INVCAP_CACHE_DIR", str(tmp_path))
    z, y = _pair()
    config = MLPConfig(params=3000, hidden_layers=2, steps=150, batch_size=64, lr=3e-3)
    net, history = train_mlp(y, z, config)
    assert len(history["loss"]) == 150 and history["loss"][-1] < history["loss"][0]
    again, _ = train_mlp(y, z, config)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), again.parameters()))   # from the cache
    assert len(list((tmp_path / "baselines").glob("*.pt"))) == 1
    pair = TwoNetworks.train(z, y, config, MLPConfig(width=16, steps=20, contrastive_weight=0.01))
    assert pair.invert(y[:3, 0], samples=2).shape == (3, 2, 12) and pair.caption(z[:3]).shape == (3, 12)
    assert not pair.samples and pair.name
    with pytest.raises(ValueError, match="exactly one"):
        MLPConfig(params=10, width=10)
    with pytest.raises(ValueError, match="pair row by row"):
        train_mlp(y[:10], z, config, checkpoint=False)
