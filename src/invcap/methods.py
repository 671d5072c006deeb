"""Methods that close the inversion gap (notebook 05). Every one is the same single
``InvertibleMLP``, trained by ``invcap.captioning.train_captioning``, used forward for captioning
and backward for generation; they differ only in configuration and extra loss terms.

- ``paper``: fixed diagonal, forward MSE only (notebook 03).
- bidirectional (``inverse_weight``): adds ||f^-1(y_caption) - z_image||^2, so that *real* caption
  embeddings, not only f's own predictions, invert onto image latents.
- conditioning control: a learnable diagonal with bounded log-scale (``learn_diagonal``,
  ``log_scale_bound``) and/or ``spread_weight`` * sum over layers of ``singular_value_spread(W)``,
  the log ratio of the arithmetic to the geometric mean of the squared singular values. It is
  >= 0, zero exactly when W is a scaled orthogonal matrix, and cheap (a Frobenius norm and the
  LU determinant, no SVD), so it bounds how much f^-1 can amplify the gap y_pred -> y_caption.
- latent padding (Ardizzone et al., ICLR 2019): ``latent_dims`` = m > 0. Caption embeddings are
  rotated onto their principal directions (``CaptionSpace``, fitted on the training captions);
  the network's first d - m outputs regress the first d - m rotated coordinates, and its last m
  outputs are a latent z trained towards N(0, I) by an inverse-multiquadric MMD. The m caption
  directions of least variance are given up for it. The inverse loss reconstructs the image
  latent from [rotated caption, f(x)_z]; generation inverts [rotated caption, z ~ N(0, I)], so one
  caption gives many images that differ in what it does not say (jitter of position, size, colour).
- image subspace (``image_rank`` = r > 0, ``projected_inverse_weight``): the image latents are
  projected onto their r principal directions (fitted on the training latents) before f, and f^-1's
  output is projected the same way before decoding; the inverse loss is measured only inside that
  subspace. The caption side varies in wording that says nothing about the image; a plain inverse
  loss must map it onto z (forcing f^-1 to average it away), while here f^-1 may send it into the
  d - r free directions, which the decoder never sees.
- forward contrastive term (``contrastive_weight``): InfoNCE on the forward output, the
  cross-entropy of picking an image's own caption among the batch's captions by the cosine
  similarity of f(z) to them, at ``contrastive_temperature``. The inverse losses leave f(z) free to
  land anywhere on the level set of captions that f^-1 sends to z; MSE alone only pulls it towards
  their mean. This term asks f(z) to be closer to its own captions than to anyone else's, which is
  what caption retrieval (notebook 03's metric) measures.

``train_method`` caches every trained network under ``cache_dir()/methods/<name>-<key>.pt``, the
key covering the method, the training configuration and the data, so a rerun trains nothing.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F

from invcap.captioning import CaptioningConfig, build_network, caption_targets, check_pair, train_captioning
from invcap.inn import InvertibleMLP, NetworkFactors
from invcap.io import cache_dir

__all__ = ["Method", "METHODS", "BEST_METHOD", "method", "mmd_inverse_multiquadric", "singular_value_spread", "info_nce",
           "CaptionSpace", "MethodLoss", "TrainedMethod", "train_method", "method_checkpoint_path",
           "default_generator_path", "save_generator", "TextToImage", "generator_parts"]


# --- loss pieces ---------------------------------------------------------------------------

def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # ||a||^2 + ||b||^2 - 2 a.b: one matmul; clamped since rounding can make it slightly negative
    return (a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :] - 2.0 * a @ b.T).clamp_min(0.0)


def mmd_inverse_multiquadric(x: torch.Tensor, y: torch.Tensor,
                             scales: Sequence[float] = (0.05, 0.2, 0.5, 1.0, 2.0)) -> torch.Tensor:
    """Unbiased estimate of MMD^2 between samples x (n, m) and y (k, m) with the kernel
    sum_s c_s / (c_s + ||a - b||^2), c_s = s * m (the squared-distance scale of N(0, I_m) is 2m).

    The inverse multiquadric's heavy tails keep gradients alive for far-apart samples
    (Ardizzone et al. 2019 use it for the same reason). Can be slightly negative (unbiased)."""
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} must be (n, m) and (k, m)")
    n, k = x.shape[0], y.shape[0]
    if n < 2 or k < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples on each side, got {n} and {k}")
    if not scales or any(s <= 0 for s in scales):
        raise ValueError(f"scales must be positive, got {scales}")
    dim = x.shape[1]

    def kernel(d2: torch.Tensor) -> torch.Tensor:
        return sum(s * dim / (s * dim + d2) for s in scales)

    kxx, kyy, kxy = kernel(_squared_distances(x, x)), kernel(_squared_distances(y, y)), kernel(_squared_distances(x, y))
    off_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    off_y = (kyy.sum() - kyy.diagonal().sum()) / (k * (k - 1))
    return off_x + off_y - 2.0 * kxy.mean()


def singular_value_spread(weight: torch.Tensor, log_abs_det: torch.Tensor | None = None) -> torch.Tensor:
    """log(mean_i s_i^2) - mean_i log(s_i^2) for the singular values s_i of a square W.

    Computed as log(||W||_F^2 / n) - (2/n) log|det W| (no SVD); pass ``log_abs_det`` when it is
    known cheaply (an LU layer: sum log|k_i|). >= 0 by AM-GM, 0 iff W is a multiple of an
    orthogonal matrix."""
    if weight.dim() != 2 or weight.shape[0] != weight.shape[1]:
        raise ValueError(f"weight must be a square matrix, got {tuple(weight.shape)}")
    n = weight.shape[0]
    if log_abs_det is None:
        log_abs_det = torch.linalg.slogdet(weight).logabsdet
    return torch.log(weight.pow(2).sum() / n) - 2.0 * log_abs_det / n


def info_nce(prediction: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean cross-entropy of matching row i of ``prediction`` (n, d) to row i of ``targets`` (n, d)
    among all n targets, with logits cos(prediction_i, targets_j) / temperature (InfoNCE, the
    image -> text half of CLIP's loss). log(n) for a prediction that tells nothing apart."""
    if prediction.dim() != 2 or prediction.shape != targets.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and targets {tuple(targets.shape)} must both be (n, d)")
    if prediction.shape[0] < 2:
        raise ValueError("info_nce needs at least 2 pairs (a batch of one has no other caption to tell apart)")
    if not (temperature > 0):
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = F.normalize(prediction, dim=1) @ F.normalize(targets, dim=1).T / temperature
    return F.cross_entropy(logits, torch.arange(prediction.shape[0], device=prediction.device))


@dataclass
class CaptionSpace:
    """An orthonormal rotation of caption embeddings onto their principal directions (decreasing
    variance), fitted in float64 on the mean caption embedding of each training image. Fitted on
    (N, d) image latents it gives their principal directions (``image_rank``)."""

    mean: torch.Tensor      # (d,)
    basis: torch.Tensor     # (d, d), columns = principal directions
    variance: torch.Tensor  # (d,), variance along each direction

    @classmethod
    def fit(cls, caption_embeddings: torch.Tensor) -> "CaptionSpace":
        y = caption_targets(caption_embeddings).double()
        if y.shape[0] < 2:
            raise ValueError("CaptionSpace.fit needs at least 2 images")
        mean = y.mean(dim=0)
        cov = (y - mean).T @ (y - mean) / (y.shape[0] - 1)
        variance, vectors = torch.linalg.eigh(cov)               # ascending
        order = torch.argsort(variance, descending=True)
        vectors = vectors[:, order]
        # A deterministic sign per direction (eigh's is arbitrary): largest entry positive.
        signs = torch.sign(vectors.gather(0, vectors.abs().argmax(dim=0, keepdim=True)))
        return cls(mean.float(), (vectors * signs).float(), variance[order].clamp_min(0).float())

    def rotate(self, y: torch.Tensor) -> torch.Tensor:
        return (y - self.mean.to(y)) @ self.basis.to(y)

    def unrotate(self, coords: torch.Tensor) -> torch.Tensor:
        """Back to caption space from the first ``coords.shape[-1]`` rotated coordinates."""
        k = coords.shape[-1]
        return coords @ self.basis[:, :k].T.to(coords) + self.mean.to(coords)

    def project(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """x onto the affine subspace of the first k principal directions (through the mean)."""
        return self.unrotate(self.rotate(x)[:, :k])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "basis": self.basis, "variance": self.variance}


# --- methods -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Method:
    """One row of the ablation: CaptioningConfig overrides plus the extra loss terms."""

    name: str
    summary: str
    captioning: Mapping[str, Any] = field(default_factory=dict)   # CaptioningConfig overrides
    spread_weight: float = 0.0      # conditioning penalty on every layer's singular-value spread
    latent_dims: int = 0            # latent padding: m outputs carry z ~ N(0, I); 0 = plain bijection
    mmd_weight: float = 0.0         # weight of MMD(f(x)_z, N(0, I))
    padded_inverse_weight: float = 0.0  # weight of ||f^-1([y_caption, f(x)_z]) - x||^2
    mmd_condition_dims: int = 0     # > 0: MMD on (z, top caption coordinates) against (N(0, I), same), which
                                    # asks z to be independent of what the caption says (Ardizzone's L_z)
    detach_latent: bool = False     # feed f(x)_z to the padded inverse without its gradient
    prior_inverse_weight: float = 0.0   # weight of ||f^-1([y_caption, z ~ N(0, I)]) - x||^2: keeps what the
                                        # caption says in y, so that a sampled z cannot change it
    noisy_inverse_weight: float = 0.0   # weight of ||f^-1(y_caption + eps) - z_image||^2, eps ~ N(0, inverse_noise^2 I)
    inverse_noise: float = 0.0          # std of eps per coordinate (caption embeddings have unit norm)
    image_rank: int = 0             # > 0: image latents are projected onto their image_rank principal directions
                                    # (fitted on the training latents) on the way in and out of the network
    projected_inverse_weight: float = 0.0   # weight of ||P f^-1(y_caption) - P z_image||^2, P that projection:
                                            # the other directions of f^-1's output are left free
    contrastive_weight: float = 0.0     # weight of info_nce(f(z), y_caption) over the batch (forward direction)
    contrastive_temperature: float = 0.05   # its temperature (cosine similarities are divided by it)

    def __post_init__(self) -> None:
        if min(self.latent_dims, self.spread_weight, self.mmd_weight, self.padded_inverse_weight,
               self.noisy_inverse_weight, self.inverse_noise, self.image_rank, self.projected_inverse_weight,
               self.contrastive_weight) < 0:
            raise ValueError(f"method {self.name!r}: weights and latent_dims must be >= 0")
        if not (self.contrastive_temperature > 0):
            raise ValueError(f"method {self.name!r}: contrastive_temperature must be > 0 (it divides the cosine "
                             f"similarities), got {self.contrastive_temperature}")
        if self.latent_dims and self.captioning.get("inverse_weight", 0):
            raise ValueError(f"method {self.name!r}: with latent padding the inverse loss is "
                             f"padded_inverse_weight (it needs the latent z), not inverse_weight")
        if self.latent_dims == 0 and (self.mmd_weight or self.padded_inverse_weight or self.mmd_condition_dims
                                      or self.prior_inverse_weight):
            raise ValueError(f"method {self.name!r}: mmd_weight / padded_inverse_weight need latent_dims > 0")
        if bool(self.image_rank) != bool(self.projected_inverse_weight) or (self.image_rank and self.latent_dims):
            raise ValueError(f"method {self.name!r}: image_rank and projected_inverse_weight go together, "
                             f"without latent padding")
        if self.image_rank and self.captioning.get("inverse_weight", 0):
            raise ValueError(f"method {self.name!r}: with image_rank the inverse loss is projected_inverse_weight")

    @property
    def has_extra_terms(self) -> bool:
        """True when training needs ``MethodLoss`` beside train_captioning's own losses."""
        return (self.spread_weight > 0 or self.latent_dims > 0 or self.noisy_inverse_weight > 0 or self.image_rank > 0
                or self.contrastive_weight > 0)

    @property
    def samples(self) -> bool:
        """True when one caption can give several different images."""
        return self.latent_dims > 0

    def config(self, **overrides: Any) -> CaptioningConfig:
        return CaptioningConfig(**{**dict(self.captioning), **overrides})

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["captioning"] = dict(self.captioning)
        return out


_BOUNDED = {"learn_diagonal": True, "log_scale_bound": 1.0}
_PROJECTED = dict(image_rank=32, projected_inverse_weight=1.0)
_CONTRASTIVE = dict(contrastive_weight=1e-2, contrastive_temperature=0.05)
METHODS: dict[str, Method] = {m.name: m for m in [
    Method("paper", "fixed diagonal, forward MSE only (the paper; notebook 03)"),
    Method("conditioned", "forward MSE only, learnable diagonal with |log k| < 1 and a singular-value "
           "spread penalty", dict(_BOUNDED), spread_weight=1e-3),
    Method("bidirectional", "fixed diagonal, forward MSE + inverse MSE from real caption embeddings",
           {"inverse_weight": 1.0}),
    Method("bidirectional+conditioned", "bidirectional + learnable bounded diagonal + spread penalty",
           {"inverse_weight": 1.0, **_BOUNDED}, spread_weight=1e-3),
    # Conditioning control is part of it: without it, a 2-thread run diverged at step ~100 (the inverse
    # of sampled z blows up); with the bounded diagonal and the spread penalty it trains stably.
    Method("bidirectional+latent", "latent padding: the last 8 outputs carry z ~ N(0, I) (MMD); inverse losses "
           "from [caption, f(x)_z] and from [caption, sampled z]; bounded diagonal + spread penalty",
           dict(_BOUNDED), spread_weight=1e-3, latent_dims=8, mmd_weight=1.0, padded_inverse_weight=1.0,
           prior_inverse_weight=1.0),
    Method("bidirectional+projected", "bidirectional, with image latents projected onto their 32 principal "
           "directions and the inverse loss measured in that subspace: f^-1 may put what captions vary in and "
           "images do not (wording) into the other 352 directions, which the decoder never sees",
           **_PROJECTED),
    Method("bidirectional+projected+contrastive", "bidirectional+projected, plus an InfoNCE term on the forward "
           "output (weight 0.01, temperature 0.05): f(z) must pick its own caption out of the batch",
           **_PROJECTED, **_CONTRASTIVE),
    # Shallower: with 4 LU layers instead of 6, f^-1 gets the colour of held-out colour/shape pairs right
    # more often (notebook 05's per-attribute details) and training takes two thirds of the time.
    Method("bidirectional+projected+contrastive+shallow", "bidirectional+projected+contrastive with 4 LU layers "
           "instead of 6", {"depth": 4}, **_PROJECTED, **_CONTRASTIVE),
]}
BEST_METHOD = "bidirectional+projected+contrastive+shallow"  # a fallback name; notebook 05 picks the best by its numbers and saves it


def method(name: str) -> Method:
    """The registered method called ``name`` (ValueError listing the names otherwise)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name]


class MethodLoss:
    """The extra loss handed to ``train_captioning``: spread penalty, and for latent padding the
    MMD and the padded inverse loss, the projected inverse loss, the contrastive term. Called by
    ``train_captioning`` as ``loss(net, z_batch, y_batch, prediction)`` with prediction = f(z_batch);
    ``y_batch`` is in rotated caption coordinates when ``latent_dims > 0``."""

    def __init__(self, method: Method, space: CaptionSpace | None = None,
                 image_space: CaptionSpace | None = None) -> None:
        if method.mmd_condition_dims and space is None:
            raise ValueError("mmd_condition_dims needs the CaptionSpace (its variances whiten the caption coordinates)")
        self.method = method
        self.scale = None if space is None else space.variance[:method.mmd_condition_dims].clamp_min(1e-12).sqrt()
        self.image_basis = None if image_space is None else image_space.basis[:, :method.image_rank]
        if method.image_rank and image_space is None:
            raise ValueError("image_rank needs the image latents' principal directions (image_space)")
        self.last: dict[str, float] = {}

    def __call__(self, net: InvertibleMLP, z: torch.Tensor, y: torch.Tensor,
                 prediction: torch.Tensor | None = None, factors: NetworkFactors | None = None) -> torch.Tensor:
        m = self.method
        if prediction is None:
            prediction = net(z, factors=factors)
        total = z.new_zeros(())
        if m.contrastive_weight > 0:
            k = net.features - m.latent_dims   # the caption part of the output
            contrastive = info_nce(prediction[:, :k], y[:, :k], m.contrastive_temperature)
            total = total + m.contrastive_weight * contrastive
            self.last["contrastive"] = float(contrastive.detach())
        if m.spread_weight > 0:
            weights = [layer.weight for layer in net.linears] if factors is None else [f.weight for f in factors]
            spread = sum(singular_value_spread(w, layer.log_abs_det()) for w, layer in zip(weights, net.linears))
            total = total + m.spread_weight * spread
            self.last["spread"] = float(spread.detach())
        if m.noisy_inverse_weight > 0:
            noisy = y + m.inverse_noise * torch.randn_like(y)
            noisy_mse = torch.mean((net.inverse(noisy, factors=factors) - z) ** 2)
            total = total + m.noisy_inverse_weight * noisy_mse
            self.last["noisy_inverse_mse"] = float(noisy_mse.detach())
        if m.image_rank > 0:
            # z is already projected, so its error within the subspace is all that decodes
            error = (net.inverse(y, factors=factors) - z) @ self.image_basis.to(z)
            projected = error.pow(2).sum(dim=1).mean() / z.shape[1]
            total = total + m.projected_inverse_weight * projected
            self.last["projected_inverse_mse"] = float(projected.detach())
        if m.latent_dims > 0:
            k = net.features - m.latent_dims
            latent = prediction[:, k:]
            if m.mmd_weight > 0:
                prior = torch.randn_like(latent)
                if m.mmd_condition_dims:
                    condition = y[:, :m.mmd_condition_dims] / self.scale.to(y)
                    mmd = mmd_inverse_multiquadric(torch.cat([latent, condition], 1), torch.cat([prior, condition], 1))
                else:
                    mmd = mmd_inverse_multiquadric(latent, prior)
                total = total + m.mmd_weight * mmd
                self.last["mmd"] = float(mmd.detach())
            if m.padded_inverse_weight > 0:
                code = latent.detach() if m.detach_latent else latent
                rebuilt = net.inverse(torch.cat([y[:, :k], code], dim=1), factors=factors)
                inverse_mse = torch.mean((rebuilt - z) ** 2)
                total = total + m.padded_inverse_weight * inverse_mse
                self.last["inverse_mse"] = float(inverse_mse.detach())
            if m.prior_inverse_weight > 0:
                sampled = net.inverse(torch.cat([y[:, :k], torch.randn_like(latent)], dim=1), factors=factors)
                prior_mse = torch.mean((sampled - z) ** 2)
                total = total + m.prior_inverse_weight * prior_mse
                self.last["prior_inverse_mse"] = float(prior_mse.detach())
        return total


# --- a trained method ----------------------------------------------------------------------

@dataclass
class TrainedMethod:
    """A trained network and what is needed to use it in both directions."""

    method: Method
    net: InvertibleMLP
    config: CaptioningConfig
    space: CaptionSpace | None = None      # latent padding only
    history: dict[str, list[float]] = field(default_factory=dict)
    checkpoint: Path | None = None
    image_space: CaptionSpace | None = None    # image_rank > 0 only: principal directions of the image latents

    @property
    def features(self) -> int:
        return self.net.features

    def project(self, latents: torch.Tensor) -> torch.Tensor:
        """Image latents onto the method's image subspace (unchanged when ``image_rank`` is 0)."""
        if self.image_space is None:
            return latents
        return self.image_space.project(latents, self.method.image_rank)

    @torch.no_grad()
    def caption(self, latents: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """Predicted caption embeddings (N, d) in the sentence encoder's space (forward direction)."""
        device = next(self.net.parameters()).device
        latents = self.project(latents.float())
        out = torch.cat([self.net(c.to(device, torch.float32)).cpu() for c in latents.split(batch_size)])
        if self.space is None:
            return out
        return self.space.unrotate(out[:, :self.features - self.method.latent_dims])

    @torch.no_grad()
    def invert(self, caption_embeddings: torch.Tensor, samples: int = 1, seed: int = 0,
               temperature: float = 1.0) -> torch.Tensor:
        """Image latents (N, samples, d) for caption embeddings (N, d). Deterministic methods give
        ``samples`` identical copies; latent padding draws z ~ N(0, temperature^2 I) (seeded)."""
        if caption_embeddings.dim() != 2 or caption_embeddings.shape[1] != self.features:
            raise ValueError(f"caption_embeddings must be (N, {self.features}), got {tuple(caption_embeddings.shape)}")
        if not isinstance(samples, int) or samples < 1:
            raise ValueError(f"samples must be an int >= 1, got {samples!r}")
        if not bool(torch.isfinite(caption_embeddings).all()):
            raise ValueError("caption_embeddings contain NaN/Inf")
        device = next(self.net.parameters()).device
        y = caption_embeddings.float()
        n = y.shape[0]
        if self.space is None:
            x = self.project(self.net.inverse(y.to(device)).cpu())
            return x[:, None, :].expand(n, samples, self.features).clone()
        m = self.method.latent_dims
        coords = self.space.rotate(y)[:, :self.features - m]
        gen = torch.Generator().manual_seed(seed)
        latent = temperature * torch.randn(n, samples, m, generator=gen)
        full = torch.cat([coords[:, None, :].expand(n, samples, coords.shape[1]), latent], dim=2)
        return self.net.inverse(full.reshape(n * samples, -1).to(device)).cpu().reshape(n, samples, -1)

    def state(self) -> dict[str, Any]:
        """Everything needed to rebuild it (``from_state``), as plain tensors and numbers."""
        return {"method": self.method.as_dict(), "config": self.config.as_dict(), "features": self.features,
                "model": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
                "space": None if self.space is None else self.space.state_dict(),
                "image_space": None if self.image_space is None else self.image_space.state_dict()}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "TrainedMethod":
        spec = Method(**state["method"])
        config = CaptioningConfig(**{**state["config"], "device": "cpu"})
        net = build_network(int(state["features"]), config)
        net.load_state_dict(state["model"])
        space = None if state["space"] is None else CaptionSpace(**state["space"])
        image_space = None if state.get("image_space") is None else CaptionSpace(**state["image_space"])
        return cls(spec, net.eval(), config, space, image_space=image_space)


def _data_digest(latents: torch.Tensor, caption_embeddings: torch.Tensor) -> str:
    blob = json.dumps([list(latents.shape), list(caption_embeddings.shape),
                       round(float(latents.double().sum()), 4), round(float(latents.double().abs().sum()), 4),
                       round(float(caption_embeddings.double().sum()), 4)])
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def method_checkpoint_path(spec: Method, config: CaptioningConfig, latents: torch.Tensor,
                           caption_embeddings: torch.Tensor) -> Path:
    """``cache_dir()/methods/<name>-<key>.pt``; the key covers the method, config and data."""
    content = {"method": spec.as_dict(), "config": {k: v for k, v in config.as_dict().items() if k != "device"},
               "data": _data_digest(latents, caption_embeddings)}
    key = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in spec.name)
    return cache_dir() / "methods" / f"{safe}-{key}.pt"


def train_method(spec: Method | str, latents: torch.Tensor, caption_embeddings: torch.Tensor,
                 checkpoint: str | Path | None | bool = True, progress: bool = True,
                 **config_overrides: Any) -> TrainedMethod:
    """Train ``spec`` on (N, d) latents and (N, C, d) caption embeddings with
    ``train_captioning``. ``config_overrides`` (steps, seed, device, ...) go into the
    CaptioningConfig. ``checkpoint=True`` caches under ``method_checkpoint_path``; a path uses
    that file; False/None trains without saving."""
    spec = method(spec) if isinstance(spec, str) else spec
    caption_embeddings = check_pair(latents, caption_embeddings)
    config = spec.config(**config_overrides)
    if spec.latent_dims >= latents.shape[1]:
        raise ValueError(f"latent_dims={spec.latent_dims} must be below the width {latents.shape[1]}")
    if checkpoint is True:
        path: Path | None = method_checkpoint_path(spec, config, latents, caption_embeddings)
    elif checkpoint in (None, False):
        path = None
    else:
        path = Path(checkpoint)
    space, targets, forward_dims, image_space = None, caption_embeddings, None, None
    if spec.image_rank > 0:
        if spec.image_rank >= latents.shape[1]:
            raise ValueError(f"image_rank={spec.image_rank} must be below the width {latents.shape[1]}")
        image_space = CaptionSpace.fit(latents)
        latents = image_space.project(latents.float(), spec.image_rank)
    if spec.latent_dims > 0:
        space = CaptionSpace.fit(caption_embeddings)
        targets = space.rotate(caption_embeddings.float())
        forward_dims = latents.shape[1] - spec.latent_dims
    extra = MethodLoss(spec, space, image_space) if spec.has_extra_terms else None
    kwargs = {"forward_dims": forward_dims} if forward_dims is not None else {}
    run = train_captioning(latents, targets, config, checkpoint=path, progress=progress, extra_loss=extra, **kwargs)
    return TrainedMethod(spec, run.net, config, space, run.history, path, image_space)


# --- text -> image, packaged for `python -m invcap generate` --------------------------------

GENERATOR_FORMAT = 1


def default_generator_path() -> Path:
    """Where notebook 05 saves the best method for the command line."""
    return cache_dir() / "generator" / "best.pt"


def save_generator(path: str | Path, trained: TrainedMethod, autoencoder: torch.nn.Module,
                   autoencoder_config: Mapping[str, Any], sentence_model: str, info: Mapping[str, Any] | None = None) -> Path:
    """One self-contained file: the trained method, the decoder's weights and configuration
    (``AutoencoderConfig`` fields) and the sentence model's name; written atomically."""
    from invcap.io import save_torch_atomic

    bundle = {"format": GENERATOR_FORMAT, "method": trained.state(),
              "autoencoder": {k: v.detach().cpu() for k, v in autoencoder.state_dict().items()},
              "autoencoder_config": {k: list(v) if isinstance(v, tuple) else v for k, v in autoencoder_config.items()},
              "sentence_model": sentence_model, "info": dict(info or {})}
    return save_torch_atomic(bundle, path)


@dataclass
class TextToImage:
    """caption -> sentence embedding -> f^-1 -> decoder, from a ``save_generator`` file."""

    trained: TrainedMethod
    autoencoder: torch.nn.Module
    sentence_model: str
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> "TextToImage":
        from invcap.autoencoder import AutoencoderConfig

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no generator checkpoint at {path}; `make paper` creates it (notebook 05 "
                                    f"saves the best method there), or pass --checkpoint PATH")
        try:
            bundle = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise ValueError(f"cannot read generator checkpoint {path} ({type(error).__name__}: {error}); "
                             f"recreate it with `make paper`") from error
        if not isinstance(bundle, dict) or bundle.get("format") != GENERATOR_FORMAT:
            raise ValueError(f"{path} is not an invcap generator checkpoint (format {GENERATOR_FORMAT}); "
                             f"recreate it with `make paper`")
        config = dict(bundle["autoencoder_config"])
        config["widths"] = tuple(config["widths"])
        autoencoder = AutoencoderConfig(**config).model()
        autoencoder.load_state_dict(bundle["autoencoder"])
        return cls(TrainedMethod.from_state(bundle["method"]), autoencoder.eval(), bundle["sentence_model"],
                   dict(bundle.get("info", {})))

    @torch.no_grad()
    def generate(self, captions: Sequence[str], samples: int = 1, seed: int = 0,
                 encoder=None) -> torch.Tensor:
        """Images (N, samples, 3, H, W) in [0, 1] for N captions. ``encoder``: a
        ``SentenceEncoder`` of ``self.sentence_model`` (one is made when None)."""
        from invcap.inversion import check_captions, check_images

        captions = check_captions(captions)
        if encoder is None:
            from invcap.text import SentenceEncoder

            encoder = SentenceEncoder(self.sentence_model, device="cpu", cache=False)
        embeddings = encoder.encode(captions, progress=False)
        latents = self.trained.invert(embeddings, samples=samples, seed=seed)
        images = self.autoencoder.decode(latents.reshape(-1, latents.shape[-1]))
        images = check_images(images, "generated images").clamp(0, 1)
        return images.reshape(len(captions), samples, *images.shape[1:])


def generator_parts(features) -> tuple[torch.nn.Module, dict[str, Any], str]:
    """(autoencoder, its ``AutoencoderConfig`` fields, sentence model name) of a ``Features``
    record from ``invcap.features.load_features``: what ``save_generator`` needs beside the method."""
    meta_path = Path(features.info["autoencoder_checkpoint"]).with_suffix(".json")
    if not meta_path.is_file():
        raise FileNotFoundError(f"the autoencoder's metadata {meta_path} is missing; rerun notebook 02 (make paper)")
    config = json.loads(meta_path.read_text())["config"]
    return features.autoencoder, config, features.info["model"]
