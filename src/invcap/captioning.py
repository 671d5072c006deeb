"""Captioning training (paper section 3.2): an ``InvertibleMLP`` f maps a frozen image latent z
to a caption embedding y, trained with MSE on f(z) - y; everything else stays frozen.

Target when an image has several captions (``CaptioningConfig.target``):

- ``"sample"`` (default): each step draws, for every image of the batch, one of its captions
  uniformly at random. f then regresses onto the mean of the caption embeddings, which is the
  MSE-optimal prediction, while seeing every caption.
- ``"mean"``: the target is the mean of the image's caption embeddings, every step.

``inverse_weight > 0`` adds ||f^-1(y_caption) - z||^2 (mean over entries) so that the inverse
direction is trained too (issue 6); 0 is the paper. ``extra_loss(net, z, y, prediction)`` is a
hook for further terms; ``prediction`` is the step's f(z) (with its graph), so a term on the
forward output costs no second pass through the network. A hook with a ``factors`` keyword also
gets the step's ``net.factors()``, so its own passes reuse the L and U this step already built.

Checkpoints (``checkpoint=path``) hold the state dict, optimizer and RNG state, the history, the
step reached, the config and a fingerprint of the training data; they are written atomically
every ``checkpoint_every`` steps and at the end. On a rerun the checkpoint is resumed (or, when
complete, loaded without training). A checkpoint written with another configuration, other data
or another ``extra_loss`` raises ``ValueError`` naming the difference: delete the file or use
another path (``checkpoint_path`` keys the name by the config).
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from invcap import inn, optim
from invcap.cache import cache_key, cached_path, tensor_digest
from invcap.inn import InvertibleMLP, in_precision
from invcap.io import save_torch_atomic
from invcap.linalg import label_codes
from invcap.progress import progress as progress_bar
from invcap.repro import resolve_device

__all__ = ["CaptioningConfig", "CaptioningRun", "build_network", "train_captioning", "predict",
           "invert", "checkpoint_path", "caption_targets", "LeastSquares", "fit_least_squares",
           "check_pair", "load_network", "embedding_errors", "label_mean_predictor", "TRAINING_CODE"]

ExtraLoss = Callable[[InvertibleMLP, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
TARGETS = ("sample", "mean")
LR_SCHEDULES = ("constant", "cosine")
CHECKPOINT_FORMAT = 1


@dataclass
class CaptioningConfig:
    depth: int = 6
    negative_slope: float = 0.5
    diagonal: float = 1.0
    learn_diagonal: bool = False
    log_scale_bound: float | None = None
    target: str = "sample"        # "sample": one of an image's captions per step; or "mean"
    inverse_weight: float = 0.0   # weight of ||f^-1(y_caption) - z_image||^2 (0 = the paper)
    steps: int = 3000
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    lr_schedule: str = "cosine"   # "cosine": decay to 0 over `steps`; "constant"
    final_activation: bool = False
    init_std: float = 0.0

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {self.target!r}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, got {self.lr_schedule!r}")
        for name in ("depth", "steps", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not (self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not (self.inverse_weight >= 0):
            raise ValueError(f"inverse_weight must be >= 0, got {self.inverse_weight}")

    def as_dict(self) -> dict:
        return asdict(self)

    def key(self, data=None) -> str:
        """``cache_key`` of everything that changes the trained weights: the config (not the
        device), the data (e.g. the training tensors, hashed exactly) and the source of
        ``TRAINING_CODE`` (this module, ``invcap.inn``, ``invcap.optim``)."""
        content = {k: v for k, v in self.as_dict().items() if k != "device"}
        return cache_key(content, data, TRAINING_CODE)


@dataclass
class CaptioningRun:
    net: InvertibleMLP
    history: dict[str, list[float]]   # "loss", "mse" (+ "inverse_mse", "extra") per step; "val_step"/"val_mse"
    config: CaptioningConfig
    device: torch.device
    steps_done: int = 0
    resumed_from: int = 0             # step the run started from (0 = from scratch)
    checkpoint: Path | None = None
    notes: list[str] = field(default_factory=list)


# --- input checks ------------------------------------------------------------------------

def check_pair(latents: torch.Tensor, caption_embeddings: torch.Tensor) -> torch.Tensor:
    """Validate (N, d) latents against (N, C, d) or (N, d) caption embeddings; returns the
    embeddings as (N, C, d)."""
    for name, t in (("latents", latents), ("caption_embeddings", caption_embeddings)):
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise ValueError(f"{name} has dtype {t.dtype}; use float32 or float64")
    if latents.dim() != 2:
        raise ValueError(f"latents must be (N, d), got shape {tuple(latents.shape)}")
    if caption_embeddings.dim() == 2:
        caption_embeddings = caption_embeddings[:, None, :]
    if caption_embeddings.dim() != 3:
        raise ValueError(f"caption_embeddings must be (N, captions, d) or (N, d), got shape "
                         f"{tuple(caption_embeddings.shape)}")
    if latents.shape[0] != caption_embeddings.shape[0]:
        raise ValueError(f"{latents.shape[0]} latents but {caption_embeddings.shape[0]} images of caption "
                         f"embeddings: they must be paired row by row")
    if latents.shape[0] == 0:
        raise ValueError("no training pairs: latents is empty")
    if latents.shape[1] != caption_embeddings.shape[2]:
        raise ValueError(f"latent dimension {latents.shape[1]} != caption embedding dimension "
                         f"{caption_embeddings.shape[2]}: the invertible network is square, so the "
                         f"autoencoder latent must have the sentence encoder's dimension (paper, section 3.2)")
    for name, t in (("latents", latents), ("caption_embeddings", caption_embeddings)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN/Inf values")
    return caption_embeddings


def caption_targets(caption_embeddings: torch.Tensor) -> torch.Tensor:
    """The mean caption embedding of every image, (N, d), the MSE-optimal target."""
    return caption_embeddings.mean(dim=1) if caption_embeddings.dim() == 3 else caption_embeddings


# --- network and checkpoints ---------------------------------------------------------------

def build_network(features: int, config: CaptioningConfig) -> InvertibleMLP:
    return InvertibleMLP(features, config.depth, negative_slope=config.negative_slope,
                         diagonal=config.diagonal, learn_diagonal=config.learn_diagonal,
                         final_activation=config.final_activation,
                         log_scale_bound=config.log_scale_bound, init_std=config.init_std)


def checkpoint_path(name: str, config: CaptioningConfig, data=None) -> Path:
    """``cache_dir()/checkpoints/<name>-<config.key(data)>.pt``: one file per configuration,
    training data (pass the training tensors) and version of the training code."""
    return cached_path("checkpoints", name, config.key(data))


def _fingerprint(latents: torch.Tensor, caption_embeddings: torch.Tensor) -> dict:
    # the one data fingerprint of the package: exact bytes, shapes and dtypes
    return {"latents_shape": list(latents.shape), "captions_shape": list(caption_embeddings.shape),
            "digest": tensor_digest(latents, caption_embeddings)}


def _loss_name(extra_loss: ExtraLoss | None) -> str | None:
    if extra_loss is None:
        return None
    return f"{getattr(extra_loss, '__module__', '?')}.{getattr(extra_loss, '__qualname__', type(extra_loss).__name__)}"


def _check_compatible(saved: dict, config: CaptioningConfig, fingerprint: dict, loss_name: str | None,
                      path: Path) -> None:
    ours = {k: v for k, v in config.as_dict().items() if k != "device"}
    theirs = {k: v for k, v in saved.get("config", {}).items() if k != "device"}
    diff = sorted(k for k in set(ours) | set(theirs) if ours.get(k, "<missing>") != theirs.get(k, "<missing>"))
    if diff:
        detail = ", ".join(f"{k}: checkpoint {theirs.get(k, '<missing>')!r} vs now {ours.get(k, '<missing>')!r}"
                           for k in diff)
        raise ValueError(f"checkpoint {path} was written with another configuration ({detail}); "
                         f"delete it or pass another checkpoint path (see checkpoint_path())")
    if saved.get("data") != fingerprint:
        raise ValueError(f"checkpoint {path} was trained on other data ({saved.get('data')} vs {fingerprint}); "
                         f"delete it or pass another checkpoint path")
    if saved.get("extra_loss") != loss_name:
        raise ValueError(f"checkpoint {path} was trained with extra_loss={saved.get('extra_loss')!r}, "
                         f"now {loss_name!r}; delete it or pass another checkpoint path")


def _load_checkpoint(path: Path) -> dict:
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file
        raise ValueError(f"cannot read checkpoint {path} ({type(error).__name__}: {error}); delete it to retrain") from error
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an invcap captioning checkpoint (format {CHECKPOINT_FORMAT}); delete it to retrain")
    return saved


def load_network(path: str | Path, features: int | None = None, device: str = "cpu") -> tuple[InvertibleMLP, CaptioningConfig]:
    """Rebuild a trained network from a checkpoint written by ``train_captioning``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; run train_captioning first")
    saved = _load_checkpoint(path)
    config = CaptioningConfig(**saved["config"])
    width = saved["data"]["latents_shape"][1]
    if features is not None and features != width:
        raise ValueError(f"checkpoint {path} is for {width} features, not {features}")
    net = build_network(width, config)
    net.load_state_dict(saved["model"])
    return net.to(resolve_device(device)).eval(), config


# --- training ------------------------------------------------------------------------------

def _lr_factor(config: CaptioningConfig, step: int) -> float:
    return 1.0 if config.lr_schedule == "constant" else optim.cosine_factor(step, config.steps)


def train_captioning(latents: torch.Tensor, caption_embeddings: torch.Tensor, config: CaptioningConfig,
                     checkpoint: str | Path | None = None, progress: bool = True,
                     extra_loss: ExtraLoss | None = None, *, val_latents: torch.Tensor | None = None,
                     val_embeddings: torch.Tensor | None = None, eval_every: int = 100,
                     checkpoint_every: int = 500, forward_dims: int | None = None,
                     data_identity: tuple[torch.Tensor, torch.Tensor] | None = None) -> CaptioningRun:
    """Train f: latent -> caption embedding with MSE (see the module docstring).

    latents: (N, d); caption_embeddings: (N, C, d) or (N, d). With ``val_latents`` and
    ``val_embeddings`` the MSE against the mean caption embedding of the validation images is
    recorded every ``eval_every`` steps (``history["val_step"]``, ``history["val_mse"]``).
    ``forward_dims=k`` compares only the first k outputs of f with the first k target entries
    (the rest of the output is left to ``extra_loss``, e.g. a latent trained by MMD); None = all.
    ``data_identity``: the tensors a checkpoint's data fingerprint is taken from (default: ``latents``
    and ``caption_embeddings``). A caller that derives its inputs (``invcap.methods`` projects the
    latents onto principal directions) passes the raw ones: the derived floats differ in the last bits
    between numeric paths, so a checkpoint trained on one path would not be recognised on another.
    """
    caption_embeddings = check_pair(latents, caption_embeddings)
    if val_latents is not None:
        val_embeddings = caption_targets(check_pair(val_latents, val_embeddings))
    device = resolve_device(config.device)
    features = latents.shape[1]
    if forward_dims is not None and not (isinstance(forward_dims, int) and 1 <= forward_dims <= features):
        raise ValueError(f"forward_dims must be an int in 1..{features} or None, got {forward_dims!r}")
    fwd = slice(None) if forward_dims is None else slice(0, forward_dims)
    fingerprint = _fingerprint(*(data_identity or (latents, caption_embeddings)))
    loss_name = _loss_name(extra_loss)

    torch.manual_seed(config.seed)  # the initialisation (init_std > 0) depends on it
    net = build_network(features, config).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)  # batches: CPU generator, same on any device
    history: dict[str, list[float]] = {"loss": [], "mse": [], "val_step": [], "val_mse": []}
    if config.inverse_weight > 0:
        history["inverse_mse"] = []
    if extra_loss is not None:
        history["extra"] = []
    start = 0
    notes: list[str] = []

    path = Path(checkpoint) if checkpoint is not None else None
    if path is not None and path.is_file():
        saved = _load_checkpoint(path)
        _check_compatible(saved, config, fingerprint, loss_name, path)
        if saved.get("forward_dims") != forward_dims:
            raise ValueError(f"checkpoint {path} was trained with forward_dims={saved.get('forward_dims')!r}, "
                             f"now {forward_dims!r}; delete it or pass another checkpoint path")
        net.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        generator.set_state(saved["generator"])
        history = {k: list(v) for k, v in saved["history"].items()}
        start = int(saved["step"])
        notes.append(f"resumed from {path} at step {start}/{config.steps}")
        if progress:
            print(notes[-1])

    z_all = latents.to(device, torch.float32)
    y_all = caption_embeddings.to(device, torch.float32)
    n, n_captions = y_all.shape[0], y_all.shape[1]
    y_mean = y_all.mean(dim=1)
    if val_latents is not None:
        z_val, y_val = val_latents.to(device, torch.float32), val_embeddings.to(device, torch.float32)

    def save(step: int) -> None:
        if path is None:
            return
        save_torch_atomic({"format": CHECKPOINT_FORMAT, "model": net.state_dict(),
                           "optimizer": optimizer.state_dict(), "generator": generator.get_state(),
                           "history": history, "step": step, "config": config.as_dict(),
                           "data": fingerprint, "extra_loss": loss_name,
                           "forward_dims": forward_dims}, path)

    bar = None
    if progress and start < config.steps:
        bar = progress_bar(total=config.steps - start, desc=f"captioning on {device}, steps {start}..{config.steps}",
                           unit="step")
    hook_factors = extra_loss is not None and "factors" in inspect.signature(extra_loss).parameters
    net.train()
    for step in range(start, config.steps):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * _lr_factor(config, step)
        index = torch.randint(n, (min(config.batch_size, n),), generator=generator)
        if config.target == "sample":
            which = torch.randint(n_captions, (index.shape[0],), generator=generator)
            y = y_all[index.to(device), which.to(device)]
        else:
            y = y_mean[index.to(device)]
        z = z_all[index.to(device)]
        factors = net.factors()  # every layer's L and U, built once for all of this step's passes
        prediction = net(z, factors=factors)
        mse = torch.mean((prediction[:, fwd] - y[:, fwd]) ** 2)
        loss = mse
        if config.inverse_weight > 0:
            inverse_mse = torch.mean((net.inverse(y, factors=factors) - z) ** 2)
            loss = loss + config.inverse_weight * inverse_mse
        if extra_loss is not None:
            extra = extra_loss(net, z, y, prediction, **({"factors": factors} if hook_factors else {}))
            loss = loss + extra
        if not bool(torch.isfinite(loss)):
            raise ValueError(f"the loss became non-finite at step {step} (lr={config.lr}); lower the learning "
                             f"rate or bound the diagonal (log_scale_bound)")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        history["loss"].append(loss.item())
        history["mse"].append(mse.item())
        if config.inverse_weight > 0:
            history["inverse_mse"].append(inverse_mse.item())
        if extra_loss is not None:
            history["extra"].append(float(extra.detach()))
        done = step + 1
        if val_latents is not None and (done % eval_every == 0 or done == config.steps):
            with torch.no_grad():
                history["val_step"].append(done)
                history["val_mse"].append(float(torch.mean((net(z_val)[:, fwd] - y_val[:, fwd]) ** 2)))
        if bar is not None:
            bar.update(1)
            if done % 100 == 0:
                bar.set_postfix(mse=f"{history['mse'][-1]:.2e}")
        if done % checkpoint_every == 0 and done < config.steps:
            save(done)
    if bar is not None:
        bar.close()
    if start < config.steps or (path is not None and not path.is_file()):
        save(config.steps)
    net.eval()
    return CaptioningRun(net=net, history=history, config=config, device=device, steps_done=config.steps,
                         resumed_from=start, checkpoint=path, notes=notes)


# --- using the network ---------------------------------------------------------------------

@torch.no_grad()
def predict(net: InvertibleMLP, latents: torch.Tensor, batch_size: int = 4096,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """f(z) for (N, d) latents, batched, on the network's device (float64: on the CPU); returns
    a CPU tensor of ``dtype``."""
    net = in_precision(net, dtype)
    device = next(net.parameters()).device
    return torch.cat([net(chunk.to(device, dtype)).cpu() for chunk in latents.split(batch_size)])


@torch.no_grad()
def invert(net: InvertibleMLP, embeddings: torch.Tensor, batch_size: int = 4096,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """f^-1(y) for (N, d) embeddings, batched; returns a CPU tensor of ``dtype``."""
    net = in_precision(net, dtype)
    device = next(net.parameters()).device
    return torch.cat([net.inverse(chunk.to(device, dtype)).cpu() for chunk in embeddings.split(batch_size)])


@dataclass
class LeastSquares:
    """The trivial baseline: y = z A + b, fitted by ridge regression (float64)."""

    weight: torch.Tensor   # (d_in, d_out)
    bias: torch.Tensor     # (d_out,)
    ridge: float = 0.0     # relative ridge strength (see fit_least_squares)
    penalty: float = 0.0   # the lambda it gave: ridge * tr(Zc^T Zc) / d_in

    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        return (latents.double() @ self.weight + self.bias).to(latents.dtype)

    def describe(self) -> str:
        return (f"ridge regression, lambda = {self.ridge:g} x tr(Z^T Z)/d on centred latents "
                f"(= {self.penalty:.3g}; bias not penalised)")


LEAST_SQUARES_RIDGE = 1e-3


def fit_least_squares(latents: torch.Tensor, targets: torch.Tensor, ridge: float = LEAST_SQUARES_RIDGE) -> LeastSquares:
    """Ridge regression from (N, d_in) latents to (N, d_out) targets, or (N, C, d_out) (every
    caption a row, the same fit as regressing on the mean caption), in float64.

    lambda = ``ridge`` x tr(Zc^T Zc) / d_in, Zc the centred latents: scale-free, so 1e-3 shrinks
    only directions with under ~1/1000 of the average variance, and the fit exists for any N
    (a Flickr30k folder with fewer images than latent dimensions too). The bias is not
    penalised (the fit is on centred data). ``ridge=0`` is ordinary least squares (minimum-norm
    when N <= d_in)."""
    if targets.dim() == 3:
        targets = caption_targets(targets)
    if latents.dim() != 2 or targets.dim() != 2 or latents.shape[0] != targets.shape[0]:
        raise ValueError(f"latents {tuple(latents.shape)} and targets {tuple(targets.shape)} must be (N, d) "
                         f"with the same N")
    if latents.shape[0] == 0:
        raise ValueError("no training pairs for least squares")
    if not (ridge >= 0):
        raise ValueError(f"ridge must be >= 0, got {ridge}")
    z, y = latents.double(), targets.double()
    z_mean, y_mean = z.mean(dim=0), y.mean(dim=0)
    zc, yc = z - z_mean, y - y_mean
    gram = zc.T @ zc
    penalty = ridge * float(gram.diagonal().sum()) / z.shape[1]
    if penalty > 0:
        weight = torch.linalg.solve(gram + penalty * torch.eye(z.shape[1], dtype=torch.float64), zc.T @ yc)
    else:
        weight = torch.linalg.lstsq(zc, yc, driver="gelsd").solution
    return LeastSquares(weight=weight, bias=y_mean - z_mean @ weight, ridge=float(ridge), penalty=penalty)


# --- evaluation ----------------------------------------------------------------

def label_mean_predictor(labels: list, caption_embeddings: torch.Tensor, query_labels: list) -> torch.Tensor:
    """An oracle reference: for every query, the mean caption embedding of all training images
    with the same label (e.g. the same attribute combination on the embedded dataset). It is the
    MSE-optimal prediction from the label alone, so its error is what perfect attribute
    recognition would achieve. (N, C, d) embeddings in, (Q, d) out."""
    caption_embeddings = caption_embeddings if caption_embeddings.dim() == 3 else caption_embeddings[:, None]
    if len(labels) != caption_embeddings.shape[0]:
        raise ValueError(f"{len(labels)} labels for {caption_embeddings.shape[0]} images")
    index, codes = label_codes(labels)
    sums = torch.zeros(len(codes), caption_embeddings.shape[-1], dtype=torch.float64)
    sums.index_add_(0, index, caption_embeddings.double().mean(dim=1))
    means = sums / torch.bincount(index, minlength=len(codes))[:, None]
    missing = [label for label in query_labels if label not in codes]
    if missing:
        raise ValueError(f"{len(missing)} query labels never occur in training (first: {missing[0]!r})")
    return means[[codes[label] for label in query_labels]].float()


def embedding_errors(pred: torch.Tensor, caption_embeddings: torch.Tensor) -> dict[str, float]:
    """How close predicted caption embeddings (N, d) are to the captions (N, C, d), in float64.

    - ``mse_mean_caption``: MSE to each image's mean caption embedding (the regression target).
    - ``mse_per_caption``: MSE to every individual caption, averaged (the paper's "error between
      y_pred and the target caption embedding" when the target is one caption).
    - ``caption_spread_mse``: MSE between the mean and the individual captions: the floor of
      ``mse_per_caption`` for any predictor (by the bias-variance split, mse_per_caption =
      mse_mean_caption + caption_spread_mse).
    - ``cosine_mean_caption`` / ``cosine_per_caption``: mean cosine similarity.
    """
    caption_embeddings = check_pair(pred, caption_embeddings)
    p, y = pred.double(), caption_embeddings.double()
    mean = y.mean(dim=1)
    cos = torch.nn.functional.cosine_similarity
    return {"mse_mean_caption": float(((p - mean) ** 2).mean()),
            "mse_per_caption": float(((p[:, None] - y) ** 2).mean()),
            "caption_spread_mse": float(((y - mean[:, None]) ** 2).mean()),
            "cosine_mean_caption": float(cos(p, mean, dim=1).mean()),
            "cosine_per_caption": float(cos(p[:, None].expand_as(y), y, dim=2).mean())}


# What decides a trained network besides its config and data: the checkpoint key covers the
# source of this module (the loop, the loss, the checks), the network and the schedule.
TRAINING_CODE = (sys.modules[__name__], inn, optim)
