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
           "noise_sweep", "amplification", "jacobian_gains", "conditioning_summary",
           "nearest_neighbour_attributes", "attribute_accuracy", "directional_gains", "volume_contraction", "plot_image_rows", "plot_noise_sweep",
           "plot_conditioning"]

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
def directional_gains(net: InvertibleMLP, y: torch.Tensor, directions: torch.Tensor, eps: float) -> torch.Tensor:
    """Median over the rows of y of the amplification of f^-1 along each of the (k, d)
    ``directions`` (float64, step ``eps``): (k,) gains."""
    if directions.dim() != 2 or directions.shape[1] != y.shape[1]:
        raise ValueError(f"directions must be (k, {y.shape[1]}), got {tuple(directions.shape)}")
    n = y.shape[0]
    net64 = in_precision(net, torch.float64)   # one copy for all directions
    out = torch.empty(directions.shape[0], dtype=torch.float64)
    for i, direction in enumerate(directions):
        out[i] = amplification(net64, y, direction.expand(n, -1), eps).median()
    return out


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


def conditioning_summary(net: InvertibleMLP) -> dict:
    """``net.conditioning()`` as plain numbers for a results file."""
    cond = net.conditioning()
    return {"layers": cond.as_rows(), "inverse_lipschitz_bound": cond.inverse_lipschitz_bound,
            "forward_lipschitz_bound": cond.forward_lipschitz_bound,
            "max_condition_number": cond.max_condition_number,
            "log10_inverse_lipschitz_bound": math.log10(cond.inverse_lipschitz_bound)}


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


# --- figures ---------------------------------------------------------------------------------

def _show(ax, image: torch.Tensor) -> None:
    ax.set_xticks([]), ax.set_yticks([])
    image = image.detach().cpu()
    if bool(torch.isfinite(image).all()):
        ax.imshow(image.clamp(0, 1).permute(1, 2, 0).numpy())
    else:  # never drawn as if it were an image: a grey panel that says what happened
        ax.set_facecolor("0.85")
        ax.text(0.5, 0.5, "non-finite\npixels", ha="center", va="center", fontsize=7, color="darkred",
                transform=ax.transAxes)


def plot_image_rows(rows: dict[str, torch.Tensor], column_titles: Sequence[str] | None = None, wrap: int = 22):
    """A grid: one row per entry of ``rows`` (label -> (N, 3, H, W) images), one column per
    image; column titles (e.g. the captions) wrapped above the first row. Non-finite images are
    drawn as labelled grey panels. Returns the figure."""
    import textwrap

    import matplotlib.pyplot as plt

    n = next(iter(rows.values())).shape[0]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.35 * n + 0.8, 1.45 * len(rows) + 0.9), squeeze=False)
    for r, (label, images) in enumerate(rows.items()):
        if images.shape[0] != n:
            raise ValueError(f"row {label!r} has {images.shape[0]} images, expected {n}")
        for c in range(n):
            _show(axes[r, c], images[c])
        axes[r, 0].set_ylabel(label, fontsize=8)
    if column_titles is not None:
        for c, title in enumerate(column_titles):
            axes[0, c].set_title("\n".join(textwrap.wrap(title, wrap)[:4]), fontsize=6.5)
    fig.tight_layout()
    return fig


def plot_noise_sweep(curves: dict[str, list[dict[str, float]]], markers: dict[str, float] | None = None,
                     points: dict[str, tuple[float, float, float]] | None = None,
                     reference: dict[str, float] | None = None):
    """PSNR and SSIM against the ground-truth images versus the per-coordinate noise scale
    (log axis). ``curves``: label -> rows of ``noise_sweep`` (sigma = 0 rows are skipped on the
    log axis). ``markers``: label -> x of a vertical line (the paper's sigma, the RMS distance
    between y_pred and real captions). ``points``: label -> (x, psnr, ssim) drawn as stars (e.g.
    inverting real captions). ``reference``: {"psnr", "ssim"} of the autoencoder's own
    reconstruction, drawn as dotted lines. Returns the figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["o-", "s--", "^-."]
    for ax, key, unit in ((axes[0], "psnr", "PSNR vs ground truth (dB)"), (axes[1], "ssim", "SSIM vs ground truth")):
        for i, (label, rows) in enumerate(curves.items()):
            rows = [r for r in rows if r["sigma"] > 0]
            ax.plot([r["sigma"] for r in rows], [r[key] for r in rows], styles[i % len(styles)],
                    color=["black", "tab:gray", "tab:brown"][i % 3], ms=3.5, label=label)
        if reference is not None:
            ax.axhline(reference[key], color="gray", ls=":", lw=1, label="autoencoder reconstruction decoder(z)")
        for i, (label, x) in enumerate((markers or {}).items()):
            ax.axvline(x, color=colours[(i + 1) % len(colours)], ls="--", lw=1.2, label=label)
        for i, (label, (x, p, s)) in enumerate((points or {}).items()):
            ax.plot([x], [p if key == "psnr" else s], "*", ms=12, color=colours[(i + 6) % len(colours)], label=label)
        ax.set_xscale("log")
        ax.set_xlabel("perturbation of the caption embedding per coordinate, σ (RMS, embedding units)")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=7.5, bbox_to_anchor=(0.5, -0.02))
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


def plot_conditioning(summary: dict, ratios: dict[str, torch.Tensor],
                      direction_gains: torch.Tensor | None = None, direction_spread: torch.Tensor | None = None):
    """Left: sigma_min and sigma_max of every W_i (log axis). Middle: histograms of the measured
    amplification ||dx|| / ||dy|| per kind of perturbation, with the Lipschitz bound of f^-1.
    Right (with ``direction_gains``): the gain along each principal axis of the caption
    embeddings, beside the embeddings' spread along that axis. Returns the figure."""
    import matplotlib.pyplot as plt

    panels = 3 if direction_gains is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.6 * panels, 4.3))
    layers = summary["layers"]
    index = [layer["index"] + 1 for layer in layers]
    axes[0].semilogy(index, [layer["sigma_max"] for layer in layers], "o-", label="σ_max(W_i)")
    axes[0].semilogy(index, [layer["sigma_min"] for layer in layers], "s-", label="σ_min(W_i)")
    for i, layer in zip(index, layers):
        axes[0].annotate(f"κ={layer['condition_number']:.0f}", (i, layer["sigma_min"]), textcoords="offset points",
                         xytext=(0, -12), ha="center", fontsize=7)
    axes[0].set_xlabel("layer i")
    axes[0].set_ylabel("singular value of W_i")
    axes[0].set_xticks(index)
    axes[0].legend(fontsize=8)
    axes[0].grid(alpha=0.3, which="both")
    values = [torch.log10(v.double()) for v in ratios.values()]
    low = min(float(v.min()) for v in values)
    high = max(max(float(v.max()) for v in values), math.log10(summary["inverse_lipschitz_bound"]))
    bins = np.linspace(low - 0.1, high + 0.1, 60)
    for label, v in zip(ratios, values):
        axes[1].hist(v.numpy(), bins=bins, alpha=0.6, label=label)
    axes[1].axvline(math.log10(summary["inverse_lipschitz_bound"]), color="black", ls="--",
                    label="Lipschitz bound of f⁻¹")
    axes[1].set_xlabel("log10 amplification ||Δx|| / ||Δy||")
    axes[1].set_ylabel("number of test images")
    axes[1].legend(fontsize=7)
    axes[1].grid(alpha=0.3)
    if direction_gains is not None:
        k = torch.arange(1, direction_gains.shape[0] + 1)
        axes[2].semilogy(k, direction_gains, ".", ms=3, color="tab:red", label="median gain of f⁻¹ along the axis")
        axes[2].set_xlabel("principal axis of the caption embeddings (by decreasing spread)")
        axes[2].set_ylabel("amplification ||Δx|| / ||Δy||", color="tab:red")
        axes[2].grid(alpha=0.3, which="both")
        if direction_spread is not None:
            twin = axes[2].twinx()
            twin.semilogy(k, direction_spread.clamp_min(1e-20), "-", color="tab:blue", lw=1.2)
            twin.set_ylabel("std of caption embeddings along the axis", color="tab:blue")
        axes[2].legend(fontsize=7, loc="upper center")
    fig.tight_layout()
    return fig
