import dataclasses
import math

import pytest
import torch

from invcap.captioning import CaptioningConfig, train_captioning
from invcap.inn import InvertibleMLP
from invcap.linalg import principal_directions
from invcap.losses import info_nce, mmd
from invcap.methods import (FORWARD_ONLY, METHODS, Contrastive, Inverse, LatentPrior, Method, MethodLoss,
                            PaddedInverse, PriorInverse, Spread, TrainedMethod, divergence, method, method_key,
                            parameter_count, train_method)


def _toy_pair(n=256, d=16, seed=5):
    """Latents and 3 noisy 'captions' per latent from a fixed invertible linear map."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g)
    a = torch.eye(d) + 0.3 * torch.randn(d, d, generator=g)
    y = (z @ a.T)[:, None, :] + 0.05 * torch.randn(n, 3, d, generator=g)
    return z, y


def _small(spec: Method) -> Method:
    return dataclasses.replace(spec, image_rank=8) if spec.image_rank else spec  # the toy latents have 16 dims


def test_registry_validation_and_round_trip():
    assert set(FORWARD_ONLY) == {"paper", "paper+contrastive"}
    assert all(method(n).inverse_trained for n in METHODS if n not in FORWARD_ONLY)
    with pytest.raises(ValueError, match="unknown method"):
        method("nope")
    with pytest.raises(ValueError, match="latent_dims > 0"):
        Method("x", "", (PaddedInverse(),))
    with pytest.raises(ValueError, match="not Inverse"):
        Method("x", "", (Inverse(),), latent_dims=2)
    with pytest.raises(ValueError, match="once"):
        Method("x", "", (Inverse(), Inverse(0.5)))
    with pytest.raises(ValueError, match="Inverse term"):
        Method("x", "", captioning={"inverse_weight": 1.0})
    with pytest.raises(ValueError, match="do not go together"):
        Method("x", "", image_rank=4, latent_dims=2)
    with pytest.raises(ValueError, match="weight"):
        Inverse(-1.0)
    with pytest.raises(ValueError, match="temperature"):
        Contrastive(0.1, temperature=0.0)
    with pytest.raises(ValueError, match="fixes"):
        method("bidirectional+projected+contrastive+shallow").config(depth=6)
    for spec in METHODS.values():
        assert Method.from_dict(spec.as_dict()) == spec


def test_method_key_covers_method_config_and_data():
    z, y = _toy_pair(n=32)
    spec, config = method("bidirectional"), CaptioningConfig(steps=10)
    key = method_key(spec, config, z, y)
    assert key == method_key(spec, dataclasses.replace(config, device="cuda"), z, y)   # the device is no part of it
    assert key != method_key(method("paper"), config, z, y)
    assert key != method_key(spec, dataclasses.replace(config, steps=11), z, y)
    assert key != method_key(spec, config, z + 1e-6, y)
    assert key != method_key(dataclasses.replace(spec, terms=(Inverse(0.5),)), config, z, y)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_caches_and_round_trips(name, tmp_path, monkeypatch):
    monkeypatch.setenv("INVCAP_CACHE_DIR", str(tmp_path))
    z, y = _toy_pair()
    spec = _small(method(name))
    trained = train_method(spec, z, y, steps=30, depth=2, batch_size=64, device="cpu", progress=False) \
        if "depth" not in spec.captioning else train_method(spec, z, y, steps=30, batch_size=64, device="cpu",
                                                            progress=False)
    assert trained.checkpoint is not None and trained.checkpoint.is_file() and trained.checkpoint.parent.name == "methods"
    again = train_method(spec, z, y, progress=False, **{k: v for k, v in trained.config.as_dict().items()
                                                         if k not in spec.captioning})
    for p, q in zip(trained.net.parameters(), again.net.parameters()):
        assert torch.equal(p, q)  # loaded, not retrained with other numbers
    pred = trained.caption(z[:5])
    assert pred.shape == (5, 16) and bool(torch.isfinite(pred).all())
    x = trained.invert(y[:5, 0], samples=3, seed=1)
    assert x.shape == (5, 3, 16) and bool(torch.isfinite(x).all())
    if trained.samples:
        assert not torch.allclose(x[:, 0], x[:, 1]) and torch.equal(x, trained.invert(y[:5, 0], samples=3, seed=1))
    else:
        assert torch.equal(x[:, 0], x[:, 1])
    rebuilt = TrainedMethod.from_state(trained.state())
    assert torch.allclose(rebuilt.invert(y[:5, 0], samples=3, seed=1), x, atol=1e-6)
    assert torch.allclose(rebuilt.caption(z[:5]), pred, atol=1e-6)
    assert set(trained.history) >= {"loss", "mse"} and trained.name == name


def test_bidirectional_inverts_real_captions_better_than_paper():
    z, y = _toy_pair(n=512)
    errors = {}
    for name in ("paper", "bidirectional"):
        trained = train_method(name, z, y, steps=120, depth=2, batch_size=128, device="cpu", progress=False,
                               checkpoint=False)
        errors[name] = float(((trained.invert(y[:, 0])[:, 0] - z) ** 2).mean())
    assert errors["bidirectional"] < errors["paper"]


def test_latent_padding_pushes_the_latent_towards_a_standard_normal():
    z, y = _toy_pair(n=512)
    spec = Method("pad", "test", (LatentPrior(), PaddedInverse()), {"learn_diagonal": True, "log_scale_bound": 1.0},
                  latent_dims=2)
    before = train_method(spec, z, y, steps=1, depth=2, device="cpu", progress=False, checkpoint=False)
    after = train_method(spec, z, y, steps=150, depth=2, batch_size=128, device="cpu", progress=False,
                         checkpoint=False)
    prior = torch.randn(512, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert float(mmd(after.net(z)[:, 14:], prior)) < float(mmd(before.net(z)[:, 14:], prior))


def test_method_loss_sums_its_weighted_terms_and_reports_each():
    z, y = _toy_pair(n=64)
    net = InvertibleMLP(16, 2, init_std=0.1)
    spec = Method("all", "", (Spread(1e-3), LatentPrior(), PaddedInverse(), PriorInverse(0.5), Contrastive()),
                  latent_dims=2)
    loss = MethodLoss(spec)
    torch.manual_seed(0)
    value = loss(net, z[:32], y[:32, 0])
    value.backward()
    assert bool(torch.isfinite(value)) and set(loss.last) == {"Spread", "LatentPrior", "PaddedInverse",
                                                              "PriorInverse", "Contrastive"}
    assert all(p.grad is not None for p in net.parameters())
    deterministic = Method("det", "", (Spread(2e-3), Inverse(0.5), Contrastive(0.1)))
    loss = MethodLoss(deterministic)
    with torch.no_grad():
        total = float(loss(net, z[:32], y[:32, 0]))
    assert total == pytest.approx(2e-3 * loss.last["Spread"] + 0.5 * loss.last["Inverse"]
                                  + 0.1 * loss.last["Contrastive"], rel=1e-5)
    with torch.no_grad():   # the prediction handed in by train_captioning is the one used
        assert float(loss(net, z[:8], y[:8, 0], net(z[:8]))) == pytest.approx(float(loss(net, z[:8], y[:8, 0])))
    with pytest.raises(ValueError, match="image_basis"):
        MethodLoss(method("bidirectional+projected"))


def test_forward_dims_hook_ignores_the_latent_part_of_the_targets():
    g = torch.Generator().manual_seed(4)
    z, y = torch.randn(64, 6, generator=g), torch.randn(64, 2, 6, generator=g)
    other = y.clone()
    other[..., 4:] = 100.0
    config = CaptioningConfig(depth=2, steps=20, batch_size=16, device="cpu")
    a = train_captioning(z, y, config, progress=False, forward_dims=4)
    b = train_captioning(z, other, config, progress=False, forward_dims=4)
    for p, q in zip(a.net.parameters(), b.net.parameters()):
        assert torch.equal(p, q)


def test_projected_inverse_ignores_directions_outside_the_image_subspace():
    z, y = _toy_pair(n=512)
    spec = Method("proj", "", (Inverse(),), image_rank=6)
    trained = train_method(spec, z, y, steps=120, depth=2, batch_size=128, device="cpu", progress=False,
                           checkpoint=False)
    directions = trained.image_space.directions
    outside = torch.randn(10, 10, generator=torch.Generator().manual_seed(1)).double() @ directions[6:]
    assert torch.allclose(trained.caption(z[:10] + outside.float()), trained.caption(z[:10]), atol=1e-5)
    x = trained.invert(y[:20, 0])[:, 0]
    assert float(trained.image_space.rotate(x)[:, 6:].abs().max()) < 1e-4   # generated latents lie in it
    basis = directions[:6].T.float()
    loss = MethodLoss(spec, basis)
    with torch.no_grad():
        target = trained.project(trained.net.inverse(y[:8, 0]))
        assert float(loss(trained.net, target, y[:8, 0])) < 1e-10
        shifted = target + (directions[6:].T.float() @ torch.ones(10)) * 3.0
        assert float(loss(trained.net, shifted, y[:8, 0])) < 1e-10
    paper = train_method("paper", z, y, steps=120, depth=2, batch_size=128, device="cpu", progress=False,
                         checkpoint=False)
    errors = {name: float(((t.invert(y[:, 0])[:, 0] - t.project(z)) ** 2).mean())
              for name, t in (("paper", paper), ("projected", trained))}
    assert errors["projected"] < errors["paper"]
    with pytest.raises(ValueError, match="below the width"):
        train_method(Method("x", "", (Inverse(),), image_rank=16), z, y, steps=1, depth=2, device="cpu",
                     progress=False, checkpoint=False)


def test_contrastive_term_lowers_the_forward_info_nce():
    z, y = _toy_pair(n=512)
    y = y[:, :1] + 0.6 * torch.randn(512, 3, 16, generator=torch.Generator().manual_seed(2))
    scores = {}
    for terms in ((Inverse(),), (Inverse(), Contrastive(0.1))):
        trained = train_method(Method("c", "", terms, image_rank=8), z, y, steps=150, depth=2, batch_size=128,
                               device="cpu", progress=False, checkpoint=False)
        with torch.no_grad():
            scores[len(terms)] = float(info_nce(trained.caption(z), y[:, 0], 0.05))
    assert scores[2] < scores[1] - 0.05


def test_divergence_detects_a_loss_that_blows_up_and_stays_up():
    steady = [1.0 / (1 + s) for s in range(400)]
    assert not divergence({"loss": steady})["diverged"]
    spike = steady[:100] + [50.0] * 20 + steady[120:]
    assert not divergence({"loss": spike})["diverged"]                # recovered
    blown = steady[:100] + [5.0] * 300
    found = divergence({"loss": blown})
    assert found["diverged"] and found["ratio"] > 3
    assert divergence({"loss": steady[:50] + [math.nan]})["diverged"]
    assert not divergence({"loss": [1.0] * 10})["diverged"]           # too short to judge


def test_parameter_count_of_the_invertible_network():
    from invcap.baselines import inn_parameter_count

    net = InvertibleMLP(16, 3)
    assert parameter_count(net) == inn_parameter_count(16, 3) == 3 * (16 * 15 + 16)


def test_reweighted_changes_only_the_named_terms_and_the_cache_key():
    spec = method("bidirectional+projected128+contrastive+shallow")
    assert spec.image_rank == 128 and spec.reweighted(None) is spec and spec.reweighted({}) is spec
    heavy = spec.reweighted({"Inverse": 10.0})
    assert heavy.term(Inverse).weight == 10.0 and heavy.term(Contrastive) == spec.term(Contrastive)
    assert heavy.name == spec.name and spec.term(Inverse).weight == 1.0   # the registry is untouched
    z, y = torch.randn(8, 384), torch.randn(8, 2, 384)
    config = spec.config(steps=1)
    assert method_key(heavy, config, z, y) != method_key(spec, config, z, y)
    with pytest.raises(ValueError, match="no term"):
        method("paper").reweighted({"Inverse": 2.0})
