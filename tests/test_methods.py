import dataclasses
import itertools
import math

import pytest
import torch

from invcap.captioning import CaptioningConfig, train_captioning
from invcap.inn import InvertibleMLP
from invcap.methods import (METHODS, BEST_METHOD, CaptionSpace, Method, MethodLoss, TrainedMethod, info_nce, method,
                            mmd_inverse_multiquadric, singular_value_spread, train_method)


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


def test_mmd_matches_direct_float64_computation():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(9, 3, generator=g, dtype=torch.float64), 1.5 + torch.randn(7, 3, generator=g, dtype=torch.float64)
    scales = (0.1, 1.0, 3.0)
    assert float(mmd_inverse_multiquadric(x, y, scales)) == pytest.approx(_mmd_reference(x, y, scales), rel=1e-10)
    # float32 follows within float32 rounding
    assert float(mmd_inverse_multiquadric(x.float(), y.float(), scales)) == pytest.approx(
        _mmd_reference(x, y, scales), rel=1e-4, abs=1e-6)


def test_mmd_separates_distributions_and_has_gradients():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(400, 8, generator=g), torch.randn(400, 8, generator=g)
    same = float(mmd_inverse_multiquadric(a, b))
    shifted = float(mmd_inverse_multiquadric(a + 1.0, b))
    scaled = float(mmd_inverse_multiquadric(3.0 * a, b))
    assert abs(same) < 0.01 and shifted > 10 * abs(same) and scaled > 10 * abs(same)
    x = (a + 1.0).requires_grad_(True)
    mmd_inverse_multiquadric(x, b).backward()
    # moving the shifted samples back towards N(0, I) lowers the MMD: the gradient points along +shift
    assert float(x.grad.sum()) > 0


def test_mmd_rejects_bad_input():
    with pytest.raises(ValueError, match="samples"):
        mmd_inverse_multiquadric(torch.zeros(1, 2), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="must be"):
        mmd_inverse_multiquadric(torch.zeros(4, 2), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="scales"):
        mmd_inverse_multiquadric(torch.zeros(4, 2), torch.zeros(4, 2), scales=(0.0,))


def test_singular_value_spread_matches_svd_and_lu_determinant():
    g = torch.Generator().manual_seed(2)
    w = torch.randn(6, 6, generator=g, dtype=torch.float64)
    s2 = torch.linalg.svdvals(w) ** 2
    reference = float(torch.log(s2.mean()) - torch.log(s2).mean())
    assert float(singular_value_spread(w)) == pytest.approx(reference, rel=1e-10)
    q, _ = torch.linalg.qr(w)
    assert float(singular_value_spread(3.0 * q)) == pytest.approx(0.0, abs=1e-12)
    # an LU layer's log|det W| = sum log|k_i| gives the same value
    net = InvertibleMLP(6, 2, diagonal=torch.tensor([1.0, -2.0, 0.5, 1.5, 1.0, 3.0]), init_std=0.5).double()
    layer = net.linears[0].requires_grad_(False)
    s2 = torch.linalg.svdvals(layer.weight.detach()) ** 2
    assert float(singular_value_spread(layer.weight, layer.log_abs_det())) == pytest.approx(
        float(torch.log(s2.mean()) - torch.log(s2).mean()), rel=1e-9)
    with pytest.raises(ValueError, match="square"):
        singular_value_spread(torch.zeros(2, 3))


def test_caption_space_is_an_orthonormal_rotation_by_variance():
    g = torch.Generator().manual_seed(3)
    y = torch.randn(200, 3, 5, generator=g) * torch.tensor([3.0, 0.1, 1.0, 0.5, 2.0])
    space = CaptionSpace.fit(y)
    assert torch.allclose(space.basis.T @ space.basis, torch.eye(5), atol=1e-5)
    assert bool((space.variance[:-1] >= space.variance[1:]).all())
    flat = y[:, 0]
    assert torch.allclose(space.unrotate(space.rotate(flat)), flat, atol=1e-5)
    # the variance of the mean-caption targets along each direction is what was recorded
    coords = space.rotate(y.mean(dim=1))
    assert torch.allclose(coords.var(dim=0), space.variance, rtol=1e-3, atol=1e-6)


def test_registry_and_method_validation():
    assert {"paper", "bidirectional", BEST_METHOD} <= set(METHODS)
    assert method("paper").config().inverse_weight == 0 and method("bidirectional").config().inverse_weight > 0
    with pytest.raises(ValueError, match="unknown method"):
        method("nope")
    with pytest.raises(ValueError, match="padded_inverse_weight"):
        Method("x", "", {"inverse_weight": 1.0}, latent_dims=2)
    with pytest.raises(ValueError, match="latent_dims"):
        Method("x", "", mmd_weight=1.0)


def test_forward_dims_hook_ignores_the_latent_part_of_the_targets():
    g = torch.Generator().manual_seed(4)
    z, y = torch.randn(64, 6, generator=g), torch.randn(64, 2, 6, generator=g)
    other = y.clone()
    other[..., 4:] = 100.0  # only the tail differs
    config = CaptioningConfig(depth=2, steps=20, batch_size=16, device="cpu")
    a = train_captioning(z, y, config, progress=False, forward_dims=4)
    b = train_captioning(z, other, config, progress=False, forward_dims=4)
    for p, q in zip(a.net.parameters(), b.net.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(ValueError, match="forward_dims"):
        train_captioning(z, y, config, progress=False, forward_dims=7)


def _toy_pair(n=256, d=16, seed=5):
    """Latents and 3 noisy 'captions' per latent from a fixed invertible linear map."""
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=g)
    a = torch.eye(d) + 0.3 * torch.randn(d, d, generator=g)
    y = (z @ a.T)[:, None, :] + 0.05 * torch.randn(n, 3, d, generator=g)
    return z, y


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_trains_caches_and_round_trips(name, tmp_path, monkeypatch):
    monkeypatch.setenv("INVCAP_CACHE_DIR", str(tmp_path))
    z, y = _toy_pair()
    spec = method(name)
    if spec.image_rank:
        spec = dataclasses.replace(spec, image_rank=8)  # the toy latents have 16 dimensions
    trained = train_method(spec, z, y, steps=30, depth=2, batch_size=64, device="cpu", progress=False)
    assert trained.checkpoint is not None and trained.checkpoint.is_file()
    assert trained.checkpoint.parent == tmp_path / "methods"
    again = train_method(spec, z, y, steps=30, depth=2, batch_size=64, device="cpu", progress=False)
    for p, q in zip(trained.net.parameters(), again.net.parameters()):
        assert torch.equal(p, q)  # loaded, not retrained with other numbers
    pred = trained.caption(z[:5])
    assert pred.shape == (5, 16) and bool(torch.isfinite(pred).all())
    x = trained.invert(y[:5, 0], samples=3, seed=1)
    assert x.shape == (5, 3, 16) and bool(torch.isfinite(x).all())
    if trained.method.samples:
        assert not torch.allclose(x[:, 0], x[:, 1])
        assert torch.equal(x, trained.invert(y[:5, 0], samples=3, seed=1))  # seeded
    else:
        assert torch.equal(x[:, 0], x[:, 1])
    rebuilt = TrainedMethod.from_state(trained.state())
    assert torch.allclose(rebuilt.invert(y[:5, 0], samples=3, seed=1), x, atol=1e-6)
    assert torch.allclose(rebuilt.caption(z[:5]), pred, atol=1e-6)


def test_bidirectional_inverts_real_captions_better_than_paper(tmp_path, monkeypatch):
    monkeypatch.setenv("INVCAP_CACHE_DIR", str(tmp_path))
    z, y = _toy_pair(n=512)
    errors = {}
    for name in ("paper", "bidirectional"):
        trained = train_method(name, z, y, steps=120, depth=2, batch_size=128, device="cpu", progress=False,
                               checkpoint=False)
        errors[name] = float(((trained.invert(y[:, 0])[:, 0] - z) ** 2).mean())
    assert errors["bidirectional"] < errors["paper"]


def test_latent_padding_pushes_the_latent_towards_a_standard_normal(tmp_path, monkeypatch):
    monkeypatch.setenv("INVCAP_CACHE_DIR", str(tmp_path))
    z, y = _toy_pair(n=512)
    spec = Method("pad", "test", {"learn_diagonal": True, "log_scale_bound": 1.0}, latent_dims=2,
                  mmd_weight=1.0, padded_inverse_weight=1.0)
    before = train_method(spec, z, y, steps=1, depth=2, device="cpu", progress=False, checkpoint=False)
    after = train_method(spec, z, y, steps=150, depth=2, batch_size=128, device="cpu", progress=False,
                         checkpoint=False)
    prior = torch.randn(512, 2, generator=torch.Generator().manual_seed(0))

    def latent_mmd(t):
        with torch.no_grad():
            return float(mmd_inverse_multiquadric(t.net(z)[:, 14:], prior))
    assert latent_mmd(after) < latent_mmd(before)
    loss = MethodLoss(spec)
    value = loss(after.net, z[:32], after.space.rotate(y[:32, 0]))
    assert bool(torch.isfinite(value)) and set(loss.last) == {"mmd", "inverse_mse"}


def test_optional_loss_terms_report_themselves_and_validate():
    z, y = _toy_pair(n=64)
    space = CaptionSpace.fit(y)
    net = InvertibleMLP(16, 2, init_std=0.1)
    spec = Method("all", "", {}, spread_weight=1e-3, latent_dims=2, mmd_weight=1.0, padded_inverse_weight=1.0,
                  mmd_condition_dims=3, detach_latent=True, prior_inverse_weight=0.5)
    loss = MethodLoss(spec, space)
    value = loss(net, z[:32], space.rotate(y[:32, 0]))
    value.backward()
    assert bool(torch.isfinite(value)) and set(loss.last) == {"spread", "mmd", "inverse_mse", "prior_inverse_mse"}
    assert all(p.grad is not None for p in net.parameters())
    noisy = MethodLoss(Method("noisy", "", {}, noisy_inverse_weight=1.0, inverse_noise=0.02))
    assert float(noisy(net, z[:8], y[:8, 0]).detach()) > 0 and set(noisy.last) == {"noisy_inverse_mse"}
    with pytest.raises(ValueError, match="CaptionSpace"):
        MethodLoss(spec)
    with pytest.raises(ValueError, match=">= 0"):
        Method("x", "", inverse_noise=-1.0)
    with pytest.raises(ValueError, match="latent_dims"):
        Method("x", "", prior_inverse_weight=1.0)


def test_caption_space_projection_is_the_orthogonal_projection_onto_the_top_directions():
    g = torch.Generator().manual_seed(7)
    x = torch.randn(200, 6, generator=g, dtype=torch.float64) * torch.tensor([5.0, 3.0, 2.0, 0.5, 0.2, 0.1],
                                                                              dtype=torch.float64)
    space = CaptionSpace.fit(x)
    p = space.project(x.float(), 2).double()
    # reference: least squares onto the mean plus the span of the two leading eigenvectors (numpy-free SVD)
    centred = x - x.mean(0)
    top = torch.linalg.svd(centred, full_matrices=False).Vh[:2].T
    reference = x.mean(0) + centred @ top @ top.T
    assert torch.allclose(p, reference, atol=1e-4)
    assert torch.allclose(space.project(p.float(), 2).double(), p, atol=1e-5)  # idempotent


def test_projected_inverse_ignores_directions_outside_the_image_subspace(tmp_path, monkeypatch):
    monkeypatch.setenv("INVCAP_CACHE_DIR", str(tmp_path))
    z, y = _toy_pair(n=512)
    spec = Method("proj", "", image_rank=6, projected_inverse_weight=1.0)
    trained = train_method(spec, z, y, steps=120, depth=2, batch_size=128, device="cpu", progress=False,
                           checkpoint=False)
    space = trained.image_space
    outside = space.basis[:, 6:] @ torch.randn(10, 16, generator=torch.Generator().manual_seed(1))[:, :10]
    # captioning reads only the subspace: moving a latent along the free directions changes nothing
    assert torch.allclose(trained.caption(z[:10] + outside.T), trained.caption(z[:10]), atol=1e-5)
    # generated latents lie in the subspace: their coordinates beyond the first 6 are zero
    x = trained.invert(y[:20, 0])[:, 0]
    assert float(space.rotate(x)[:, 6:].abs().max()) < 1e-4
    # the loss term: zero error inside the subspace gives zero loss whatever f^-1 does outside it
    loss = MethodLoss(spec, image_space=space)
    net = trained.net
    with torch.no_grad():
        target = space.project(net.inverse(y[:8, 0]), 6)
        shifted = net.inverse(y[:8, 0]) + (space.basis[:, 6:] @ torch.ones(10)) * 3.0
    assert float(loss(net, target, y[:8, 0]).detach()) < 1e-10 and set(loss.last) == {"projected_inverse_mse"}
    assert float(loss(net, space.project(shifted, 6), y[:8, 0]).detach()) < 1e-10
    with pytest.raises(ValueError, match="image_space"):
        MethodLoss(spec)
    with pytest.raises(ValueError, match="go together"):
        Method("x", "", image_rank=4)
    with pytest.raises(ValueError, match="projected_inverse_weight"):
        Method("x", "", {"inverse_weight": 1.0}, image_rank=4, projected_inverse_weight=1.0)
    with pytest.raises(ValueError, match="below the width"):
        train_method(Method("x", "", image_rank=16, projected_inverse_weight=1.0), z, y, steps=1, depth=2,
                     device="cpu", progress=False, checkpoint=False)


def test_projected_bidirectional_inverts_real_captions_better_than_paper(tmp_path, monkeypatch):
    monkeypatch.setenv("INVCAP_CACHE_DIR", str(tmp_path))
    z, y = _toy_pair(n=512)
    spec = dataclasses.replace(method("bidirectional+projected"), image_rank=8)
    errors = {}
    for name, s in (("paper", method("paper")), ("projected", spec)):
        trained = train_method(s, z, y, steps=120, depth=2, batch_size=128, device="cpu", progress=False,
                               checkpoint=False)
        projected_z = trained.project(z) if s.image_rank else z
        errors[name] = float(((trained.invert(y[:, 0])[:, 0] - projected_z) ** 2).mean())
    assert errors["projected"] < errors["paper"]


def _info_nce_reference(p, t, temperature):
    """Row by row in float64: -log softmax_j(cos(p_i, t_j) / temperature) at j = i."""
    p, t = p.double(), t.double()
    total = 0.0
    for i in range(len(p)):
        logits = [float(p[i] @ t[j] / (p[i].norm() * t[j].norm())) / temperature for j in range(len(t))]
        top = max(logits)
        total += top + math.log(sum(math.exp(v - top) for v in logits)) - logits[i]
    return total / len(p)


def test_has_extra_terms_follows_the_extra_weights():
    assert not method("paper").has_extra_terms and not method("bidirectional").has_extra_terms
    assert all(method(n).has_extra_terms for n in ("conditioned", "bidirectional+latent", "bidirectional+projected",
                                                   "bidirectional+projected+contrastive"))
    assert Method("c", "", contrastive_weight=0.1).has_extra_terms
    assert Method("n", "", noisy_inverse_weight=1.0, inverse_noise=0.01).has_extra_terms


def test_info_nce_matches_direct_float64_computation_and_validates():
    g = torch.Generator().manual_seed(3)
    p, t = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(7, 5, generator=g, dtype=torch.float64)
    for temperature in (0.05, 1.0):
        assert float(info_nce(p, t, temperature)) == pytest.approx(_info_nce_reference(p, t, temperature), rel=1e-10)
    # captions that cannot be told apart score log(n); the targets themselves score near 0 at a low temperature
    assert float(info_nce(p, torch.ones(7, 5, dtype=torch.float64), 0.05)) == pytest.approx(math.log(7.0), rel=1e-12)
    assert float(info_nce(t, t, 0.01)) < 1e-3
    with pytest.raises(ValueError, match="must both be"):
        info_nce(p, t[:, :4], 0.1)
    with pytest.raises(ValueError, match="at least 2"):
        info_nce(p[:1], t[:1], 0.1)
    with pytest.raises(ValueError, match="temperature"):
        info_nce(p, t, 0.0)
    with pytest.raises(ValueError, match="contrastive_temperature"):
        Method("x", "", contrastive_weight=1.0, contrastive_temperature=-0.1)
    with pytest.raises(ValueError, match=">= 0"):
        Method("x", "", contrastive_weight=-1.0)


def test_contrastive_term_is_trained_and_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("INVCAP_CACHE_DIR", str(tmp_path))
    z, y = _toy_pair(n=512)
    # a harder pairing than the toy default: captions far noisier than the latents' spread
    y = y[:, :1] + 0.6 * torch.randn(512, 3, 16, generator=torch.Generator().manual_seed(2))
    base = Method("proj", "", image_rank=8, projected_inverse_weight=1.0)
    scores = {}
    for weight in (0.0, 0.1):
        spec = dataclasses.replace(base, contrastive_weight=weight)
        trained = train_method(spec, z, y, steps=150, depth=2, batch_size=128, device="cpu", progress=False,
                               checkpoint=False)
        with torch.no_grad():
            scores[weight] = float(info_nce(trained.caption(z), y[:, 0], 0.05))
    assert scores[0.1] < scores[0.0] - 0.05
    loss = MethodLoss(dataclasses.replace(base, contrastive_weight=0.1), image_space=trained.image_space)
    net = trained.net
    value = loss(net, trained.project(z[:16]), y[:16, 0])
    assert set(loss.last) == {"projected_inverse_mse", "contrastive"}
    # the prediction handed in by train_captioning is the one used: same value as computing f(z) itself
    assert float(value) == pytest.approx(float(loss(net, trained.project(z[:16]), y[:16, 0], net(trained.project(z[:16])))))
