"""Many small ``InvertibleMLP``s trained as one tensor program (the engine of ``invcap.toy``).

``StackedInvertibleMLP`` holds M independent parameter sets of ``invcap.inn.InvertibleMLP`` (no
final activation, bias on) with a leading model dimension: W = L U per layer, L unit lower, U
upper with diagonal k (fixed 1, or exp(log_scale) per model). ``to_module(m)`` rebuilds model m as
a plain ``InvertibleMLP``, which is what every score is computed on.

Training needs, per step, the forward pass of every model on its training inputs and the inverse
pass of some models on their training targets. Both run as ONE chain of batched matmuls
(``_ChainError``, the chain with its squared error): the inverse runs the layers backwards with
the activation slope 1/s, but for the negated state v = -u, act^-1(u) = -(1/s) leaky_relu(-u, s),
so it is the same kind of chain as the forward: weights -W_last^-T, then W_i^-T / s, biases
b_i W_i^-T, output negated (``_ChainWeights`` builds them from the parameters). The inputs are
lifted scalars (x, 0, ..., 0), so the first layer is an outer product. At these sizes (n = 16, a
few hundred points) a step is bound by the number of ops more than by flops, which is why the
backward passes are written out (and tested against autograd) instead of left to per-op autograd:
about 1.4x faster per step than the per-layer version this replaced.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from invcap.inn import InvertibleMLP

__all__ = ["StackedInvertibleMLP"]


def _chain_forward(u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                   slope: float) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """out = A_d(s(... s(A_1(lift(u))))) with A_k(h) = h @ weight[k] + bias[k], s = leaky_relu(., slope);
    also the activations the backward needs."""
    weights, biases = weight.unbind(0), bias.unbind(0)
    h = torch.addcmul(biases[0], u.unsqueeze(-1), weights[0][:, :1, :])  # lift(u) @ W: an outer product
    saved = []
    for w, b in zip(weights[1:], biases[1:]):
        h = F.leaky_relu(h, slope)
        saved.append(h)
        h = torch.baddbmm(b, h, w)
    return h, saved


def _chain_backward(grad: torch.Tensor, u: torch.Tensor, weight: torch.Tensor, inputs: Sequence[torch.Tensor],
                    slope: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Gradients for weight and bias from the gradient of the chain's output."""
    grad_weight = torch.zeros_like(weight)
    grad_bias = grad.new_empty(weight.shape[0], grad.shape[0], 1, grad.shape[-1])
    weights_t, grad_weights, grad_biases = weight.transpose(-1, -2).unbind(0), grad_weight.unbind(0), grad_bias.unbind(0)
    for k in range(weight.shape[0] - 1, 0, -1):
        h = inputs[k - 1]
        torch.bmm(h.transpose(1, 2), grad, out=grad_weights[k])
        torch.sum(grad, 1, keepdim=True, out=grad_biases[k])
        grad = torch.bmm(grad, weights_t[k])
        grad = torch.ops.aten.leaky_relu_backward(grad, h, slope, True)  # h is the activation's output
    grad_weights[0][:, 0, :] = torch.bmm(u.unsqueeze(1), grad).squeeze(1)
    torch.sum(grad, 1, keepdim=True, out=grad_biases[0])
    return grad_weight, grad_bias


class _Chain(torch.autograd.Function):
    """The chain's output (B, P, n) for scalar inputs u (B, P) in coordinate 0; weight (d, B, n, n)
    acting from the right, bias (d, B, 1, n). Gradients for weight and bias only."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, slope: float) -> torch.Tensor:
        out, saved = _chain_forward(u, weight, bias, slope)
        ctx.slope = slope
        ctx.save_for_backward(u, weight, *saved)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        u, weight, *inputs = ctx.saved_tensors
        return (None, *_chain_backward(grad.contiguous(), u, weight, inputs, ctx.slope), None)


class _ChainError(torch.autograd.Function):
    """Per row b the error mean_p ||out[b, p] - target[b, p]||^2 of the chain (see ``_Chain``), with
    the loss folded into the backward (no autograd nodes or temporaries for it)."""

    @staticmethod
    def forward(ctx, u: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
                slope: float) -> torch.Tensor:
        out, saved = _chain_forward(u, weight, bias, slope)
        residual = out.sub_(target)
        ctx.slope = slope
        ctx.save_for_backward(u, weight, residual, *saved)
        return residual.square().sum(-1).mean(-1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_error: torch.Tensor):
        u, weight, residual, *inputs = ctx.saved_tensors
        grad = residual * (grad_error * (2.0 / residual.shape[1]))[:, None, None]
        return (None, None, *_chain_backward(grad, u, weight, inputs, ctx.slope), None)


class _ChainWeights(torch.autograd.Function):
    """The parameters of M stacked networks -> the weights and biases of ``_Chain`` for every model
    forward and ``models`` backward, with a hand-written backward (one node instead of ~40 small
    ones: at these sizes autograd's per-node cost is most of the step).

    Forward: k = exp(log_scale) where learned, else 1; L = I + strict lower; U = strict upper + diag(k);
    W = L U; W^-1 = U^-1 L^-1 (two triangular solves). Chain weights: W^T for the forward models;
    for the inverse models, layer order reversed, W^-T scaled by -1 (first) and 1/s (others), and
    biases b W^-T. Backward: dW^-1 = -W^-1 dW W^-1 and dW = dL U + L dU, masked to the entries."""

    @staticmethod
    def forward(ctx, lower_entries, upper_entries, log_scale, bias, learn_mask, models, lower_index,
                upper_index, slope):
        M, d, n = bias.shape
        every = models is None  # every model runs backward too: no gathers, no scatters
        k = torch.where(learn_mask[:, None, None], torch.exp(log_scale), torch.ones_like(log_scale))
        flat = bias.new_zeros(M, d, n * n)
        lower = flat.scatter(-1, lower_index.expand(M, d, -1), lower_entries).view(M, d, n, n)
        lower.diagonal(dim1=-2, dim2=-1).fill_(1.0)
        upper = flat.scatter(-1, upper_index.expand(M, d, -1), upper_entries).view(M, d, n, n)
        upper.diagonal(dim1=-2, dim2=-1).copy_(k)
        weight = lower @ upper
        chain_w = weight.transpose(-1, -2).transpose(0, 1)  # (d, M, n, n): h @ W^T
        chain_b = bias.transpose(0, 1).unsqueeze(2)
        inv = None
        if every or len(models):
            lower_m, upper_m, bias_m = (lower, upper, bias) if every else (lower[models], upper[models], bias[models])
            eye = torch.eye(n, dtype=bias.dtype, device=bias.device).expand_as(lower_m)
            inv_lower = torch.linalg.solve_triangular(lower_m, eye, upper=False, unitriangular=True)
            inv = torch.linalg.solve_triangular(upper_m, inv_lower, upper=True)  # W^-1 = U^-1 L^-1
            inv_t = inv.transpose(-1, -2).flip(1)  # W_i^-T, the last layer first
            scale = _inverse_scale(d, slope, inv)
            chain_w = torch.cat([chain_w, (inv_t * scale).transpose(0, 1)], 1)
            chain_b = torch.cat([chain_b, (bias_m.flip(1).unsqueeze(2) @ inv_t).transpose(0, 1)], 1)
        ctx.save_for_backward(lower, upper, k, bias, learn_mask, lower_index, upper_index,
                              *(() if every else (models,)), *(() if inv is None else (inv,)))
        ctx.slope, ctx.every, ctx.has_inverse = slope, every, inv is not None
        return chain_w.contiguous(), chain_b.contiguous()

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_w, grad_b):
        lower, upper, k, bias, learn_mask, lower_index, upper_index, *rest = ctx.saved_tensors
        M, d, n = bias.shape
        grad_weight = grad_w[:, :M].transpose(0, 1).transpose(-1, -2)  # dL/dW from W^T
        grad_bias = grad_b[:, :M, 0].transpose(0, 1).contiguous()
        if ctx.has_inverse:
            models, inv = (None, rest[0]) if ctx.every else rest
            scale = _inverse_scale(d, ctx.slope, inv)
            g_vt = (grad_w[:, M:].transpose(0, 1) * scale).flip(1)  # dL/d(W^-T), back in layer order
            g_c = grad_b[:, M:].transpose(0, 1).flip(1)  # dL/d(b W^-T), (I, d, 1, n)
            b = (bias if ctx.every else bias[models]).unsqueeze(2)
            g_vt = g_vt + b.transpose(-1, -2) @ g_c  # c = b V: dV += b^T dc
            inv_t = inv.transpose(-1, -2)
            g_bias = (g_c @ inv).squeeze(2)  # db = dc V^T = dc W^-1
            g_w = -(inv_t @ g_vt.transpose(-1, -2) @ inv_t)  # dW = -W^-T dW^-1 W^-T
            if ctx.every:
                grad_bias, grad_weight = grad_bias + g_bias, grad_weight + g_w
            else:
                grad_bias, grad_weight = grad_bias.index_add(0, models, g_bias), grad_weight.index_add(0, models, g_w)
        grad_lower = (grad_weight @ upper.transpose(-1, -2)).flatten(-2)
        grad_upper = lower.transpose(-1, -2) @ grad_weight
        grad_k = grad_upper.diagonal(dim1=-2, dim2=-1)
        grad_log_scale = torch.where(learn_mask[:, None, None], grad_k * k, torch.zeros_like(k))
        grad_upper = grad_upper.flatten(-2)
        return (grad_lower.gather(-1, lower_index.expand(M, d, -1)),
                grad_upper.gather(-1, upper_index.expand(M, d, -1)),
                grad_log_scale, grad_bias, None, None, None, None, None)


def _inverse_scale(depth: int, slope: float, like: torch.Tensor) -> torch.Tensor:
    scale = like.new_full((1, depth, 1, 1), 1.0 / slope)
    scale[:, 0] = -1.0
    return scale


def _lift(values: torch.Tensor, features: int) -> torch.Tensor:
    out = values.new_zeros(*values.shape, features)
    out[..., 0] = values
    return out


class StackedInvertibleMLP(nn.Module):
    """M independent ``InvertibleMLP``s with a leading model dimension (see the module docstring).

    ``learn_diagonal`` is a bool per model: those models use k = exp(log_scale) (k starts at 1),
    the others a fixed k = 1 (their log_scale gets no gradient and stays 0).
    """

    def __init__(self, n_models: int, features: int, depth: int, negative_slope: float = 0.5,
                 learn_diagonal: Sequence[bool] | bool = False, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if features < 1 or depth < 1 or n_models < 1:
            raise ValueError(f"n_models, features and depth must be >= 1, got {n_models}, {features}, {depth}")
        if not negative_slope > 0:
            raise ValueError(f"negative_slope must be > 0, got {negative_slope}")
        self.n_models, self.features, self.depth = n_models, features, depth
        self.negative_slope = float(negative_slope)
        if isinstance(learn_diagonal, bool):
            learn_diagonal = [learn_diagonal] * n_models
        if len(learn_diagonal) != n_models:
            raise ValueError(f"learn_diagonal needs one bool per model ({n_models}), got {len(learn_diagonal)}")
        self.register_buffer("learn_mask", torch.tensor(list(learn_diagonal), dtype=torch.bool))
        rows, cols = torch.tril_indices(features, features, offset=-1)
        self.register_buffer("_lower_index", rows * features + cols, persistent=False)
        self.register_buffer("_upper_index", cols * features + rows, persistent=False)
        n_off = features * (features - 1) // 2
        shape = (n_models, depth)
        self.lower_entries = nn.Parameter(torch.zeros(*shape, n_off, dtype=dtype))
        self.upper_entries = nn.Parameter(torch.zeros(*shape, n_off, dtype=dtype))
        self.log_scale = nn.Parameter(torch.zeros(*shape, features, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(*shape, features, dtype=dtype))

    @torch.no_grad()
    def reset_parameters_(self, generators: Sequence[torch.Generator], init_std: float, bias_std: float) -> None:
        """Model m's off-diagonals ~ N(0, init_std^2/n) and biases ~ N(0, bias_std^2), drawn from
        ``generators[m]`` (so a model's start depends on its own seed only)."""
        n, dtype = self.features, self.lower_entries.dtype
        for m, gen in enumerate(generators):
            for p, std in ((self.lower_entries, init_std / math.sqrt(n)),
                           (self.upper_entries, init_std / math.sqrt(n)), (self.bias, bias_std)):
                p[m] = torch.randn(p.shape[1:], generator=gen, dtype=torch.float64).to(dtype) * std
            self.log_scale[m] = 0.0

    def diagonal(self) -> torch.Tensor:
        """k, shape (M, depth, n)."""
        return torch.where(self.learn_mask[:, None, None], torch.exp(self.log_scale), torch.ones_like(self.log_scale))

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """L (unit lower) and U (upper, diagonal k), each (M, depth, n, n)."""
        M, d, n = self.n_models, self.depth, self.features
        flat = self.lower_entries.new_zeros(M, d, n * n)
        eye = torch.eye(n, dtype=flat.dtype, device=flat.device)
        lower = flat.scatter(-1, self._lower_index.expand(M, d, -1), self.lower_entries).view(M, d, n, n) + eye
        upper = flat.scatter(-1, self._upper_index.expand(M, d, -1), self.upper_entries).view(M, d, n, n)
        return lower, upper + torch.diag_embed(self.diagonal())

    # --- reference passes, layer by layer (what the tests compare the chain with) ----------------

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (M, points, n) -> f_m(x_m) for every model m."""
        lower, upper = self.factors()
        weight = lower @ upper
        for i in range(self.depth):
            x = torch.baddbmm(self.bias[:, i, None, :], x, weight[:, i].transpose(-1, -2))
            if i < self.depth - 1:
                x = F.leaky_relu(x, self.negative_slope)
        return x

    def inverse(self, y: torch.Tensor, models: torch.Tensor | None = None) -> torch.Tensor:
        """y (M, points, n) -> f_m^-1(y_m): the layers backwards, each by two triangular solves.
        With ``models`` (an index tensor), y holds only those models' inputs."""
        lower, upper = self.factors()
        bias = self.bias
        if models is not None:
            lower, upper, bias = lower[models], upper[models], bias[models]
        for i in reversed(range(self.depth)):
            if i < self.depth - 1:
                y = F.leaky_relu(y, 1.0 / self.negative_slope)
            # X (L U)^T = Y - b, i.e. X U^T L^T = Y - b: solve with L^T, then with U^T (from the right)
            z = torch.linalg.solve_triangular(lower[:, i].transpose(-1, -2), y - bias[:, i, None, :], upper=True,
                                              left=False, unitriangular=True)
            y = torch.linalg.solve_triangular(upper[:, i].transpose(-1, -2), z, upper=False, left=False)
        return y

    # --- the training program ------------------------------------------------------------------

    def _chain_weights(self, models: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Weights (d, M + len(models), n, n) and biases (d, M + len(models), 1, n) of the chain that
        runs every model forward and ``models`` backward (negated, see the module docstring);
        ``models=None``: every model backward."""
        return _ChainWeights.apply(self.lower_entries, self.upper_entries, self.log_scale, self.bias,
                                   self.learn_mask, models, self._lower_index, self._upper_index,
                                   self.negative_slope)

    def forward_and_inverse(self, x: torch.Tensor, y: torch.Tensor,
                            models: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """f_m(lift(x_m)) for every model m and f_m^-1(lift(y_m)) for m in ``models``, by the one
        training chain. x, y: scalars (M, points); returns (M, points, n), (len(models), points, n)."""
        weight, bias = self._chain_weights(models)
        out = _Chain.apply(torch.cat([x, y[models]]), weight, bias, self.negative_slope)
        return out[:self.n_models], -out[self.n_models:]

    def training_loss(self, x: torch.Tensor, y: torch.Tensor,
                      models: torch.Tensor) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
        """A function of no arguments giving, with the current parameters, the per-model forward
        error mean ||f(x) - g(x)||^2 and inverse error mean ||f^-1(g(x)) - x||^2 on the training
        scalars x, y (M, points). Models not in ``models`` get inverse error 1 and no inverse pass."""
        n, M = self.features, self.n_models
        u = torch.cat([x, y[models]])
        target = torch.cat([_lift(y, n), -_lift(x[models], n)])  # the inverse half runs negated
        every = len(models) == M and bool((models == torch.arange(M)).all())

        def loss() -> tuple[torch.Tensor, torch.Tensor]:
            weight, bias = self._chain_weights(None if every else models)
            error = _ChainError.apply(u, target, weight, bias, self.negative_slope)
            if every:
                return error[:M], error[M:]
            return error[:M], error.new_ones(M).index_copy(0, models, error[M:])
        return loss

    @torch.no_grad()
    def to_module(self, m: int) -> InvertibleMLP:
        """Model m as a plain ``invcap.inn.InvertibleMLP`` with the same parameters."""
        if not 0 <= m < self.n_models:
            raise ValueError(f"model index {m} out of range [0, {self.n_models})")
        learn = bool(self.learn_mask[m])
        net = InvertibleMLP(self.features, self.depth, negative_slope=self.negative_slope,
                            learn_diagonal=learn).to(self.lower_entries.dtype)
        for i, layer in enumerate(net.linears):
            layer.lower_entries.copy_(self.lower_entries[m, i])
            layer.upper_entries.copy_(self.upper_entries[m, i])
            layer.bias.copy_(self.bias[m, i])
            if learn:
                layer.log_scale.copy_(self.log_scale[m, i])
        return net
