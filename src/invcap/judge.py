"""The attribute judge: a small CNN that names an image's shape, colour, size and position.

``AttributeJudge`` has one classification head per attribute. It is trained only on *real*
rendered images, on a set generated separately from the study's splits that covers every
attribute combination (the held-out compositional ones included), so that it cannot share the
captioning model's shortcuts on unseen combinations. Blur, sharpening, noise and contrast
augmentation make it tolerant of the autoencoder's soft outputs; it never sees a decoded or
generated image. ``load_or_train_judge`` caches it under ``cache_dir()/judge/`` keyed by
``invcap.cache.cache_key`` over its configuration, the attributes and the code that renders its
training images and trains it. ``judge_accuracy``: per-attribute accuracy and the
all-attributes-correct rate, in percent.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from invcap.inversion import attribute_accuracy, finite_mask

__all__ = ["AttributeJudge", "JudgeConfig", "encode_labels", "judge_training_set", "augment", "train_judge",
           "load_or_train_judge", "judge_accuracy", "judge_key", "reconstruction_ceiling"]

JUDGE_FORMAT = 2


# --- labels --------------------------------------------------------------------------------

def encode_labels(attribute_dicts: Sequence[Mapping[str, str]],
                  attributes: Mapping[str, Sequence[str]]) -> torch.Tensor:
    """(N, A) long tensor of value indices, one column per attribute in ``attributes`` order."""
    names = list(attributes)
    rows = []
    for i, item in enumerate(attribute_dicts):
        row = []
        for name in names:
            if name not in item:
                raise ValueError(f"attribute_dicts[{i}] = {dict(item)} lacks {name!r}; expected keys {names}")
            values = list(attributes[name])
            if item[name] not in values:
                raise ValueError(f"attribute_dicts[{i}][{name!r}] = {item[name]!r} is not one of {values}")
            row.append(values.index(item[name]))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.long).reshape(len(rows), len(names))


# --- the judge -----------------------------------------------------------------------------

class AttributeJudge(nn.Module):
    """Three conv stages (32 -> 16 -> 8 -> 4 pixels) and one linear head per attribute.

    No global pooling: the position attribute needs to know *where* the object is."""

    def __init__(self, attributes: Mapping[str, Sequence[str]], image_size: int = 32, width: int = 24,
                 hidden: int = 128) -> None:
        super().__init__()
        if not attributes:
            raise ValueError("attributes is empty: the judge needs at least one attribute to classify")
        if not isinstance(image_size, int) or image_size < 8 or image_size % 8:
            raise ValueError(f"image_size must be a multiple of 8 (>= 8), got {image_size!r}")
        self.attributes = {name: tuple(values) for name, values in attributes.items()}
        self.image_size = image_size
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(4 * w * (image_size // 8) ** 2, hidden), nn.ReLU())
        self.heads = nn.ModuleList(nn.Linear(hidden, len(v)) for v in self.attributes.values())

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        expected = (3, self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"the judge takes (N, {expected[0]}, {expected[1]}, {expected[2]}) images, "
                             f"got {tuple(images.shape)}")
        h = self.features(images)
        return [head(h) for head in self.heads]

    @torch.no_grad()
    def predict_indices(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """(N, A) predicted value indices. Images are clamped to [0, 1] like a saved PNG would be;
        rows of non-finite images are -1 (always wrong)."""
        self.eval()
        device = next(self.parameters()).device
        finite = finite_mask(images)
        out = []
        for chunk in images.split(batch_size):
            chunk = torch.nan_to_num(chunk.float(), nan=0.0, posinf=1.0, neginf=0.0).clamp(0, 1)
            out.append(torch.stack([lg.argmax(dim=1) for lg in self(chunk.to(device))], dim=1).cpu())
        pred = torch.cat(out) if out else torch.empty(0, len(self.attributes), dtype=torch.long)
        pred[~finite] = -1
        return pred

    def predict(self, images: torch.Tensor, batch_size: int = 512) -> list[dict[str, str] | None]:
        """Attribute dicts, None for images with non-finite pixels."""
        names = list(self.attributes)
        return [None if int(row[0]) < 0 else {n: self.attributes[n][int(i)] for n, i in zip(names, row)}
                for row in self.predict_indices(images, batch_size)]


@dataclass(frozen=True)
class JudgeConfig:
    """Everything that decides the judge's weights (and its cache key)."""

    copies: int = 24            # renders of every attribute combination in the training set
    render_seed: int = 1000     # distinct from the dataset's seeds: a separate set of images
    image_size: int = 32
    width: int = 16
    steps: int = 800
    batch_size: int = 128
    lr: float = 2e-3
    max_blur: float = 1.2       # Gaussian blur sigma drawn in [0, max_blur] pixels
    max_noise: float = 0.04     # pixel noise std drawn in [0, max_noise]
    max_sharpen: float = 1.5    # unsharp-mask amount drawn in [0, max_sharpen] (edge rings)
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("copies", "steps", "batch_size", "width"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"JudgeConfig.{name} must be an int >= 1, got {getattr(self, name)!r}")
        if not (self.lr > 0) or min(self.max_blur, self.max_noise, self.max_sharpen) < 0:
            raise ValueError(f"JudgeConfig needs lr > 0 and non-negative augmentation, got {self}")

    def key(self, attributes: Mapping[str, Sequence[str]]) -> str:
        return judge_key(self, attributes)


def judge_key(config: JudgeConfig, attributes: Mapping[str, Sequence[str]]) -> str:
    """The judge's ``cache_key``: configuration, attributes, and the code that draws its training
    images (the renderer) and trains it."""
    from invcap.cache import cache_key
    from invcap.data import embedded

    return cache_key({"config": config, "attributes": {k: list(v) for k, v in attributes.items()}},
                     code=[AttributeJudge, judge_training_set, augment, _blur, _gaussian_kernels, train_judge,
                           encode_labels, embedded.render, embedded._mask, f"judge-format-{JUDGE_FORMAT}"])


def judge_training_set(config: JudgeConfig) -> tuple[torch.Tensor, list[dict[str, str]]]:
    """``config.copies`` jittered renders of every attribute combination (all 192, the held-out
    compositional ones included), from the procedural generator with its own seed."""
    from invcap.data.embedded import all_combinations, render_batch

    combos = all_combinations() * config.copies
    return render_batch(combos, image_size=config.image_size, seed=config.render_seed), combos


def _gaussian_kernels(sigmas: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, 2 radius + 1) normalised 1-D Gaussians; sigma 0 gives a delta."""
    x = torch.arange(-radius, radius + 1, dtype=sigmas.dtype)
    s = sigmas.clamp_min(1e-3)[:, None]
    k = torch.exp(-0.5 * (x[None, :] / s) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def _blur(images: torch.Tensor, sigmas: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image (replicate padding)."""
    b, c, h, w = images.shape
    radius = max(1, math.ceil(2.5 * max_sigma))
    k = _gaussian_kernels(sigmas, radius).to(images.dtype).repeat_interleave(c, dim=0)  # (B*C, K)
    flat = F.pad(images.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="replicate")
    flat = F.conv2d(flat, k[:, None, None, :], groups=b * c)
    flat = F.conv2d(flat, k[:, None, :, None], groups=b * c)
    return flat.reshape(b, c, h, w)


def augment(images: torch.Tensor, generator: torch.Generator, max_blur: float = 1.2,
            max_noise: float = 0.04, max_sharpen: float = 1.5) -> torch.Tensor:
    """Generic degradations, drawn per image: Gaussian blur (sigma in [0, max_blur] px), then
    unsharp masking x + a (x - blur(x)) with a in [0, max_sharpen] (the over- and undershoot
    rings that any smooth decoder produces around edges), a contrast/brightness jitter of a few
    percent, and pixel noise (std in [0, max_noise]); clamped to [0, 1]."""
    b = images.shape[0]
    out = images
    if max_blur > 0:
        out = _blur(out, torch.rand(b, generator=generator) * max_blur, max_blur)
    if max_sharpen > 0:
        amount = (torch.rand(b, 1, 1, 1, generator=generator) * max_sharpen).to(out.dtype)
        halo_sigma = 0.7 + 0.8 * torch.rand(b, generator=generator)
        out = out + amount * (out - _blur(out, halo_sigma, 1.5))
    gain = 1.0 + 0.1 * (torch.rand(b, 1, 1, 1, generator=generator) - 0.5)
    shift = 0.04 * (torch.rand(b, 1, 1, 1, generator=generator) - 0.5)
    out = out * gain.to(out.dtype) + shift.to(out.dtype)
    if max_noise > 0:
        std = torch.rand(b, 1, 1, 1, generator=generator) * max_noise
        out = out + (std * torch.randn(out.shape, generator=generator)).to(out.dtype)
    return out.clamp(0.0, 1.0)


def train_judge(images: torch.Tensor, attribute_dicts: Sequence[Mapping[str, str]],
                attributes: Mapping[str, Sequence[str]], config: JudgeConfig = JudgeConfig(),
                device: str | torch.device = "cpu", progress: bool = True) -> tuple[AttributeJudge, dict]:
    """Cross-entropy (summed over attributes), Adam with a cosine learning rate, augmented batches."""
    from tqdm.auto import tqdm

    if images.dim() != 4 or images.shape[0] != len(attribute_dicts):
        raise ValueError(f"{tuple(images.shape)} images for {len(attribute_dicts)} attribute dicts; "
                         f"need (N, 3, H, W) and one dict per image")
    if images.shape[0] == 0:
        raise ValueError("no training images for the judge")
    if not bool(torch.isfinite(images).all()):
        raise ValueError("the judge's training images contain NaN/Inf")
    labels = encode_labels(attribute_dicts, attributes)
    torch.manual_seed(config.seed)
    judge = AttributeJudge(attributes, config.image_size, config.width).to(device)
    opt = torch.optim.Adam(judge.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / config.steps)))
    gen = torch.Generator().manual_seed(config.seed)
    losses = []
    judge.train()
    for _ in tqdm(range(config.steps), desc="judge", disable=not progress, mininterval=1.0):
        idx = torch.randint(images.shape[0], (min(config.batch_size, images.shape[0]),), generator=gen)
        batch = augment(images[idx].float(), gen, config.max_blur, config.max_noise, config.max_sharpen).to(device)
        logits = judge(batch)
        target = labels[idx].to(device)
        loss = sum(F.cross_entropy(lg, target[:, a]) for a, lg in enumerate(logits))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    judge.eval().requires_grad_(False)
    return judge, {"loss": losses, "n_train": int(images.shape[0])}


def load_or_train_judge(config: JudgeConfig = JudgeConfig(), attributes: Mapping[str, Sequence[str]] | None = None,
                        checkpoint: str | Path | None = None, progress: bool = True) -> tuple[AttributeJudge, dict]:
    """The judge for ``config``: loaded from ``cache_dir()/judge/<key>.pt`` when there, else
    trained on ``judge_training_set(config)`` (CPU) and saved atomically."""
    from invcap.cache import cached_path
    from invcap.data.embedded import ATTRIBUTES
    from invcap.io import save_torch_atomic

    attributes = dict(ATTRIBUTES if attributes is None else attributes)
    key = config.key(attributes)
    path = Path(checkpoint) if checkpoint is not None else cached_path("judge", "judge", key)
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("key") == key:
            judge = AttributeJudge(attributes, config.image_size, config.width)
            judge.load_state_dict(saved["model"])
            return judge.eval().requires_grad_(False), {"checkpoint": str(path), "reused": True,
                                                        "final_loss": saved["final_loss"]}
    images, combos = judge_training_set(config)
    judge, history = train_judge(images, combos, attributes, config, progress=progress)
    final_loss = float(sum(history["loss"][-50:]) / len(history["loss"][-50:]))
    save_torch_atomic({"key": key, "model": judge.state_dict(), "config": asdict(config),
                       "final_loss": final_loss}, path)
    return judge, {"checkpoint": str(path), "reused": False, "final_loss": final_loss}


def judge_accuracy(judge: AttributeJudge, images: torch.Tensor,
                   attribute_dicts: Sequence[Mapping[str, str]]) -> dict[str, float]:
    """Per-attribute accuracy and "all" (every attribute right), in percent."""
    if images.shape[0] != len(attribute_dicts):
        raise ValueError(f"{images.shape[0]} images but {len(attribute_dicts)} attribute dicts")
    return attribute_accuracy(judge.predict(images), [dict(a) for a in attribute_dicts])


def reconstruction_ceiling(judge: AttributeJudge, autoencoder, images: torch.Tensor,
                           attribute_dicts: Sequence[Mapping[str, str]]) -> dict[str, float]:
    """``judge_accuracy`` of the autoencoder's reconstructions of real ``images``: the best any
    generator that decodes through this autoencoder can score (its ceiling), in percent."""
    from invcap.autoencoder import reconstruct

    return judge_accuracy(judge, reconstruct(autoencoder, images), attribute_dicts)
