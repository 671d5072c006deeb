"""The inverse direction of the captioning network (paper section 3.2, findings 2 and 3).

- ``generate``: image = decoder(f^-1(E_T(caption))), with the caption list checked and every
  generated image checked for non-finite pixels (reported in ``Generation.finite``; the figure
  helpers refuse to draw them as if they were images).
- ``noise_sweep``: invert y_pred + sigma * N(0, I) for a range of sigma and score the decoded
  images against the ground truth (PSNR, SSIM). sigma is a standard deviation per coordinate;
  the paper's N(0, 1e-4) is sigma = 1e-4 if 1e-4 is the std, sigma = 1e-2 if it is the variance.
- ``amplification``: ||f^-1(y + eps d) - f^-1(y)|| / ||eps d|| along given directions, in float64.
- ``jacobian_gains``: the local version, from the exact Jacobian of f at x (a product of the W_i
  and the LeakyReLU slopes): 1/sigma_min(J) is the largest local amplification of f^-1.
- ``psnr`` / ``ssim`` per image, ``nearest_neighbour_attributes`` for a simple attribute check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Hashable, Sequence

import numpy as np
import torch

from invcap import autoencoder
from invcap.inn import InvertibleMLP, in_precision
from invcap.text import check_texts

__all__ = ["check_captions", "check_images", "finite_mask", "Generation", "generate", "psnr", "ssim", "image_scores",
           "noise_sweep", "amplification", "jacobian_gains", "conditioning_record",
           "nearest_neighbour_attributes", "attribute_accuracy", "directional_gains", "volume_contraction", "spearman"]

Decode = Callable[[torch.Tensor], torch.Tensor]
Encode = Callable[[Sequence[str]], torch.Tensor]


# --- checks ----------------------------------------------------------------------------------

def check_captions(captions: Sequence[str]) -> list[str]:
    """A non-empty list of non-empty strings, or a ValueError naming the first bad entry."""
    captions = check_texts(captions)
    if not captions:
        raise ValueError("captions is empty; give at least one caption")
    return captions


def finite_mask(images: torch.Tensor) -> torch.Tensor:
    """(N,) bool: the image has only finite pixels."""
    return torch.isfinite(images.reshape(images.shape[0], -1)).all(dim=1)


def check_images(images: torch.Tensor, what: str = "images") -> torch.Tensor:
    """Return the images unchanged, or raise a ValueError listing those with NaN/Inf pixels."""
    bad = (~finite_mask(images)).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"{len(bad)} of {images.shape[0]} {what} have non-finite pixels (indices {bad[:10]}"
                         f"{'...' if len(bad) > 10 else ''}); they are not saved")
    return images


# --- generation ------------------------------------------------------------------------------

@dataclass
class Generation:
    captions: list[str]
    embeddings: torch.Tensor   # E_T(caption), (N, d)
    latents: torch.Tensor      # f^-1(E_T(caption)), (N, d)
    images: torch.Tensor       # decoder(latent), (N, 3, H, W), not clamped
    finite: torch.Tensor       # (N,) bool: all pixels finite

    @property
    def n_nonfinite(self) -> int:
        return int((~self.finite).sum())


@torch.no_grad()
def generate(net: InvertibleMLP, encode: Encode, decode: Decode, captions: Sequence[str]) -> Generation:
    """decoder(f^-1(E_T(T))) for every caption T (the paper's figure 2)."""
    captions = check_captions(captions)
    embeddings = encode(captions).float()
    if embeddings.shape != (len(captions), net.features):
        raise ValueError(f"the sentence encoder gave shape {tuple(embeddings.shape)}, but the network expects "
                         f"({len(captions)}, {net.features})")
    device = next(net.parameters()).device
    latents = net.inverse(embeddings.to(device))
    images = decode(latents).float().cpu()
    return Generation(captions, embeddings.cpu(), latents.cpu(), images, finite_mask(images))


# --- image quality ---------------------------------------------------------------------------

def _scored(metric, images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    # Clamp to the displayable range (as a saved image would be); NaN marks non-finite images,
    # which clamp alone would turn into plausible-looking pixels (inf -> 1).
    if images.shape != reference.shape or images.dim() != 4:
        raise ValueError(f"images must be two (N, C, H, W) tensors of the same shape, got {tuple(images.shape)} "
                         f"and {tuple(reference.shape)}")
    finite = finite_mask(images)
    values = metric(torch.nan_to_num(images.double()).clamp(0, 1), reference.double()).double()
    return torch.where(finite, values, torch.full_like(values, float("nan")))


def psnr(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB of images clamped to [0, 1] (``invcap.autoencoder.psnr``, the metric of
    notebook 02); NaN for images with non-finite pixels."""
    return _scored(autoencoder.psnr, images, reference)


def ssim(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM (``invcap.autoencoder.ssim``: Gaussian window 11, sigma 1.5) of images
    clamped to [0, 1]; NaN for images with non-finite pixels."""
    return _scored(autoencoder.ssim, images, reference)


def image_scores(images: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """Mean PSNR / SSIM over the finite images, and how many were not finite."""
    p, s = psnr(images, reference), ssim(images, reference)
    ok = torch.isfinite(p)
    return {"psnr": float(p[ok].mean()) if ok.any() else float("nan"),
            "ssim": float(s[ok].mean()) if ok.any() else float("nan"),
            "n_nonfinite": int((~ok).sum()), "n": int(p.numel())}


# --- noise sweep -----------------------------------------------------------------------------

@torch.no_grad()
def noise_sweep(net: InvertibleMLP, decode: Decode, y_pred: torch.Tensor, images: torch.Tensor,
                sigmas: Sequence[float], seed: int = 0, progress: bool = True,
                dtype: torch.dtype = torch.float32) -> list[dict[str, float]]:
    """For every sigma: invert y_pred + sigma * N(0, I), decode, score against ``images``.

    Rows: sigma, rms_dy (measured per-coordinate RMS of the noise), rms_dx (per-coordinate RMS of
    the latent change from the noise-free inversion), psnr, ssim, n_nonfinite. The same noise
    draw (scaled) is used for every sigma, so the curve is smooth in sigma. ``dtype=float64``
    inverts a float64 copy of the network (on the CPU), which separates the network's own
    amplification from float32 rounding; the decoder always gets float32 latents.
    """
    if y_pred.shape[0] != images.shape[0]:
        raise ValueError(f"{y_pred.shape[0]} embeddings but {images.shape[0]} images")
    net = in_precision(net, dtype)
    device = next(net.parameters()).device
    noise = torch.randn(y_pred.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    y_pred = y_pred.to(dtype)
    x0 = net.inverse(y_pred.to(device)).cpu()
    rows = []
    from invcap.progress import progress as progress_bar

    for sigma in progress_bar(sigmas, desc=f"noise sweep ({str(dtype).replace('torch.', '')})", unit="sigma",
                              disable=not progress):
        if not (sigma >= 0):
            raise ValueError(f"noise scales must be >= 0, got {sigma}")
        dy = (float(sigma) * noise).to(dtype)
        x = net.inverse((y_pred + dy).to(device)).cpu()
        decoded = decode(x.float()).float().cpu()
        scores = image_scores(decoded, images)
        dx = (x - x0).double()
        dx = dx[torch.isfinite(dx).all(dim=1)]
        rows.append({"sigma": float(sigma), "rms_dy": float(dy.double().pow(2).mean().sqrt()),
                     "rms_dx": float(dx.pow(2).mean().sqrt()) if dx.numel() else float("nan"),
                     **scores})
    return rows


# --- why: amplification and conditioning -----------------------------------------------------

@torch.no_grad()
def amplification(net: InvertibleMLP, y: torch.Tensor, directions: torch.Tensor,
                  eps: float | torch.Tensor) -> torch.Tensor:
    """Per-row ||f^-1(y + eps d) - f^-1(y)|| / ||eps d|| (d normalised to unit length), in float64,
    so that float32 rounding cannot masquerade as amplification. ``eps`` is the step length: one
    number, or one per row (e.g. the full distance to a caption embedding)."""
    if y.shape != directions.shape:
        raise ValueError(f"y {tuple(y.shape)} and directions {tuple(directions.shape)} must have the same shape")
    eps = torch.as_tensor(eps, dtype=torch.float64).reshape(-1, 1)
    if eps.shape[0] not in (1, y.shape[0]) or not bool((eps > 0).all()):
        raise ValueError(f"eps must be > 0, one number or one per row of y ({y.shape[0]})")
    net64 = in_precision(net, torch.float64)
    y = y.double()
    d = torch.nn.functional.normalize(directions.double(), dim=1)
    dx = net64.inverse(y + eps * d) - net64.inverse(y)
    return dx.norm(dim=1) / eps[:, 0]


@torch.no_grad()
def directional_gains(net: InvertibleMLP, y: torch.Tensor, directions: torch.Tensor, eps: float,
                      rows_per_call: int = 16384) -> torch.Tensor:
    """Median over the rows of y of the amplification of f^-1 along each of the (k, d)
    ``directions`` (float64, step ``eps``): (k,) gains. Directions are batched (every row of y
    times a block of directions in one inversion), which is what makes 384 axes cheap."""
    if directions.dim() != 2 or directions.shape[1] != y.shape[1]:
        raise ValueError(f"directions must be (k, {y.shape[1]}), got {tuple(directions.shape)}")
    n = y.shape[0]
    net64 = in_precision(net, torch.float64)   # one copy for all directions
    block = max(1, rows_per_call // max(n, 1))
    out = []
    for chunk in directions.double().split(block):
        gains = amplification(net64, y.double().repeat(chunk.shape[0], 1), chunk.repeat_interleave(n, dim=0), eps)
        out.append(gains.view(chunk.shape[0], n).median(dim=1).values)
    return torch.cat(out)


@torch.no_grad()
def jacobian_gains(net: InvertibleMLP, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Singular-value extremes of J_f(x) for every row of x (float64).

    J_f(x) = W_n S_{n-1} W_{n-1} ... S_1 W_1 with S_i the diagonal of LeakyReLU slopes at the
    pre-activations; J_{f^-1}(f(x)) = J_f(x)^-1, so 1/sigma_min(J_f) is the largest local
    amplification of f^-1 around y = f(x)."""
    net64 = in_precision(net, torch.float64)
    h = x.double()
    jac = torch.eye(net.features, dtype=torch.float64).expand(h.shape[0], -1, -1)
    for i, linear in enumerate(net64.linears):
        weight = linear.weight
        h = linear._forward(h)
        jac = weight @ jac
        if net64._has_activation_after(i):
            slope = torch.where(h > 0, 1.0, net64.activation.negative_slope).to(torch.float64)
            jac = slope[:, :, None] * jac
            h = net64.activation(h)
    sv = torch.linalg.svdvals(jac)
    return {"sigma_max": sv[:, 0], "sigma_min": sv[:, -1], "inverse_gain": 1.0 / sv[:, -1],
            "condition_number": sv[:, 0] / sv[:, -1]}


@torch.no_grad()
def volume_contraction(net: InvertibleMLP, latents: torch.Tensor) -> dict[str, float]:
    """How much f shrinks volume around the data, per coordinate (float64):
    ``scale_per_dim`` = exp(mean over latents of log|det J_f(z)| / d), the geometric-mean factor
    by which f scales lengths; ``activation_floor_per_dim`` = slope^m, the smallest factor the m
    LeakyReLUs alone can give (every coordinate negative at every activation) -- with a fixed
    diagonal the W_i contribute |det W_i| = prod |k_i| and no more."""
    net64 = in_precision(net, torch.float64)
    log_det = net64.log_abs_det_jacobian(latents.double())
    d = net.features
    weights = sum(float(linear.log_abs_det()) for linear in net64.linears)
    return {"scale_per_dim": math.exp(float(log_det.mean()) / d),
            "weights_scale_per_dim": math.exp(weights / d),
            "activation_floor_per_dim": net.activation.negative_slope ** net.n_activations,
            "mean_log_abs_det": float(log_det.mean())}


def conditioning_record(net: InvertibleMLP) -> dict:
    """``net.conditioning()`` as plain numbers for a results file (per-layer extreme singular
    values and condition numbers, and the Lipschitz bounds of f and f^-1)."""
    cond = net.conditioning()
    return {"layers": cond.as_rows(), "inverse_lipschitz_bound": cond.inverse_lipschitz_bound,
            "forward_lipschitz_bound": cond.forward_lipschitz_bound,
            "max_condition_number": cond.max_condition_number,
            "log10_inverse_lipschitz_bound": math.log10(cond.inverse_lipschitz_bound)}


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks, ties sharing their average rank."""
    values = values.double().flatten()
    order = torch.argsort(values, stable=True)
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(1, len(values) + 1, dtype=torch.float64)
    unique, inverse = torch.unique(values, return_inverse=True)
    if len(unique) < len(values):  # average the ranks within each group of ties
        sums = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, ranks)
        ranks = (sums / torch.bincount(inverse, minlength=len(unique)))[inverse]
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two equally long 1-D samples (ties get average ranks)."""
    if a.numel() != b.numel() or a.numel() < 2:
        raise ValueError(f"spearman needs two samples of the same length >= 2, got {a.numel()} and {b.numel()}")
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(ra.norm() * rb.norm())
    return float(ra @ rb) / denominator if denominator > 0 else float("nan")


# --- a simple attribute check ------------------------------------------------------------------

def nearest_neighbour_attributes(images: torch.Tensor, reference_images: torch.Tensor,
                                 reference_attributes: Sequence[dict[str, Hashable]],
                                 batch_size: int = 512) -> list[dict[str, Hashable] | None]:
    """The attributes of each image's nearest reference image (pixel L2, images clamped to [0, 1]).
    A deliberately simple judge; None for images with non-finite pixels."""
    if reference_images.shape[0] != len(reference_attributes):
        raise ValueError(f"{reference_images.shape[0]} reference images but {len(reference_attributes)} attribute dicts")
    if images.shape[1:] != reference_images.shape[1:]:
        raise ValueError(f"image shape {tuple(images.shape[1:])} differs from the references' "
                         f"{tuple(reference_images.shape[1:])}")
    ref = reference_images.float().flatten(1)
    finite = finite_mask(images)
    out: list[dict | None] = []
    for chunk, ok in zip(images.float().split(batch_size), finite.split(batch_size)):
        flat = torch.nan_to_num(chunk.clamp(0, 1)).flatten(1)
        nearest = torch.cdist(flat, ref).argmin(dim=1)
        out += [dict(reference_attributes[int(j)]) if good else None for j, good in zip(nearest, ok)]
    return out


def attribute_accuracy(predicted: Sequence[dict | None], truth: Sequence[dict]) -> dict[str, float]:
    """Per-attribute accuracy in percent (None predictions count as wrong), plus "all" (every
    attribute right)."""
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} images")
    if not truth:
        raise ValueError("no images to score")
    keys = list(truth[0])
    hits = np.array([[p is not None and p.get(k) == t[k] for k in keys] for p, t in zip(predicted, truth)])
    out = {k: float(hits[:, i].mean() * 100) for i, k in enumerate(keys)}
    out["all"] = float(hits.all(axis=1).mean() * 100)
    return out
