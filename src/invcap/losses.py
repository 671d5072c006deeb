"""Loss pieces of notebook 05's methods, each a plain function of tensors (tested against float64
references in ``tests/test_losses.py``):

- ``mmd``: unbiased MMD^2 with an inverse-multiquadric kernel (latent padding's prior match);
- ``singular_value_spread``: how far a square matrix is from a scaled orthogonal one, with no SVD;
- ``info_nce``: InfoNCE, the cross-entropy of picking each row's own target among the batch's;
- ``projected_mse``: mean squared error measured only inside a subspace.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

__all__ = ["squared_distances", "mmd", "singular_value_spread", "info_nce", "projected_mse"]


def squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(n, m) x (k, m) -> (n, k) squared Euclidean distances, by one matmul; clamped at 0 because
    rounding can make ||a||^2 + ||b||^2 - 2 a.b slightly negative."""
    return (a.pow(2).sum(1)[:, None] + b.pow(2).sum(1)[None, :] - 2.0 * a @ b.T).clamp_min(0.0)


def mmd(x: torch.Tensor, y: torch.Tensor, scales: Sequence[float] = (0.05, 0.2, 0.5, 1.0, 2.0)) -> torch.Tensor:
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

    kxx, kyy, kxy = kernel(squared_distances(x, x)), kernel(squared_distances(y, y)), kernel(squared_distances(x, y))
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


def projected_mse(error: torch.Tensor, basis: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over rows of the squared norm of ``error`` (n, d) inside the span of ``basis``'s
    orthonormal columns (d, r), divided by d: with basis None (or r = d) it is the plain MSE,
    and directions outside the span cost nothing."""
    if error.dim() != 2:
        raise ValueError(f"error must be (n, d), got {tuple(error.shape)}")
    if basis is None:
        return error.pow(2).mean()
    if basis.dim() != 2 or basis.shape[0] != error.shape[1]:
        raise ValueError(f"basis must be ({error.shape[1]}, r), got {tuple(basis.shape)}")
    return (error @ basis.to(error)).pow(2).sum(dim=1).mean() / error.shape[1]
