"""The non-invertible baselines a user would pick instead of an invertible network, trained on the
same latents and caption embeddings and scored by the same code (``invcap.evaluation``).

Each is a complete text <-> image model with the interface of ``invcap.methods.TrainedMethod``
that evaluation uses: ``name``, ``samples``, ``caption(latents)`` (image -> caption embedding),
``invert(caption_embeddings, samples, seed)`` (caption -> image latents, (N, S, d)) and
``project(latents)``.

- ``LeastSquaresModel``: two ridge regressions (``invcap.captioning.fit_least_squares``),
  caption -> latent and latent -> caption.
- ``TwoNetworks``: "two dedicated networks": an MLP caption -> latent trained only for
  generation (plain MSE), with the invertible network's parameter count, plus an MLP
  latent -> caption for the captioning columns (MSE, plus the InfoNCE term when the invertible
  method it is compared with has one). ``train_mlp`` trains either, cached by ``cache_key``.
- ``NearestNeighbour``: a caption -> the latent of the training image whose caption is closest
  (cosine); an image -> the mean caption of the closest training latent. It cannot draw an
  unseen combination: it shows what retrieval alone gives.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from invcap import losses, optim
from invcap.cache import cache_key, cached_path
from invcap.captioning import caption_targets, check_pair, fit_least_squares
from invcap.io import save_torch_atomic
from invcap.linalg import most_similar

__all__ = ["LeastSquaresModel", "MLPConfig", "MLP", "mlp_width_for", "train_mlp", "TwoNetworks", "NearestNeighbour",
           "inn_parameter_count"]


def _copies(latents: torch.Tensor, samples: int) -> torch.Tensor:
    return latents[:, None, :].expand(latents.shape[0], samples, latents.shape[1]).clone()


def _check_captions(caption_embeddings: torch.Tensor, width: int) -> torch.Tensor:
    if caption_embeddings.dim() != 2 or caption_embeddings.shape[1] != width:
        raise ValueError(f"caption_embeddings must be (N, {width}), got {tuple(caption_embeddings.shape)}")
    return caption_embeddings


def inn_parameter_count(features: int, depth: int) -> int:
    """Trainable parameters of an ``InvertibleMLP`` with a fixed diagonal: per layer the strictly
    lower and upper triangles and the bias."""
    return depth * (features * (features - 1) + features)


# --- least squares -----------------------------------------------------------------------------

@dataclass
class LeastSquaresModel:
    """caption -> latent and latent -> caption, each a ridge regression fitted on the train split."""

    to_latent: Any
    to_caption: Any
    name: str = "least squares"
    samples: bool = False

    @classmethod
    def fit(cls, latents: torch.Tensor, caption_embeddings: torch.Tensor) -> "LeastSquaresModel":
        caption_embeddings = check_pair(latents, caption_embeddings)
        n, c, d = caption_embeddings.shape
        # every caption a row: caption j of image i -> latent i
        to_latent = fit_least_squares(caption_embeddings.reshape(n * c, d), latents.repeat_interleave(c, dim=0))
        return cls(to_latent, fit_least_squares(latents, caption_embeddings))

    def project(self, latents: torch.Tensor) -> torch.Tensor:
        return latents

    @torch.no_grad()
    def caption(self, latents: torch.Tensor) -> torch.Tensor:
        return self.to_caption(latents.float()).float()

    @torch.no_grad()
    def invert(self, caption_embeddings: torch.Tensor, samples: int = 1, seed: int = 0) -> torch.Tensor:
        y = _check_captions(caption_embeddings, self.to_latent.weight.shape[0])
        return _copies(self.to_latent(y.float()).float(), samples)


# --- MLPs --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MLPConfig:
    """An MLP regressor's shape and training. ``params`` > 0 sizes its hidden width so that its
    parameter count matches (``mlp_width_for``); ``width`` > 0 sets it directly."""

    hidden_layers: int = 2
    params: int = 0
    width: int = 0
    activation: str = "gelu"
    steps: int = 3000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    contrastive_weight: float = 0.0    # InfoNCE on the output (captioning direction), as methods.Contrastive
    temperature: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("hidden_layers", "steps", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"MLPConfig.{name} must be an int >= 1, got {getattr(self, name)!r}")
        if bool(self.params) == bool(self.width) or min(self.params, self.width) < 0:
            raise ValueError(f"MLPConfig needs exactly one of params > 0 (match a parameter count) or width > 0, "
                             f"got params={self.params}, width={self.width}")
        if self.activation not in ("gelu", "relu"):
            raise ValueError(f"activation must be 'gelu' or 'relu', got {self.activation!r}")
        if not (self.lr > 0) or self.weight_decay < 0 or self.contrastive_weight < 0 or not (self.temperature > 0):
            raise ValueError(f"MLPConfig needs lr > 0, weight_decay >= 0, contrastive_weight >= 0, temperature > 0: {self}")


def mlp_width_for(params: int, features: int, hidden_layers: int) -> int:
    """The hidden width h whose MLP features -> h (-> h)* -> features has the parameter count closest
    to ``params``: (features + 1) h + (hidden_layers - 1)(h + 1) h + (h + 1) features."""
    def count(h: int) -> int:
        return (features + 1) * h + (hidden_layers - 1) * (h + 1) * h + (h + 1) * features

    if params < count(1):
        raise ValueError(f"{params} parameters are fewer than the smallest such MLP ({count(1)})")
    if hidden_layers == 1:
        h = (params - features) / (2 * features + 1)
    else:  # solve (L-1) h^2 + (2 d + L) h + d - params = 0 for h
        a, b, c = hidden_layers - 1, 2 * features + hidden_layers, features - params
        h = (-b + math.sqrt(b * b - 4 * a * c)) / (2 * a)
    return min((max(1, math.floor(h)), max(1, math.ceil(h))), key=lambda w: abs(count(w) - params))


class MLP(nn.Module):
    """features -> width (-> width)* -> features, GELU or ReLU between the linear layers."""

    def __init__(self, features: int, width: int, hidden_layers: int, activation: str = "gelu") -> None:
        super().__init__()
        act = nn.GELU if activation == "gelu" else nn.ReLU
        sizes = [features] + [width] * hidden_layers
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), act()]
        layers.append(nn.Linear(sizes[-1], features))
        self.body = nn.Sequential(*layers)
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _mlp_step_batch(x: torch.Tensor, y: torch.Tensor, index: torch.Tensor, which: torch.Tensor) -> tuple:
    """One batch: the sampled caption of each image on whichever side holds several captions."""
    xb = x[index, which] if x.dim() == 3 else x[index]
    yb = y[index, which] if y.dim() == 3 else y[index]
    return xb, yb


def train_mlp(inputs: torch.Tensor, targets: torch.Tensor, config: MLPConfig, checkpoint: bool | Path = True,
              progress: bool = False, name: str = "mlp") -> tuple[MLP, dict[str, list[float]]]:
    """An MLP from ``inputs`` to ``targets`` by MSE (+ InfoNCE), Adam(W) with a cosine learning rate.
    Either side may be (N, C, d), several captions per image: each step draws one per image, as
    ``train_captioning`` does. Cached under ``cache_dir()/baselines/`` by ``cache_key`` over the
    config, the exact tensors and this training code."""
    from invcap.progress import progress as progress_bar

    n = inputs.shape[0]
    if targets.shape[0] != n or inputs.shape[-1] != targets.shape[-1]:
        raise ValueError(f"inputs {tuple(inputs.shape)} and targets {tuple(targets.shape)} must pair row by row "
                         f"and share the width")
    features = inputs.shape[-1]
    width = config.width or mlp_width_for(config.params, features, config.hidden_layers)
    path = None
    if checkpoint is True:
        key = cache_key(config, [inputs, targets], (MLP, _mlp_step_batch, train_mlp, losses.info_nce, optim, "mlp-1"))
        path = cached_path("baselines", name, key)
    elif checkpoint:
        path = Path(checkpoint)
    torch.manual_seed(config.seed)
    net = MLP(features, width, config.hidden_layers, config.activation)
    if path is not None and path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        net.load_state_dict(saved["model"])
        return net.eval(), saved["history"]
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    sched = optim.cosine_schedule(opt, config.steps)
    gen = torch.Generator().manual_seed(config.seed)
    x, y = inputs.float(), targets.float()
    captions = (x if x.dim() == 3 else y).shape[1] if max(x.dim(), y.dim()) == 3 else 1
    history: dict[str, list[float]] = {"loss": []}
    net.train()
    for _ in progress_bar(range(config.steps), desc=name, unit="step", disable=not progress):
        index = torch.randint(n, (min(config.batch_size, n),), generator=gen)
        which = torch.randint(captions, (index.shape[0],), generator=gen)
        xb, yb = _mlp_step_batch(x, y, index, which)
        out = net(xb)
        loss = torch.mean((out - yb) ** 2)
        if config.contrastive_weight > 0:
            loss = loss + config.contrastive_weight * losses.info_nce(out, yb, config.temperature)
        if not bool(torch.isfinite(loss)):
            raise ValueError(f"{name}: the loss became non-finite at step {len(history['loss'])}; lower the lr")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        history["loss"].append(float(loss.detach()))
    net.eval()
    if path is not None:
        save_torch_atomic({"model": net.state_dict(), "history": history, "config": asdict(config)}, path)
    return net, history


@dataclass
class TwoNetworks:
    """Two dedicated MLPs: ``generator`` caption -> latent, ``captioner`` latent -> caption."""

    generator: MLP
    captioner: MLP
    configs: dict[str, MLPConfig] = field(default_factory=dict)
    name: str = "two networks (MLPs)"
    samples: bool = False

    @classmethod
    def train(cls, latents: torch.Tensor, caption_embeddings: torch.Tensor, generator: MLPConfig,
              captioner: MLPConfig, progress: bool = False) -> "TwoNetworks":
        caption_embeddings = check_pair(latents, caption_embeddings)
        gen, _ = train_mlp(caption_embeddings, latents, generator, progress=progress, name="mlp-generator")
        cap, _ = train_mlp(latents, caption_embeddings, captioner, progress=progress, name="mlp-captioner")
        return cls(gen, cap, {"generator": generator, "captioner": captioner})

    def project(self, latents: torch.Tensor) -> torch.Tensor:
        return latents

    @torch.no_grad()
    def caption(self, latents: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.captioner(c.float()) for c in latents.split(4096)])

    @torch.no_grad()
    def invert(self, caption_embeddings: torch.Tensor, samples: int = 1, seed: int = 0) -> torch.Tensor:
        y = _check_captions(caption_embeddings, self.generator.features)
        return _copies(torch.cat([self.generator(c.float()) for c in y.split(4096)]), samples)


# --- nearest neighbour -----------------------------------------------------------------------

@dataclass
class NearestNeighbour:
    """Retrieval as generation: the training latent of the closest training caption (cosine), and
    as captioning: the mean caption of the closest training latent (cosine, centred latents)."""

    latents: torch.Tensor              # (N, d) training latents
    caption_embeddings: torch.Tensor   # (N, C, d)
    name: str = "nearest neighbour"
    samples: bool = False

    @classmethod
    def fit(cls, latents: torch.Tensor, caption_embeddings: torch.Tensor) -> "NearestNeighbour":
        return cls(latents.float(), check_pair(latents, caption_embeddings).float())

    def project(self, latents: torch.Tensor) -> torch.Tensor:
        return latents

    @torch.no_grad()
    def caption(self, latents: torch.Tensor) -> torch.Tensor:
        centre = self.latents.mean(dim=0)
        nearest = most_similar(latents.float() - centre, self.latents - centre)   # blocks: bounded memory
        return caption_targets(self.caption_embeddings)[nearest]

    @torch.no_grad()
    def invert(self, caption_embeddings: torch.Tensor, samples: int = 1, seed: int = 0) -> torch.Tensor:
        n, c, d = self.caption_embeddings.shape
        y = _check_captions(caption_embeddings, d)
        # blocks of queries against all N * C training captions (145k on Flickr30k): bounded memory
        nearest = most_similar(y.float(), self.caption_embeddings.reshape(n * c, d))
        return _copies(self.latents[nearest // c], samples)
