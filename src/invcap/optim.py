"""The one learning-rate schedule of the package: cosine decay from ``lr`` to ``final * lr``.

``cosine_factor(step, steps, final)`` is the multiplier at 0-based ``step`` of ``steps``
(1 at step 0, ``final`` at step ``steps``); ``cosine_schedule(optimizer, steps, final)`` is the
same as a ``torch.optim.lr_scheduler.LambdaLR`` for loops that call ``scheduler.step()``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["cosine_factor", "cosine_schedule"]


def cosine_factor(step: int, steps: int, final: float = 0.0) -> float:
    """final + (1 - final) * (1 + cos(pi * step / steps)) / 2, for 0 <= step <= steps."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not (0.0 <= final <= 1.0):
        raise ValueError(f"final must be in [0, 1], got {final}")
    return final + (1.0 - final) * 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / steps))


def cosine_schedule(optimizer: torch.optim.Optimizer, steps: int, final: float = 0.0) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` applying ``cosine_factor(step, steps, final)`` to every parameter group."""
    cosine_factor(0, steps, final)  # validate now, not at the first scheduler.step()
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: cosine_factor(step, steps, final))
