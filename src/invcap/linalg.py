"""Small float64 pieces shared across the library, written once:

- ``cosine_similarity_matrix(queries, keys)``: (Q, d) x (K, d) -> (Q, K) cosine similarities;
- ``most_similar(queries, keys)``: per query the index of the most cosine-similar key, in blocks of
  queries, so that the (Q, K) matrix never exists at once (Flickr30k's 145k training captions);
- ``principal_directions(x)``: one PCA (mean, unit directions largest spread first, std along
  each), with a deterministic sign per direction;
- ``label_codes(labels)``: one integer code per hashable label (first seen -> 0), the lookup
  behind relevance matrices, R-precision pools and per-label means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable, Sequence

import torch

__all__ = ["cosine_similarity_matrix", "most_similar", "Principal", "principal_directions", "label_codes"]

# Above this many rows the covariance is accumulated in chunks (bounded memory on Flickr30k's
# 145k captions); below, one matmul, so results do not depend on the chunk size.
_PCA_CHUNK = 65536
# most_similar's block: this many float64 similarities at a time (~128 MB), whatever the bank's size.
SIMILARITY_CELLS = 1 << 24


def cosine_similarity_matrix(queries: torch.Tensor, keys: torch.Tensor | None = None) -> torch.Tensor:
    """(Q, d) x (K, d) -> (Q, K) cosine similarities in float64 (``keys=None``: queries x queries)."""
    keys = queries if keys is None else keys
    if queries.dim() != 2 or keys.dim() != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(f"queries {tuple(queries.shape)} and keys {tuple(keys.shape)} must be (n, d) with the same d")
    q = torch.nn.functional.normalize(queries.double(), dim=1)
    k = q if keys is queries else torch.nn.functional.normalize(keys.double(), dim=1)
    return q @ k.T


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.double(), dim=1)


def most_similar(queries: torch.Tensor, keys: torch.Tensor, cells: int = SIMILARITY_CELLS) -> torch.Tensor:
    """(Q,) index of the key most cosine-similar to each query (the first on a tie), the same as
    ``cosine_similarity_matrix(queries, keys).argmax(dim=1)``: the keys are normalised once, and
    the similarities are formed ``cells // K`` queries at a time (bounded memory for any Q and K)."""
    if queries.dim() != 2 or keys.dim() != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(f"queries {tuple(queries.shape)} and keys {tuple(keys.shape)} must be (n, d) with the same d")
    if keys.shape[0] == 0:
        raise ValueError("most_similar needs at least one key")
    unit_keys = _unit_rows(keys)
    rows = max(1, cells // keys.shape[0])
    return torch.cat([(_unit_rows(q) @ unit_keys.T).argmax(dim=1) for q in queries.split(rows)]
                     or [torch.zeros(0, dtype=torch.long)])


@dataclass(frozen=True)
class Principal:
    """A PCA of a cloud of d-dimensional points (float64)."""

    mean: torch.Tensor        # (d,)
    directions: torch.Tensor  # (d, d): row i is the i-th principal direction (unit length)
    std: torch.Tensor         # (d,): standard deviation along each direction, decreasing

    @property
    def variance(self) -> torch.Tensor:
        return self.std ** 2

    def rotate(self, x: torch.Tensor) -> torch.Tensor:
        """Coordinates of (N, d) points along the directions (centred)."""
        return (x.double() - self.mean) @ self.directions.T


@torch.no_grad()
def principal_directions(points: torch.Tensor) -> Principal:
    """PCA of (N, d) points (any leading shape: flattened to (-1, d)) from the float64 covariance
    (divisor N - 1) and ``torch.linalg.eigh``. Each direction's sign makes its largest-magnitude
    entry positive (eigh's sign is arbitrary). Spreads below ~1e-8 of the largest are at the
    rounding floor of the covariance: read them as "empty", not as values."""
    x = points.reshape(-1, points.shape[-1]).double()
    n, d = x.shape
    if n < 2:
        raise ValueError(f"principal_directions needs at least 2 points, got {n}")
    mean = x.mean(dim=0)
    if n <= _PCA_CHUNK:
        centred = x - mean
        cov = centred.T @ centred / (n - 1)
    else:
        cov = torch.zeros(d, d, dtype=torch.float64)
        for chunk in x.split(_PCA_CHUNK):
            centred = chunk - mean
            cov += centred.T @ centred
        cov /= n - 1
    variance, vectors = torch.linalg.eigh(cov)                    # ascending
    order = torch.argsort(variance, descending=True)
    vectors = vectors[:, order]
    signs = torch.sign(vectors.gather(0, vectors.abs().argmax(dim=0, keepdim=True)))
    return Principal(mean, (vectors * signs).T.contiguous(), variance[order].clamp_min(0).sqrt())


def label_codes(labels: Sequence[Hashable]) -> tuple[torch.Tensor, dict[Hashable, int]]:
    """(codes, table): ``codes[i] = table[labels[i]]``, codes 0, 1, ... in order of first appearance."""
    table: dict[Hashable, int] = {}
    codes = [table.setdefault(label, len(table)) for label in labels]
    return torch.tensor(codes, dtype=torch.long), table
