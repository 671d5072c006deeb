"""Methods that close the inversion gap (notebook 05). Every one is the same single
``InvertibleMLP``, trained by ``invcap.captioning.train_captioning``, used forward for captioning
and backward for generation; they differ only in configuration and in the loss *terms* added to
the paper's forward MSE. A method is a name, a few ``CaptioningConfig`` overrides (depth, a
learnable bounded diagonal) and a tuple of terms, each a small dataclass with a weight:

- ``Inverse``: ||f^-1(y_caption) - z_image||^2, so that *real* caption embeddings, not only f's
  own predictions, invert onto image latents. With ``image_rank`` = r > 0 the image latents are
  projected onto their r principal directions (fitted on the training latents) on the way into f,
  and f^-1's output the same way on the way to the decoder; the term is then measured only inside
  that subspace, so f^-1 may send what captions vary in and images do not (wording) into the
  d - r free directions, which the decoder never sees.
- ``Contrastive``: InfoNCE on the forward output, picking an image's own caption among the batch's
  by the cosine similarity of f(z) to them. The inverse term fixes where f^-1 sends captions, not
  where f puts its prediction inside the set of captions that invert to z; this term puts it where
  caption retrieval (notebook 03's metric) looks.
- ``Spread``: the singular-value spread of every layer (``invcap.losses``), a conditioning control
  that bounds how much f^-1 can amplify the gap y_pred -> y_caption.
- latent padding (Ardizzone et al., ICLR 2019), ``latent_dims`` = m > 0: caption embeddings are
  rotated onto their principal directions; the network's first d - m outputs regress the first
  d - m rotated coordinates and its last m outputs are a latent trained towards N(0, I)
  (``LatentPrior``, an MMD); ``PaddedInverse`` rebuilds the image latent from [caption, f(x)_z] and
  ``PriorInverse`` from [caption, z ~ N(0, I)]. Generation draws z, so one caption gives many images
  that differ in what it does not say.

Methods no longer in the registry, and why (numbers from the 750-step run of the commit before
this layout): ``conditioned`` (forward MSE with conditioning control only) was dominated by
``paper`` on every column (generation at chance, 0.4 / 1.3 % all-correct; R@1 31.5 vs 33.1);
``bidirectional+conditioned`` was dominated by ``bidirectional+projected+contrastive+shallow``
on every goal column (98.5 / 80.1 % vs 98.9 / 86.0 %, R@1 14.4 vs 83.3). Four knobs that no
registered method used (a whitened-MMD condition, a detached latent, a noisy-caption inverse
loss and its noise level) are gone with them.

``train_method`` caches every trained network under ``cache_dir()/methods/<name>-<key>.pt``,
the key (``invcap.cache.cache_key``) covering the method, the training configuration, the exact
training tensors and the source of the training code, so a rerun trains nothing and an edit to
the training code retrains.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

import torch

from invcap import captioning, inn, losses
from invcap.cache import cache_key, cached_path
from invcap.captioning import CaptioningConfig, build_network, caption_targets, check_pair, train_captioning
from invcap.inn import InvertibleMLP
from invcap.linalg import Principal, principal_directions

__all__ = ["Batch", "Term", "Inverse", "Contrastive", "Spread", "LatentPrior", "PaddedInverse", "PriorInverse",
           "TERMS", "Method", "METHODS", "FORWARD_ONLY", "method", "MethodLoss", "TrainedMethod", "train_method",
           "method_key", "divergence", "parameter_count", "project_onto"]


# --- loss terms ------------------------------------------------------------------------------

@dataclass
class Batch:
    """What a term sees at one training step. ``z``: image latents (projected when the method
    has an image subspace); ``y``: caption targets (rotated when it pads a latent);
    ``prediction``: f(z) with its graph; ``caption_dims``: the outputs that regress captions."""

    net: InvertibleMLP
    z: torch.Tensor
    y: torch.Tensor
    prediction: torch.Tensor
    caption_dims: int
    image_basis: torch.Tensor | None = None   # (d, r) orthonormal columns: the image subspace
    factors: Any = None                        # the step's shared L/U factors (inn), when the trainer has them

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """f^-1(y), reusing the step's factors when there are some."""
        return self.net.inverse(y) if self.factors is None else self.net.inverse(y, factors=self.factors)


@dataclass(frozen=True)
class Term:
    """One loss term: ``weight * value(batch)``. ``latent``: needs latent padding (True), forbids
    it (False) or works either way (None)."""

    weight: float = 1.0
    latent: ClassVar[bool | None] = None

    def __post_init__(self) -> None:
        if not (self.weight >= 0) or not math.isfinite(self.weight):
            raise ValueError(f"{type(self).__name__}.weight must be a finite number >= 0, got {self.weight}")

    def value(self, b: Batch) -> torch.Tensor:  # pragma: no cover - every term overrides it
        raise NotImplementedError

    def as_dict(self) -> dict[str, Any]:
        return {"term": type(self).__name__, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class Inverse(Term):
    """||f^-1(y) - z||^2, mean per coordinate; inside the image subspace when there is one."""

    latent: ClassVar[bool | None] = False

    def value(self, b: Batch) -> torch.Tensor:
        return losses.projected_mse(b.inverse(b.y) - b.z, b.image_basis)


@dataclass(frozen=True)
class Contrastive(Term):
    """InfoNCE of f(z) against the batch's captions (their caption part), at ``temperature``."""

    weight: float = 0.01
    temperature: float = 0.05

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.temperature > 0):
            raise ValueError(f"Contrastive.temperature must be > 0 (it divides the cosine similarities), "
                             f"got {self.temperature}")

    def value(self, b: Batch) -> torch.Tensor:
        k = b.caption_dims
        return losses.info_nce(b.prediction[:, :k], b.y[:, :k], self.temperature)


@dataclass(frozen=True)
class Spread(Term):
    """Sum over layers of the singular-value spread of W (0 for scaled orthogonal matrices)."""

    weight: float = 1e-3

    def value(self, b: Batch) -> torch.Tensor:
        weights = [layer.weight for layer in b.net.linears] if b.factors is None else [f.weight for f in b.factors]
        return sum(losses.singular_value_spread(w, layer.log_abs_det()) for w, layer in zip(weights, b.net.linears))


@dataclass(frozen=True)
class LatentPrior(Term):
    """MMD between the padded latent outputs f(x)_z and samples of N(0, I)."""

    latent: ClassVar[bool | None] = True

    def value(self, b: Batch) -> torch.Tensor:
        latent = b.prediction[:, b.caption_dims:]
        return losses.mmd(latent, torch.randn_like(latent))


@dataclass(frozen=True)
class PaddedInverse(Term):
    """||f^-1([y_caption, f(x)_z]) - x||^2: the image rebuilt from its caption and its own latent."""

    latent: ClassVar[bool | None] = True

    def value(self, b: Batch) -> torch.Tensor:
        k = b.caption_dims
        return torch.mean((b.inverse(torch.cat([b.y[:, :k], b.prediction[:, k:]], dim=1)) - b.z) ** 2)


@dataclass(frozen=True)
class PriorInverse(Term):
    """||f^-1([y_caption, z ~ N(0, I)]) - x||^2: keeps what the caption says in y, so that a
    sampled z cannot change it."""

    latent: ClassVar[bool | None] = True

    def value(self, b: Batch) -> torch.Tensor:
        k = b.caption_dims
        sampled = torch.randn_like(b.prediction[:, k:])
        return torch.mean((b.inverse(torch.cat([b.y[:, :k], sampled], dim=1)) - b.z) ** 2)


TERMS: dict[str, type[Term]] = {t.__name__: t for t in (Inverse, Contrastive, Spread, LatentPrior, PaddedInverse,
                                                      PriorInverse)}


def _term_from_dict(entry: Mapping[str, Any]) -> Term:
    entry = dict(entry)
    name = entry.pop("term")
    if name not in TERMS:
        raise ValueError(f"unknown loss term {name!r}; known: {sorted(TERMS)}")
    return TERMS[name](**entry)


# --- methods ---------------------------------------------------------------------------------

_CONFIG_FIELDS = {f.name for f in dataclasses.fields(CaptioningConfig)}
_METHOD_CONFIG = {"depth", "learn_diagonal", "log_scale_bound", "negative_slope", "diagonal", "init_std"}


@dataclass(frozen=True)
class Method:
    """One row of the ablation: loss terms on top of the forward MSE, CaptioningConfig overrides
    that belong to the method (depth, diagonal), an image subspace (``image_rank``) or latent
    padding (``latent_dims``)."""

    name: str
    summary: str
    terms: tuple[Term, ...] = ()
    captioning: Mapping[str, Any] = field(default_factory=dict)
    image_rank: int = 0
    latent_dims: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "terms", tuple(self.terms))
        object.__setattr__(self, "captioning", dict(self.captioning))
        where = f"method {self.name!r}"
        unknown = set(self.captioning) - _METHOD_CONFIG
        if unknown:
            raise ValueError(f"{where}: captioning overrides {sorted(unknown)} are not method settings; allowed: "
                             f"{sorted(_METHOD_CONFIG)} (the inverse loss is the Inverse term; steps, lr and seed "
                             f"are training settings)")
        for name in ("image_rank", "latent_dims"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{where}: {name} must be an int >= 0, got {value!r}")
        if self.image_rank and self.latent_dims:
            raise ValueError(f"{where}: image_rank and latent_dims do not go together")
        kinds = [type(t) for t in self.terms]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"{where}: each loss term may appear once, got {[k.__name__ for k in kinds]}")
        for term in self.terms:
            if not isinstance(term, Term):
                raise ValueError(f"{where}: terms must be Term instances, got {term!r}")
            if term.latent is True and not self.latent_dims:
                raise ValueError(f"{where}: {type(term).__name__} needs latent_dims > 0 (latent padding)")
            if term.latent is False and self.latent_dims:
                raise ValueError(f"{where}: with latent padding the inverse loss is PaddedInverse / PriorInverse "
                                 f"(they need the latent), not {type(term).__name__}")

    def term(self, kind: type[Term]) -> Term | None:
        return next((t for t in self.terms if isinstance(t, kind)), None)

    @property
    def inverse_trained(self) -> bool:
        """True when some term trains the inverse direction (what generation needs)."""
        return any(isinstance(t, (Inverse, PaddedInverse, PriorInverse)) for t in self.terms)

    @property
    def samples(self) -> bool:
        """True when one caption can give several different images."""
        return self.latent_dims > 0

    def reweighted(self, weights: Mapping[str, float] | None = None) -> "Method":
        """The same method with other term weights, by term name (e.g. ``{"Inverse": 3.0}``): how the
        final table tunes a chosen method's weights on validation. ValueError for a term it lacks."""
        if not weights:
            return self
        names = {type(t).__name__ for t in self.terms}
        unknown = set(weights) - names
        if unknown:
            raise ValueError(f"method {self.name!r} has no term {sorted(unknown)} to reweight; its terms: {sorted(names)}")
        return dataclasses.replace(self, terms=tuple(dataclasses.replace(t, weight=float(weights[type(t).__name__]))
                                                     if type(t).__name__ in weights else t for t in self.terms))

    def config(self, **overrides: Any) -> CaptioningConfig:
        clash = set(overrides) & set(self.captioning)
        if clash:
            raise ValueError(f"method {self.name!r} fixes {sorted(clash)}; do not override them")
        unknown = set(overrides) - _CONFIG_FIELDS
        if unknown:
            raise ValueError(f"unknown CaptioningConfig fields {sorted(unknown)}")
        return CaptioningConfig(**{**self.captioning, **overrides})

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "summary": self.summary, "terms": [t.as_dict() for t in self.terms],
                "captioning": dict(self.captioning), "image_rank": self.image_rank, "latent_dims": self.latent_dims}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Method":
        data = dict(data)
        data["terms"] = tuple(_term_from_dict(t) for t in data.get("terms", ()))
        return cls(**data)


_BOUNDED = {"learn_diagonal": True, "log_scale_bound": 1.0}
_PROJECTED = 32
METHODS: dict[str, Method] = {m.name: m for m in [
    Method("paper", "fixed diagonal, forward MSE only (the paper; notebook 03)"),
    Method("paper+contrastive", "the paper's training plus the InfoNCE term (weight 0.01, temperature 0.05): "
           "the control for the forward R@1 of the contrastive methods", (Contrastive(),)),
    Method("bidirectional", "forward MSE + inverse MSE from real caption embeddings", (Inverse(),)),
    # The conditioning control is part of it: without it, a 2-thread run diverged at step ~100
    # (the inverse of sampled z blew up); with the bounded diagonal and the spread penalty it trained.
    Method("bidirectional+latent", "latent padding: the last 8 outputs carry z ~ N(0, I) (MMD); inverse losses "
           "from [caption, f(x)_z] and from [caption, sampled z]; bounded diagonal + spread penalty",
           (Spread(), LatentPrior(), PaddedInverse(), PriorInverse()), _BOUNDED, latent_dims=8),
    Method("bidirectional+projected", "the inverse loss measured in the image latents' 32 principal directions "
           "(latents projected onto them on the way in and out): f^-1 may put what captions vary in and images "
           "do not into the other directions, which the decoder never sees", (Inverse(),), image_rank=_PROJECTED),
    Method("bidirectional+projected+contrastive", "bidirectional+projected plus the InfoNCE term on the forward "
           "output (weight 0.01, temperature 0.05)", (Inverse(), Contrastive()), image_rank=_PROJECTED),
    Method("bidirectional+projected+contrastive+shallow", "bidirectional+projected+contrastive with 4 LU layers "
           "instead of 6", (Inverse(), Contrastive()), {"depth": 4}, image_rank=_PROJECTED),
    # The image subspace caps what f^-1 can draw. Notebook 05's ceiling table (validation splits):
    # the judge reads all four attributes from decoded rank-32 projections of real latents at ~88 %
    # (seen) / ~69 % (unseen), rank-128 ones at ~100 / ~97 % (the full latent: 100 / 97 %). A
    # one-off validation trial of rank 64 (same measurement, not part of any notebook) gave ~99 / ~92 %:
    # it caps unseen combinations at the goal itself, so the wider subspace is the one
    # registered; notebook 05 compares it with rank 32 on validation.
    Method("bidirectional+projected128+contrastive+shallow", "bidirectional+projected+contrastive+shallow with the "
           "inverse loss in the image latents' 128 principal directions instead of 32", (Inverse(), Contrastive()),
           {"depth": 4}, image_rank=128),
]}
# Methods that train only the forward direction: generation by inversion is expected to fail for
# them (notebook 04), so they are no candidates for the best generator.
FORWARD_ONLY = tuple(name for name, m in METHODS.items() if not m.inverse_trained)


def method(name: str) -> Method:
    """The registered method called ``name`` (ValueError listing the names otherwise)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name]


class MethodLoss:
    """The extra loss handed to ``train_captioning``: the sum of the method's weighted terms,
    called as ``loss(net, z, y, prediction)`` with prediction = f(z). ``last`` holds each term's
    unweighted value at the latest call (for the history)."""

    def __init__(self, spec: Method, image_basis: torch.Tensor | None = None) -> None:
        if spec.image_rank and image_basis is None:
            raise ValueError(f"method {spec.name!r} has image_rank={spec.image_rank}: pass the image subspace's "
                             f"basis (image_basis)")
        self.method = spec
        self.image_basis = image_basis
        self.last: dict[str, float] = {}

    def __call__(self, net: InvertibleMLP, z: torch.Tensor, y: torch.Tensor,
                 prediction: torch.Tensor | None = None, factors: Any = None) -> torch.Tensor:
        if prediction is None:
            prediction = net(z) if factors is None else net(z, factors=factors)
        batch = Batch(net, z, y, prediction, net.features - self.method.latent_dims, self.image_basis, factors)
        total = z.new_zeros(())
        for term in self.method.terms:
            value = term.value(batch)
            self.last[type(term).__name__] = float(value.detach())
            total = total + term.weight * value
        return total


# --- a trained method ------------------------------------------------------------------------

def project_onto(space: Principal, x: torch.Tensor, rank: int) -> torch.Tensor:
    """x onto the affine subspace through the mean spanned by the first ``rank`` directions."""
    directions = space.directions[:rank].to(x)
    mean = space.mean.to(x)
    return (x - mean) @ directions.T @ directions + mean


@dataclass
class TrainedMethod:
    """A trained network and what is needed to use it in both directions. ``caption_space``:
    the principal directions of the mean caption embeddings (latent padding only);
    ``image_space``: those of the image latents (``image_rank`` > 0 only)."""

    method: Method
    net: InvertibleMLP
    config: CaptioningConfig
    caption_space: Principal | None = None
    image_space: Principal | None = None
    history: dict[str, list[float]] = field(default_factory=dict)
    checkpoint: Path | None = None

    @property
    def features(self) -> int:
        return self.net.features

    @property
    def name(self) -> str:
        return self.method.name

    @property
    def samples(self) -> bool:
        return self.method.samples

    def project(self, latents: torch.Tensor) -> torch.Tensor:
        """Image latents onto the method's image subspace (unchanged when ``image_rank`` is 0)."""
        if self.image_space is None:
            return latents
        return project_onto(self.image_space, latents, self.method.image_rank)

    @torch.no_grad()
    def caption(self, latents: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
        """Predicted caption embeddings (N, d) in the sentence encoder's space (forward direction)."""
        device = next(self.net.parameters()).device
        latents = self.project(latents.float())
        out = torch.cat([self.net(c.to(device, torch.float32)).cpu() for c in latents.split(batch_size)])
        if self.caption_space is None:
            return out
        k = self.features - self.method.latent_dims
        return (out[:, :k].double() @ self.caption_space.directions[:k] + self.caption_space.mean).float()

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
        if self.caption_space is None:
            x = self.project(self.net.inverse(y.to(device)).cpu())
            return x[:, None, :].expand(n, samples, self.features).clone()
        m = self.method.latent_dims
        coords = self.caption_space.rotate(y)[:, :self.features - m].float()
        latent = temperature * torch.randn(n, samples, m, generator=torch.Generator().manual_seed(seed))
        full = torch.cat([coords[:, None, :].expand(n, samples, coords.shape[1]), latent], dim=2)
        return self.net.inverse(full.reshape(n * samples, -1).to(device)).cpu().reshape(n, samples, -1)

    def state(self) -> dict[str, Any]:
        """Everything needed to rebuild it (``from_state``), as plain tensors and numbers."""
        space = lambda p: None if p is None else {"mean": p.mean, "directions": p.directions, "std": p.std}  # noqa: E731
        return {"method": self.method.as_dict(), "config": self.config.as_dict(), "features": self.features,
                "model": {k: v.detach().cpu() for k, v in self.net.state_dict().items()},
                "caption_space": space(self.caption_space), "image_space": space(self.image_space)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "TrainedMethod":
        spec = Method.from_dict(state["method"])
        config = CaptioningConfig(**{**state["config"], "device": "cpu"})
        net = build_network(int(state["features"]), config)
        net.load_state_dict(state["model"])
        space = lambda s: None if s is None else Principal(s["mean"], s["directions"], s["std"])  # noqa: E731
        return cls(spec, net.eval(), config, space(state.get("caption_space")), space(state.get("image_space")))


# The source that decides a trained method's weights (part of its cache key).
TRAINING_CODE = (captioning, inn, losses, Term, Inverse, Contrastive, Spread, LatentPrior, PaddedInverse, PriorInverse,
                 MethodLoss, principal_directions, project_onto, "methods-format-2")


def method_key(spec: Method, config: CaptioningConfig, latents: torch.Tensor, caption_embeddings: torch.Tensor) -> str:
    """``cache_key`` of a trained method: the method, the config (not the device), the exact
    training tensors and ``TRAINING_CODE``."""
    content = {"method": spec.as_dict(), "config": {k: v for k, v in config.as_dict().items() if k != "device"}}
    return cache_key(content, [latents, caption_embeddings], TRAINING_CODE + (train_method,))


def train_method(spec: Method | str, latents: torch.Tensor, caption_embeddings: torch.Tensor,
                 checkpoint: str | Path | None | bool = True, progress: bool = True,
                 **config_overrides: Any) -> TrainedMethod:
    """Train ``spec`` on (N, d) latents and (N, C, d) caption embeddings with
    ``train_captioning``. ``config_overrides`` (steps, lr, seed, device, ...) go into the
    CaptioningConfig. ``checkpoint=True`` caches under ``cache_dir()/methods/`` by
    ``method_key``; a path uses that file; False/None trains without saving. A loss that turns
    non-finite raises ``ValueError`` (``train_captioning``)."""
    spec = method(spec) if isinstance(spec, str) else spec
    caption_embeddings = check_pair(latents, caption_embeddings)
    config = spec.config(**config_overrides)
    width = latents.shape[1]
    if spec.latent_dims >= width or spec.image_rank >= width:
        raise ValueError(f"method {spec.name!r}: latent_dims={spec.latent_dims} and image_rank={spec.image_rank} "
                         f"must be below the width {width}")
    if checkpoint is True:
        path: Path | None = cached_path("methods", spec.name, method_key(spec, config, latents, caption_embeddings))
    else:
        path = None if checkpoint in (None, False) else Path(checkpoint)
    caption_space = image_space = image_basis = forward_dims = None
    raw = (latents, caption_embeddings)   # the checkpoint's data identity: not the projections below
    targets = caption_embeddings
    if spec.image_rank:
        image_space = principal_directions(latents)
        latents = project_onto(image_space, latents.float(), spec.image_rank)
        image_basis = image_space.directions[:spec.image_rank].T.float()
    if spec.latent_dims:
        caption_space = principal_directions(caption_targets(caption_embeddings))
        targets = caption_space.rotate(caption_embeddings).float()
        forward_dims = width - spec.latent_dims
    extra = MethodLoss(spec, image_basis) if spec.terms else None
    kwargs = {"forward_dims": forward_dims} if forward_dims is not None else {}
    run = train_captioning(latents, targets, config, checkpoint=path, progress=progress, extra_loss=extra,
                           data_identity=raw, **kwargs)
    return TrainedMethod(spec, run.net, config, caption_space, image_space, run.history, path)


# --- diagnostics -----------------------------------------------------------------------------

def divergence(history: Mapping[str, list[float]], window: int = 50, factor: float = 3.0) -> dict[str, Any]:
    """Whether a training run blew up: its loss, averaged over ``window`` steps, ends more than
    ``factor`` times above the lowest such average reached earlier (it rose and did not come back).
    Returns {"diverged", "final", "best", "ratio", "worst_step"}; a history with a non-finite loss
    has diverged. Too short a history (under 2 windows) cannot be judged and has not diverged."""
    loss = torch.tensor(history.get("loss", []), dtype=torch.float64)
    if not bool(torch.isfinite(loss).all()):
        step = int((~torch.isfinite(loss)).nonzero()[0])
        return {"diverged": True, "final": math.nan, "best": math.nan, "ratio": math.inf, "worst_step": step}
    if loss.numel() < 2 * window:
        return {"diverged": False, "final": math.nan, "best": math.nan, "ratio": math.nan, "worst_step": None}
    smooth = torch.nn.functional.avg_pool1d(loss[None, None], window, stride=1)[0, 0]
    final, best = float(smooth[-1]), float(smooth.min())
    ratio = final / best if best > 0 else math.inf
    return {"diverged": bool(ratio > factor), "final": final, "best": best, "ratio": ratio,
            "worst_step": int(smooth.argmax()) + window}


def parameter_count(module: torch.nn.Module) -> int:
    """Trainable parameters (what the baselines' sizes are matched to)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
