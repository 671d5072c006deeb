"""The attribute judge: labels, augmentation (blur against scipy), training on a toy task, the
checkpoint cache keyed by cache_key."""

import math

import numpy as np
import pytest
import torch

from invcap.judge import (AttributeJudge, JudgeConfig, _blur, augment, encode_labels, judge_accuracy, judge_key,
                          judge_training_set, load_or_train_judge, train_judge)

TOY = {"colour": ("red", "green"), "side": ("left", "right")}


def _toy_images(n, seed):
    """16x16 dark images with a 5x5 red or green square on the left or right half."""
    g = np.random.default_rng(seed)
    images, labels = torch.full((n, 3, 16, 16), 0.08), []
    for i in range(n):
        colour, side = str(g.choice(TOY["colour"])), str(g.choice(TOY["side"]))
        top = int(g.integers(0, 11))
        left = int(g.integers(0, 3)) + (0 if side == "left" else 8)
        rgb = (0.9, 0.15, 0.15) if colour == "red" else (0.15, 0.75, 0.2)
        images[i, :, top:top + 5, left:left + 5] = torch.tensor(rgb)[:, None, None]
        labels.append({"colour": colour, "side": side})
    return images, labels


def test_encode_labels_and_its_errors():
    labels = encode_labels([{"colour": "green", "side": "left"}, {"colour": "red", "side": "right"}], TOY)
    assert labels.tolist() == [[1, 0], [0, 1]]
    with pytest.raises(ValueError, match="lacks 'side'"):
        encode_labels([{"colour": "red"}], TOY)
    with pytest.raises(ValueError, match="not one of"):
        encode_labels([{"colour": "blue", "side": "left"}], TOY)


def test_blur_matches_scipy_gaussian_filter():
    from scipy.ndimage import gaussian_filter

    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 12, 12, generator=g, dtype=torch.float64)
    sigma, max_sigma = 0.9, 1.2
    radius = math.ceil(2.5 * max_sigma)
    ours = _blur(images, torch.full((2,), sigma, dtype=torch.float64), max_sigma)
    for b in range(2):
        for c in range(3):
            ref = gaussian_filter(images[b, c].numpy(), sigma, mode="nearest", truncate=radius / sigma)
            np.testing.assert_allclose(ours[b, c].numpy(), ref, atol=1e-12)


def test_augment_is_seeded_bounded_and_mild_when_switched_off():
    images, _ = _toy_images(8, 0)
    a = augment(images, torch.Generator().manual_seed(3))
    b = augment(images, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == images.shape
    assert float(a.min()) >= 0 and float(a.max()) <= 1 and not torch.equal(a, images)
    plain = augment(images, torch.Generator().manual_seed(3), max_blur=0, max_noise=0, max_sharpen=0)
    assert float((plain - images).abs().max()) < 0.1   # only the few-percent gain and shift remain


def test_judge_learns_a_toy_task_and_scores_images():
    images, labels = _toy_images(400, 1)
    config = JudgeConfig(image_size=16, width=8, steps=150, batch_size=64, lr=3e-3)
    judge, history = train_judge(images, labels, TOY, config, progress=False)
    assert history["loss"][-1] < history["loss"][0]
    test_images, test_labels = _toy_images(100, 2)
    scores = judge_accuracy(judge, test_images, test_labels)
    assert scores["all"] >= 95 and set(scores) == {"colour", "side", "all"}
    broken = test_images.clone()
    broken[0, 0, 0, 0] = float("nan")   # a non-finite image is always wrong, never an exception
    assert judge.predict(broken)[0] is None
    assert judge_accuracy(judge, broken, test_labels)["all"] <= scores["all"] - 1 + 1e-9
    with pytest.raises(ValueError, match="takes"):
        judge(torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match="images"):
        train_judge(images[:3], labels, TOY, config, progress=False)


def test_judge_training_set_covers_every_combination():
    images, combos = judge_training_set(JudgeConfig(copies=2))
    assert images.shape == (2 * 192, 3, 32, 32) and len(combos) == 2 * 192
    unique = {tuple(sorted(c.items())) for c in combos}
    assert len(unique) == 192   # the held-out compositional ones included


def test_load_or_train_judge_reuses_its_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("INVCAP_CACHE_DIR", str(tmp_path))
    config = JudgeConfig(copies=1, steps=3, width=4, batch_size=16)
    first, info = load_or_train_judge(config, progress=False)
    again, info_again = load_or_train_judge(config, progress=False)
    assert not info["reused"] and info_again["reused"]
    for p, q in zip(first.parameters(), again.parameters()):
        assert torch.equal(p, q)
    assert len(list((tmp_path / "judge").glob("*.pt"))) == 1


def test_judge_key_covers_config_attributes_and_code(monkeypatch):
    from invcap.data.embedded import ATTRIBUTES

    key = judge_key(JudgeConfig(), ATTRIBUTES)
    assert key == JudgeConfig().key(ATTRIBUTES) and key != judge_key(JudgeConfig(steps=801), ATTRIBUTES)
    assert key != judge_key(JudgeConfig(), {**ATTRIBUTES, "size": ("small", "large")})
    import invcap.cache as C
    from invcap.data import embedded

    seen = {}
    monkeypatch.setattr(C, "cache_key", lambda config, data=None, code=(): seen.setdefault("code", code) and "k")
    judge_key(JudgeConfig(), ATTRIBUTES)
    assert {train_judge, augment, judge_training_set, AttributeJudge, embedded.render} <= set(seen["code"])


def test_reconstruction_ceiling_judges_the_reconstructions():
    from invcap.judge import reconstruction_ceiling

    class Dimmer(torch.nn.Module):  # a stand-in autoencoder: halves every pixel
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.tensor(0.5))

        def forward(self, x):
            return x * self.scale

    images, labels = _toy_images(20, 4)
    judge = AttributeJudge(TOY, 16, 4)
    assert reconstruction_ceiling(judge, Dimmer(), images, labels) == judge_accuracy(judge, images * 0.5, labels)
