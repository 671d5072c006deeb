"""invcap.inversion against references: autograd Jacobians, skimage/closed-form PSNR, Lipschitz bounds."""

import json
import math
from pathlib import Path

import pytest
import torch

from invcap.inn import InvertibleMLP
from invcap.inversion import (amplification, attribute_accuracy, check_captions, check_images,
                              conditioning_record, generate, image_scores, jacobian_gains,
                              nearest_neighbour_attributes, noise_sweep, psnr, ssim)

D = 12


def _net(seed=0, depth=3):
    torch.manual_seed(seed)
    return InvertibleMLP(D, depth, negative_slope=0.5, init_std=0.8).eval()


def _decode(z):  # a fixed "decoder": latents of D = 12 -> (N, 3, 2, 2), upsampled to 12x12 (SSIM window 11)
    return torch.sigmoid(z.reshape(-1, 3, 2, 2)).repeat_interleave(6, -1).repeat_interleave(6, -2)


def test_jacobian_gains_match_autograd():
    net = _net()
    x = torch.randn(4, D, dtype=torch.float64)
    gains = jacobian_gains(net, x)
    net64 = net.double()
    for i in range(4):
        jac = torch.autograd.functional.jacobian(net64, x[i])
        sv = torch.linalg.svdvals(jac)
        assert gains["sigma_max"][i] == pytest.approx(float(sv[0]), rel=1e-9)
        assert gains["inverse_gain"][i] == pytest.approx(float(1 / sv[-1]), rel=1e-9)
        # the inverse's Jacobian at y = f(x) is J_f(x)^-1
        jac_inv = torch.autograd.functional.jacobian(net64.inverse, net64(x[i]))
        assert torch.allclose(jac_inv @ jac, torch.eye(D, dtype=torch.float64), atol=1e-9)


def test_amplification_is_bounded_and_matches_local_gain():
    net = _net()
    x = torch.randn(64, D)
    y = net(x)
    d = torch.randn(64, D)
    amp = amplification(net, y, d, eps=1e-6)
    bound = net.conditioning().inverse_lipschitz_bound
    gains = jacobian_gains(net, x)
    assert bool((amp <= bound * (1 + 1e-9)).all())
    # Linear regime: the measured gain lies within the Jacobian's singular-value range.
    assert bool((amp <= gains["inverse_gain"] * (1 + 1e-5)).all())
    assert bool((amp >= 1 / gains["sigma_max"] * (1 - 1e-5)).all())
    with pytest.raises(ValueError, match="eps"):
        amplification(net, y, d, eps=0.0)
    # One step length per row: the full step to another point gives its exact ratio.
    target = net(x + 0.3 * torch.randn(64, D))
    steps = (target - y).double().norm(dim=1)
    full = amplification(net, y, target - y, steps)
    net64 = net.double()
    expected = (net64.inverse(target.double()) - net64.inverse(y.double())).norm(dim=1) / steps
    assert torch.allclose(full, expected, rtol=1e-6)


def test_principal_directions_and_directional_gains():
    from invcap.inversion import directional_gains
    from invcap.linalg import principal_directions

    gen = torch.Generator().manual_seed(1)
    cloud = torch.randn(500, D, generator=gen) * torch.linspace(3, 0.1, D)
    pca = principal_directions(cloud)
    axes, spread = pca.directions, pca.std
    assert torch.allclose(axes @ axes.T, torch.eye(D, dtype=torch.float64), atol=1e-10)
    assert spread[0] == pytest.approx(3, rel=0.15) and spread[-1] == pytest.approx(0.1, rel=0.15)
    net = _net()
    y = net(torch.randn(8, D, generator=gen))
    gains = directional_gains(net, y, axes[:3], eps=1e-6)
    assert gains.shape == (3,)
    assert float(gains[1]) == pytest.approx(float(amplification(net, y, axes[1].expand(8, -1), 1e-6).median()))


def test_volume_contraction_matches_slogdet():
    from invcap.inversion import volume_contraction

    net = _net()
    x = torch.randn(5, D, dtype=torch.float64)
    out = volume_contraction(net, x)
    net64 = net.double()
    logdets = [torch.linalg.slogdet(torch.autograd.functional.jacobian(net64, row)).logabsdet for row in x]
    assert out["mean_log_abs_det"] == pytest.approx(float(torch.stack(logdets).mean()), rel=1e-9)
    assert out["activation_floor_per_dim"] == 0.25 and out["weights_scale_per_dim"] == pytest.approx(1.0)


def test_psnr_and_ssim_references():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    gen = torch.Generator().manual_seed(0)
    ref = torch.rand(3, 3, 16, 16, generator=gen)
    img = ref + 0.05 * torch.randn(3, 3, 16, 16, generator=gen)  # psnr/ssim clamp to [0, 1] first
    p, s = psnr(img, ref), ssim(img, ref)
    for i in range(3):
        a = img[i].clamp(0, 1).permute(1, 2, 0).double().numpy()
        b = ref[i].permute(1, 2, 0).double().numpy()
        assert float(p[i]) == pytest.approx(peak_signal_noise_ratio(b, a, data_range=1.0), rel=1e-5)
        assert float(s[i]) == pytest.approx(structural_similarity(
            a, b, channel_axis=-1, data_range=1.0, gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False), rel=1e-5)
    bad = img.clone()
    bad[1, 0, 0, 0] = float("inf")  # clamping alone would hide it
    assert math.isnan(float(psnr(bad, ref)[1])) and math.isnan(float(ssim(bad, ref)[1]))
    scores = image_scores(bad, ref)
    assert scores["n_nonfinite"] == 1 and scores["psnr"] == pytest.approx(float(p[[0, 2]].mean()))
    with pytest.raises(ValueError, match="same shape"):
        psnr(img, ref[:2])


def test_noise_sweep_recovers_input_at_zero_noise_and_degrades():
    net = _net()
    z = torch.randn(32, D) * 0.5
    images = _decode(z)
    rows = noise_sweep(net, _decode, net(z), images, [0.0, 1e-3, 1e-1, 10.0], progress=False)
    assert [r["sigma"] for r in rows] == [0.0, 1e-3, 1e-1, 10.0]
    assert rows[0]["psnr"] > 60 and rows[0]["rms_dy"] == 0
    assert rows[1]["rms_dy"] == pytest.approx(1e-3, rel=0.3)
    psnrs = [r["psnr"] for r in rows]
    assert psnrs == sorted(psnrs, reverse=True)
    assert rows[-1]["psnr"] < 25
    rows64 = noise_sweep(net, _decode, net(z), images, [0.0, 1e-3], progress=False, dtype=torch.float64)
    assert rows64[0]["psnr"] >= rows[0]["psnr"] - 1e-6 and rows64[1]["rms_dy"] == pytest.approx(rows[1]["rms_dy"], rel=1e-6)
    with pytest.raises(ValueError, match="dtype"):
        noise_sweep(net, _decode, net(z), images, [0.0], progress=False, dtype=torch.float16)


def test_generate_checks_captions_and_reports_nonfinite():
    net = _net()

    def encode(texts):
        return torch.stack([torch.full((D,), float(len(t))) / 10 for t in texts])

    out = generate(net, encode, _decode, ["a red circle", "a blue square at the top"])
    assert out.images.shape == (2, 3, 12, 12) and out.n_nonfinite == 0
    assert torch.allclose(net(out.latents), out.embeddings, atol=1e-4)
    nan_out = generate(net, encode, lambda z: _decode(z) * float("nan"), ["a red circle"])
    assert nan_out.n_nonfinite == 1
    with pytest.raises(ValueError, match="non-finite pixels"):
        check_images(nan_out.images, "generated images")
    with pytest.raises(ValueError, match="empty"):
        check_captions([])
    with pytest.raises(ValueError, match=r"texts\[1\] is empty"):
        generate(net, encode, _decode, ["fine", "  "])
    with pytest.raises(ValueError, match=r"texts\[0\] is int"):
        generate(net, encode, _decode, [3])
    with pytest.raises(ValueError, match="single str"):
        check_captions("a red circle")
    with pytest.raises(ValueError, match="network expects"):
        generate(net, lambda t: torch.zeros(len(t), D + 1), _decode, ["a red circle"])


def test_conditioning_record_and_bound_consistency():
    net = _net()
    summary = conditioning_record(net)
    assert len(summary["layers"]) == 3
    expected = math.prod(1 / layer["sigma_min"] for layer in summary["layers"]) * 2.0 ** 2
    assert summary["inverse_lipschitz_bound"] == pytest.approx(expected, rel=1e-9)
    assert summary["max_condition_number"] >= 1


def test_nearest_neighbour_judge():
    ref = torch.stack([torch.zeros(3, 4, 4), torch.ones(3, 4, 4)])
    attrs = [{"colour": "black"}, {"colour": "white"}]
    imgs = torch.stack([torch.full((3, 4, 4), 0.9), torch.full((3, 4, 4), 0.1), torch.full((3, 4, 4), float("nan"))])
    pred = nearest_neighbour_attributes(imgs, ref, attrs)
    assert pred == [{"colour": "white"}, {"colour": "black"}, None]
    acc = attribute_accuracy(pred, [{"colour": "white"}, {"colour": "white"}, {"colour": "white"}])
    assert acc == {"colour": pytest.approx(100 / 3), "all": pytest.approx(100 / 3)}
    with pytest.raises(ValueError, match="reference images"):
        nearest_neighbour_attributes(imgs, ref, attrs[:1])


# --- artifacts of notebook 04 (nbval ignores images, so they are checked here) -------------------

ROOT = Path(__file__).resolve().parents[1]


def test_notebook_04_results():
    results = json.loads((ROOT / "results" / "inversion.json").read_text())
    assert {"config", "seed", "versions", "device", "git_commit"} <= set(results["run"])
    assert set(results["noise_sweep"]) == set(results["paper_noise"]) == {"float32", "float64"}
    for precision, rows in results["noise_sweep"].items():
        sigmas = [row["sigma"] for row in rows]
        assert sigmas == sorted(sigmas) and sigmas[0] == 0
        assert set(results["paper_noise"][precision]) == {"std", "variance"}
    bound = results["conditioning"]["inverse_lipschitz_bound"]
    # The bound must hold for every measured amplification (up to float64 rounding).
    assert all(a["max"] <= bound * (1 + 1e-6) for a in results["amplification"].values())
