"""invcap.captioning: training, targets, checkpoints (atomic, resumed, keyed by config), baseline."""

import json
from pathlib import Path

import pytest
import torch

from invcap.inn import LULinear
from invcap.captioning import (CaptioningConfig, caption_targets, check_pair, fit_least_squares, invert,
                               load_network, predict, train_captioning)


def _data(n=256, d=8, c=5, seed=0, noise=0.01):
    """y = g(z) + caption noise with g an exactly representable invertible map (one LU layer
    with unit diagonal: det = 1, as the paper's fixed k_i = 1 imposes)."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, d, generator=gen)
    torch.manual_seed(seed)
    with torch.no_grad():
        g = LULinear(d, init_std=0.5)
        g.bias.fill_(0.1)
        y_mean = g(z)
    y = y_mean[:, None, :] + noise * torch.randn(n, c, d, generator=gen)
    return z, y, y_mean


def test_training_fits_and_inverts():
    z, y, y_mean = _data()
    config = CaptioningConfig(depth=1, steps=300, batch_size=64, lr=1e-2, device="cpu")
    run = train_captioning(z, y, config, progress=False)
    assert len(run.history["mse"]) == 300
    pred = predict(run.net, z)
    # The MSE-optimal prediction is the mean caption (measured 1e-6 after 300 steps; start 0.28).
    assert torch.mean((pred - y_mean) ** 2) < 1e-4 < 0.1 < torch.mean((z - y_mean) ** 2)
    assert torch.allclose(invert(run.net, pred), z, atol=1e-4)
    pred64 = predict(run.net, z, dtype=torch.float64)
    assert pred64.dtype == torch.float64 and torch.allclose(pred64, pred.double(), atol=1e-5)
    assert torch.allclose(invert(run.net, pred64, dtype=torch.float64), z.double(), atol=1e-10)
    with pytest.raises(ValueError, match="dtype"):
        predict(run.net, z, dtype=torch.float16)


def test_mean_target_and_inverse_weight_and_extra_loss():
    z, y, _ = _data()
    calls = []

    def extra(net, zb, yb, prediction):
        calls.append(zb.shape)
        # the hook gets this step's f(z), graph attached, so forward-output terms need no second pass
        assert prediction.requires_grad and torch.equal(prediction, net(zb))
        return 0.0 * prediction.sum()

    config = CaptioningConfig(depth=2, steps=20, batch_size=32, target="mean", inverse_weight=0.5, device="cpu")
    run = train_captioning(z, y, config, progress=False, extra_loss=extra)
    assert len(calls) == 20 and calls[0] == (32, 8)
    assert len(run.history["inverse_mse"]) == 20 and len(run.history["extra"]) == 20
    loss = torch.tensor(run.history["loss"])
    parts = torch.tensor(run.history["mse"]) + 0.5 * torch.tensor(run.history["inverse_mse"])
    assert torch.allclose(loss, parts, rtol=1e-5)


def test_same_seed_same_weights():
    z, y, _ = _data()
    config = CaptioningConfig(depth=2, steps=30, batch_size=32, device="cpu")
    a = train_captioning(z, y, config, progress=False)
    b = train_captioning(z, y, config, progress=False)
    assert a.history["mse"] == b.history["mse"]


def test_complete_checkpoint_is_loaded_not_retrained(tmp_path):
    z, y, _ = _data()
    config = CaptioningConfig(depth=2, steps=30, batch_size=32, device="cpu")
    path = tmp_path / "ck.pt"
    first = train_captioning(z, y, config, checkpoint=path, progress=False)
    assert torch.load(path, weights_only=True)["step"] == 30 and not list(tmp_path.glob(".*.tmp"))
    again = train_captioning(z, y, config, checkpoint=path, progress=False)
    assert again.resumed_from == 30 and again.history == first.history
    for p, q in zip(again.net.parameters(), first.net.parameters()):
        assert torch.equal(p, q)
    net, loaded = load_network(path, features=8)
    assert loaded == config
    assert torch.allclose(predict(net, z), predict(first.net, z))
    with pytest.raises(ValueError, match="8 features, not 4"):
        load_network(path, features=4)


def test_resume_mid_run_matches(tmp_path, monkeypatch):
    z, y, _ = _data()
    config = CaptioningConfig(depth=2, steps=40, batch_size=32, device="cpu")
    reference = train_captioning(z, y, config, progress=False)
    path = tmp_path / "ck.pt"
    # Interrupt after the step-20 checkpoint by making the extra-loss hook raise at step 25.
    state = {"n": 0}

    def boom(net, zb, yb, prediction):
        state["n"] += 1
        if state["n"] > 25:
            raise KeyboardInterrupt
        return torch.zeros(())

    with pytest.raises(KeyboardInterrupt):
        train_captioning(z, y, config, checkpoint=path, progress=False, checkpoint_every=20, extra_loss=boom)
    assert torch.load(path, weights_only=True)["step"] == 20
    with pytest.raises(ValueError, match="extra_loss"):
        train_captioning(z, y, config, checkpoint=path, progress=False)
    state["n"] = -1000  # never raise again
    resumed = train_captioning(z, y, config, checkpoint=path, progress=False, extra_loss=boom)
    assert resumed.resumed_from == 20
    assert resumed.history["mse"] == pytest.approx(reference.history["mse"], rel=1e-6)


def test_checkpoint_from_other_config_or_data_is_an_error(tmp_path):
    z, y, _ = _data()
    path = tmp_path / "ck.pt"
    train_captioning(z, y, CaptioningConfig(depth=2, steps=5, device="cpu"), checkpoint=path, progress=False)
    with pytest.raises(ValueError, match=r"another configuration \(depth: checkpoint 2 vs now 3"):
        train_captioning(z, y, CaptioningConfig(depth=3, steps=5, device="cpu"), checkpoint=path, progress=False)
    with pytest.raises(ValueError, match="other data"):
        train_captioning(z + 1, y, CaptioningConfig(depth=2, steps=5, device="cpu"), checkpoint=path, progress=False)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot read checkpoint"):
        train_captioning(z, y, CaptioningConfig(depth=2, steps=5, device="cpu"), checkpoint=path, progress=False)
    with pytest.raises(FileNotFoundError):
        load_network(tmp_path / "missing.pt")


def test_bad_input_is_named():
    z, y, _ = _data()
    with pytest.raises(ValueError, match="latent dimension 8 != caption embedding dimension 6"):
        check_pair(z, y[..., :6])
    with pytest.raises(ValueError, match="paired row by row"):
        check_pair(z[:10], y)
    with pytest.raises(ValueError, match="NaN"):
        check_pair(z.clone().fill_(float("nan")), y)
    with pytest.raises(ValueError, match="target"):
        CaptioningConfig(target="first")
    with pytest.raises(ValueError, match="steps"):
        CaptioningConfig(steps=0)
    assert check_pair(z, y[:, 0]).shape == (256, 1, 8)


def test_least_squares_matches_normal_equations():
    z, y, y_mean = _data(n=300)
    ols = fit_least_squares(z, y, ridge=0.0)
    x = torch.cat([z.double(), torch.ones(300, 1, dtype=torch.float64)], 1)
    coef = torch.linalg.solve(x.T @ x, x.T @ caption_targets(y).double())
    assert torch.allclose(ols.weight, coef[:-1], atol=1e-8) and torch.allclose(ols.bias, coef[-1], atol=1e-8)
    assert torch.mean((ols(z) - y_mean) ** 2) < 1e-4
    # ridge: the closed form on centred data with lambda = ridge * tr(Zc^T Zc) / d, bias free
    fit = fit_least_squares(z, y)
    zc, yc = z.double() - z.double().mean(0), caption_targets(y).double() - caption_targets(y).double().mean(0)
    lam = 1e-3 * float((zc ** 2).sum()) / z.shape[1]
    ref = torch.linalg.solve(zc.T @ zc + lam * torch.eye(z.shape[1], dtype=torch.float64), zc.T @ yc)
    assert fit.penalty == pytest.approx(lam) and torch.allclose(fit.weight, ref, atol=1e-10)
    assert "ridge" in fit.describe() and torch.mean((fit(z) - y_mean) ** 2) < 1e-4


def test_least_squares_never_stops_on_fewer_samples_than_dimensions():
    # a small Flickr30k folder: 251 images, 384-d latents stopped notebook 03 with plain OLS
    z, y, _ = _data(n=5)
    fit = fit_least_squares(z, y)
    assert fit.weight.shape == (8, 8) and bool(torch.isfinite(fit(z)).all())
    assert torch.isfinite(fit_least_squares(z, y, ridge=0.0).weight).all()   # minimum-norm solution
    with pytest.raises(ValueError, match="ridge"):
        fit_least_squares(z, y, ridge=-1.0)


def test_forward_dims_fits_only_the_first_outputs():
    z, y, y_mean = _data()
    config = CaptioningConfig(depth=1, steps=1, batch_size=32, target="mean", device="cpu")
    run = train_captioning(z, y, config, progress=False, forward_dims=3)
    # Step 0 sees the initial network (identity: W = I, b = 0) on the first batch of the seeded
    # generator: its loss is the MSE over the first 3 outputs only.
    index = torch.randint(256, (32,), generator=torch.Generator().manual_seed(0))
    expected = torch.mean((z[index] - y.mean(1)[index])[:, :3] ** 2)
    assert run.history["mse"][0] == pytest.approx(float(expected), rel=1e-5)
    assert run.history["mse"][0] != pytest.approx(float(torch.mean((z[index] - y.mean(1)[index]) ** 2)), rel=1e-2)
    with pytest.raises(ValueError, match="forward_dims"):
        train_captioning(z, y, config, progress=False, forward_dims=9)


def test_embedding_errors_bias_variance_split():
    from invcap.captioning import embedding_errors

    z, y, y_mean = _data(noise=0.1)
    pred = y_mean + 0.05
    err = embedding_errors(pred, y)
    # MSE to single captions = MSE to their mean + spread of captions around the mean (exactly).
    assert err["mse_per_caption"] == pytest.approx(err["mse_mean_caption"] + err["caption_spread_mse"], rel=1e-9)
    assert err["mse_mean_caption"] == pytest.approx(float(((pred.double() - y.double().mean(1)) ** 2).mean()), rel=1e-9)
    assert err["caption_spread_mse"] == pytest.approx(0.01 * 4 / 5, rel=0.05)  # spread around the sample mean of 5
    assert 0.9 < err["cosine_per_caption"] < err["cosine_mean_caption"] <= 1


# --- artifacts of notebook 03 (nbval ignores images, so they are checked here) -------------------

ROOT = Path(__file__).resolve().parents[1]


def test_notebook_03_results():
    results = json.loads((ROOT / "results" / "captioning.json").read_text())
    assert {"config", "seed", "versions", "device", "git_commit"} <= set(results["run"])
    for split in ("train", "test"):
        for model in ("invertible f", "least squares"):
            e = results["embedding_error"][split][model]
            assert 0 < e["mse_mean_caption"] < e["mse_per_caption"]
    assert "ridge" in results["least_squares"] and Path(results["network"]["checkpoint"]).name.startswith("captioning-")
    for model in ("invertible f", "least squares"):
        for direction in ("i2t", "t2i"):
            r = results["retrieval"][model][direction]
            assert 0 <= r["R@1"] <= r["R@5"] <= r["R@10"] <= 100 and r["median_rank"] >= 1


def test_label_mean_predictor():
    from invcap.captioning import label_mean_predictor

    y = torch.tensor([[[1.0, 0.0], [3.0, 0.0]], [[0.0, 2.0], [0.0, 4.0]], [[5.0, 0.0], [7.0, 0.0]]])
    out = label_mean_predictor(["a", "b", "a"], y, ["b", "a"])
    assert torch.allclose(out, torch.tensor([[0.0, 3.0], [4.0, 0.0]]))
    with pytest.raises(ValueError, match="never occur"):
        label_mean_predictor(["a", "b", "a"], y, ["c"])


def test_checkpoint_key_covers_config_data_and_training_code(tmp_path, monkeypatch):
    """Editing the training code changes the checkpoint key (a rerun retrains), re-wording a
    comment does not; so does other data or another config."""
    import importlib
    import sys

    from invcap import captioning

    monkeypatch.setenv("INVCAP_CACHE_DIR", str(tmp_path))
    config = CaptioningConfig(depth=1, steps=5, device="cpu")
    z, y, _ = _data(n=16)
    base = captioning.checkpoint_path("cap", config, (z, y))
    assert base.parent == tmp_path / "checkpoints" and base.name.startswith("cap-")
    assert captioning.checkpoint_path("cap", CaptioningConfig(depth=1, steps=5, device="cuda"), (z, y)) == base
    assert captioning.checkpoint_path("cap", CaptioningConfig(depth=2, steps=5, device="cpu"), (z, y)) != base
    assert captioning.checkpoint_path("cap", config, (z + 1e-7, y)) != base

    source = tmp_path / "fake_training_step.py"
    source.write_text("def step(x):\n    return x * 2  # doubled\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("fake_training_step")
    monkeypatch.setattr(captioning, "TRAINING_CODE", captioning.TRAINING_CODE + (module,))
    with_module = captioning.checkpoint_path("cap", config, (z, y))
    assert with_module != base
    source.write_text("def step(x):\n    return x * 2  # twice, re-worded\n")
    assert captioning.checkpoint_path("cap", config, (z, y)) == with_module
    source.write_text("def step(x):\n    return x * 3\n")
    assert captioning.checkpoint_path("cap", config, (z, y)) != with_module
    sys.modules.pop("fake_training_step", None)
    # the real training code is in the key: train_captioning's own module, the network, the schedule
    from invcap import inn, optim

    assert {captioning, inn, optim} <= set(captioning.TRAINING_CODE)
