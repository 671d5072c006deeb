"""The paper's invertible network (section 3.1), in the style of nflows' transforms.

Each piece has ``forward``, ``inverse`` and its log-determinant:

- ``LULinear``: y = x W^T + b with W = L U. L is unit lower-triangular with learnable strictly
  lower entries; U is upper-triangular with learnable strictly upper entries and a diagonal
  k_i that is fixed and non-zero (the paper), or learnable as sign * exp(log_scale) (Glow /
  nflows variant). det W = prod k_i, so W can never become singular. The inverse is two
  triangular solves, never an explicit matrix inverse.
- ``InvertibleLeakyReLU``: slope ``negative_slope`` (> 0) below zero, inverse with 1/slope.
- ``InvertibleMLP``: ``depth`` LU layers with a LeakyReLU between consecutive layers (and,
  with ``final_activation=True``, after the last one, as in the paper's formula).

Everything works in float32 and float64, on CPU and CUDA, with autograd through both
directions. Bad input raises ``ValueError`` naming what was wrong.

Speed (``make bench``): ``net.factors()`` builds every layer's L and U once, and passing them as ``factors=`` to the forward and the inverse of one optimisation step
shares them, gradients included; they refuse to be used after the parameters changed. The
forward is two triangular matmuls below n rows and one matmul with W = L U from n rows on.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

# Rows per pair of triangular solves in the no-grad inverse on CPU. Few, large solves: each solve is
# one OpenMP parallel region, and under OMP_WAIT_POLICY=PASSIVE (the Makefile's setting) every region
# wakes sleeping threads. Measured at n = 384 on 2 AVX-512 cores under PASSIVE, inverse / plain matmul:
# 512-row blocks 2.33x, one solve 1.44x at batch 4096; 1.79x / 1.38x / 1.37x with 512 / 8192 /
# 32768-row blocks at batch 32768. So one solve for any realistic batch (the values are the same).
INVERSE_BLOCK_ROWS = 65536

__all__ = ["LULinear", "LUFactors", "InvertibleLeakyReLU", "InvertibleMLP", "NetworkFactors", "LayerConditioning", "Conditioning", "in_precision"]


def _check_input(x: torch.Tensor, features: int, what: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 1 or x.shape[-1] != features:
        raise ValueError(f"{what} has shape {tuple(x.shape)} but the network has {features} features: "
                         f"the last dimension must be {features}")
    if not x.is_floating_point():
        raise ValueError(f"{what} has dtype {x.dtype}; use a floating dtype (float32 or float64)")
    # A NaN/Inf anywhere makes the sum non-finite: one cheap reduction instead of an elementwise
    # mask on every call; the exact count is only computed when something is wrong.
    if not bool(torch.isfinite(x.sum())):
        bad = int((~torch.isfinite(x)).sum())
        if bad == 0:  # the sum overflowed on finite values
            return
        raise ValueError(f"{what} contains {bad} NaN/Inf value(s); clean the input before calling the network")


def _as_diagonal(diagonal: float | torch.Tensor, features: int) -> torch.Tensor:
    diag = torch.as_tensor(diagonal, dtype=torch.get_default_dtype()).detach().clone()
    if diag.dim() == 0:
        diag = diag.expand(features).clone()
    if diag.shape != (features,):
        raise ValueError(f"diagonal must be a float or a 1-D tensor of {features} values k_i, "
                         f"got shape {tuple(diag.shape)}")
    if not bool(torch.isfinite(diag).all()):
        raise ValueError("diagonal contains NaN/Inf; every k_i must be a finite non-zero number")
    zeros = (diag == 0).nonzero().flatten().tolist()
    if zeros:
        raise ValueError(f"diagonal k_i must be non-zero (det W = prod k_i), but k_i = 0 at index(es) "
                         f"{zeros[:10]}{'...' if len(zeros) > 10 else ''}")
    return diag


class LUFactors:
    """L and U of one ``LULinear`` (and W = L U once asked for), built from its parameters.

    ``LULinear.factors()`` builds them; passing the same object to ``forward`` and ``inverse``
    builds L and U once for both directions, and autograd sums the gradients of every use into
    the parameters. ``weight`` is computed on first use and then kept, so build new factors
    after the parameters change (``InvertibleMLP.factors()`` checks that for you).
    """

    __slots__ = ("lower", "upper", "_weight")

    def __init__(self, lower: torch.Tensor, upper: torch.Tensor, weight: torch.Tensor | None = None) -> None:
        self.lower, self.upper, self._weight = lower, upper, weight

    @property
    def weight(self) -> torch.Tensor:
        """W = L U (computed once per factors object)."""
        if self._weight is not None:
            return self._weight
        weight = self.lower @ self.upper
        # A W built under no_grad from factors that carry a graph would cut later gradients.
        if torch.is_grad_enabled() or not self.lower.requires_grad:
            self._weight = weight
        return weight

    @property
    def has_weight(self) -> bool:
        return self._weight is not None

    def to(self, dtype: torch.dtype) -> "LUFactors":
        """The factors in ``dtype`` (self when they already are)."""
        if self.lower.dtype == dtype:
            return self
        weight = None if self._weight is None else self._weight.to(dtype)
        return LUFactors(self.lower.to(dtype), self.upper.to(dtype), weight)


class LULinear(nn.Module):
    """y = x W^T + b with W = L U (see the module docstring).

    Args:
        features: width n (input and output), >= 1.
        diagonal: the k_i, a non-zero float or a 1-D tensor of n non-zero values.
        learn_diagonal: False (paper): k is a fixed buffer. True: k = sign(k0) * exp(log_scale)
            with log_scale learnable, initialised at log|k0|; never zero.
        bias: learn b (initialised at 0).
        log_scale_bound: with ``learn_diagonal``, squash log_scale into (-bound, bound) by
            bound * tanh(raw / bound), which bounds how far |k_i| can move from 1.
        init_std: standard deviation of the initial off-diagonal entries divided by sqrt(n);
            0 (default) starts at W = diag(k).

    ``forward(x, factors=None)`` and ``inverse(y, factors=None)`` take optional ``LUFactors``
    from ``factors()`` to share L and U between calls.
    """

    def __init__(self, features: int, diagonal: float | torch.Tensor = 1.0, learn_diagonal: bool = False,
                 bias: bool = True, log_scale_bound: float | None = None, init_std: float = 0.0) -> None:
        super().__init__()
        if not isinstance(features, int) or features < 1:
            raise ValueError(f"features must be an int >= 1, got {features!r}")
        if log_scale_bound is not None and not (log_scale_bound > 0):
            raise ValueError(f"log_scale_bound must be positive or None, got {log_scale_bound}")
        self.features = features
        self.learn_diagonal = learn_diagonal
        self.log_scale_bound = log_scale_bound
        diag = _as_diagonal(diagonal, features)

        n_off = features * (features - 1) // 2
        rows, cols = torch.tril_indices(features, features, offset=-1)
        # Flat positions in a row-major n x n matrix: L's strict lower entries then its diagonal
        # (ones); U's strict upper entries (stored in the order of U^T's lower ones) then its diagonal.
        diag_index = torch.arange(features) * (features + 1)
        self.register_buffer("_lower_index", torch.cat([rows * features + cols, diag_index]), persistent=False)
        self.register_buffer("_upper_index", torch.cat([cols * features + rows, diag_index]), persistent=False)
        scale = init_std / math.sqrt(features)
        self.lower_entries = nn.Parameter(torch.randn(n_off) * scale if scale else torch.zeros(n_off))
        self.upper_entries = nn.Parameter(torch.randn(n_off) * scale if scale else torch.zeros(n_off))
        if learn_diagonal:
            self.register_buffer("diagonal_sign", torch.sign(diag))
            log_abs = diag.abs().log()
            if log_scale_bound is not None:
                if bool((log_abs.abs() >= log_scale_bound).any()):
                    raise ValueError(f"|log|k_i|| must be below log_scale_bound={log_scale_bound} at start")
                log_abs = log_scale_bound * torch.atanh(log_abs / log_scale_bound)
            self.log_scale = nn.Parameter(log_abs)
        else:
            self.register_buffer("fixed_diagonal", diag)
        self.bias = nn.Parameter(torch.zeros(features)) if bias else None

    # --- the pieces of W -------------------------------------------------------------------
    @property
    def diagonal(self) -> torch.Tensor:
        """The k_i currently in use (fixed, or sign * exp(log_scale))."""
        if not self.learn_diagonal:
            return self.fixed_diagonal
        log_scale = self.log_scale
        if self.log_scale_bound is not None:
            log_scale = self.log_scale_bound * torch.tanh(log_scale / self.log_scale_bound)
        return self.diagonal_sign * torch.exp(log_scale)

    def _log_abs_diagonal(self) -> torch.Tensor:
        if not self.learn_diagonal:
            return self.fixed_diagonal.abs().log()
        if self.log_scale_bound is not None:
            return self.log_scale_bound * torch.tanh(self.log_scale / self.log_scale_bound)
        return self.log_scale

    def factors(self) -> LUFactors:
        """L and U from the current parameters, each one in-place scatter into fresh zeros (its
        backward is one gather; a shared buffer would cost a zero-filled copy per factor)."""
        n, entries = self.features, self.lower_entries
        lower = entries.new_zeros(n * n).scatter_(0, self._lower_index, torch.cat([entries, entries.new_ones(n)]))
        upper = entries.new_zeros(n * n).scatter_(
            0, self._upper_index, torch.cat([self.upper_entries, self.diagonal.to(entries.dtype)]))
        return LUFactors(lower.view(n, n), upper.view(n, n))

    def _call_factors(self) -> LUFactors:
        """The factors of a call without ``factors=``. With autograd on they are built fresh (the
        graph needs them); without, they are built once and kept, W included, until a parameter or
        buffer changes its storage or version counter (an optimizer step, ``load_state_dict``, a
        ``copy_``, ``.to``): inference then pays for L, U and W once per weight update, not per call."""
        if torch.is_grad_enabled():
            return self.factors()
        key = tuple((t.data_ptr(), t._version, t.dtype, t.device) for t in (*self.parameters(), *self.buffers()))
        cached = self.__dict__.get("_no_grad_factors")
        if cached is None or cached[0] != key:
            cached = (key, self.factors())
            self.__dict__["_no_grad_factors"] = cached
        return cached[1]

    @property
    def lower(self) -> torch.Tensor:
        """L: unit lower-triangular."""
        return self.factors().lower

    @property
    def upper(self) -> torch.Tensor:
        """U: upper-triangular with the k_i on its diagonal."""
        return self.factors().upper

    @property
    def weight(self) -> torch.Tensor:
        """The dense W = L @ U, shape (features, features)."""
        return self.factors().weight

    def log_abs_det(self) -> torch.Tensor:
        """log|det W| = sum_i log|k_i| (a scalar)."""
        return self._log_abs_diagonal().sum()

    # --- the two directions ---------------------------------------------------------------
    def forward(self, x: torch.Tensor, factors: LUFactors | None = None) -> torch.Tensor:
        _check_input(x, self.features, "LULinear input")
        return self._forward(x, factors)

    def inverse(self, y: torch.Tensor, factors: LUFactors | None = None) -> torch.Tensor:
        _check_input(y, self.features, "LULinear.inverse input")
        return self._inverse(y, factors)

    def _forward(self, x: torch.Tensor, factors: LUFactors | None = None) -> torch.Tensor:
        f = (factors if factors is not None else self._call_factors()).to(x.dtype)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        # Dense W costs ~n^3 once, then one matmul (2 B n^2 flops); two triangular matmuls
        # (x U^T) L^T cost 4 B n^2 and no W. The backward scales the same way, so W pays off
        # from B = n rows on, or whenever W was already built for these factors.
        if f.has_weight or x.numel() >= self.features * self.features:
            return F.linear(x, f.weight, bias)
        return F.linear(F.linear(x, f.upper), f.lower, bias)

    def _inverse(self, y: torch.Tensor, factors: LUFactors | None = None) -> torch.Tensor:
        # Solve X (L U)^T = Y - b as L Z = (Y - b)^T, then U X^T = Z: two triangular solves from
        # the left on the transposed view, which is already the column-major layout LAPACK wants.
        f = (factors if factors is not None else self._call_factors()).to(y.dtype)
        shape = y.shape
        rhs = y.reshape(-1, self.features)
        if torch.is_grad_enabled() and (rhs.requires_grad or f.lower.requires_grad or f.upper.requires_grad
                                        or (self.bias is not None and self.bias.requires_grad)):
            if self.bias is not None:
                rhs = rhs - self.bias.to(y.dtype)
            z = torch.linalg.solve_triangular(f.lower, rhs.mT, upper=False, unitriangular=True)
            return torch.linalg.solve_triangular(f.upper, z, upper=True).mT.reshape(shape)
        # Without autograd: solve in place in one fresh buffer (no copy of the right-hand side
        # per solve), INVERSE_BLOCK_ROWS rows per pair of solves; a row block's transposed view is
        # exactly LAPACK's column-major layout. Every row is solved on its own, so the blocking
        # changes no value.
        out = torch.empty(rhs.shape, dtype=rhs.dtype, device=rhs.device)
        step = INVERSE_BLOCK_ROWS if rhs.device.type == "cpu" else max(1, rhs.shape[0])
        for start in range(0, rhs.shape[0], step):
            block = out[start:start + step]
            if self.bias is not None:
                torch.sub(rhs[start:start + step], self.bias.to(y.dtype), out=block)
            else:
                block.copy_(rhs[start:start + step])
            block_t = block.mT
            torch.linalg.solve_triangular(f.lower, block_t, upper=False, unitriangular=True, out=block_t)
            torch.linalg.solve_triangular(f.upper, block_t, upper=True, out=block_t)
        return out.reshape(shape)

    def extra_repr(self) -> str:
        kind = "learnable" if self.learn_diagonal else "fixed"
        return f"features={self.features}, diagonal={kind}, bias={self.bias is not None}"


class InvertibleLeakyReLU(nn.Module):
    """LeakyReLU with a strictly positive slope, so it is a bijection of the reals.

    forward: x if x >= 0 else slope * x; inverse: y if y >= 0 else y / slope.
    ``log_abs_det_jacobian(x)`` = log(slope) * (number of entries <= 0), per sample.
    """

    def __init__(self, negative_slope: float = 0.5) -> None:
        super().__init__()
        slope = float(negative_slope)
        if not math.isfinite(slope) or slope <= 0:
            raise ValueError(f"negative_slope must be a finite number > 0 for LeakyReLU to be invertible, "
                             f"got {negative_slope!r}")
        self.negative_slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(y, 1.0 / self.negative_slope)

    def log_abs_det_jacobian(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample log|det J| at the input x, shape x.shape[:-1]. At x = 0 the slope is taken
        as ``negative_slope``, the same convention as torch's autograd for leaky_relu."""
        return (x <= 0).sum(dim=-1).to(x.dtype) * math.log(self.negative_slope)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


@dataclass
class LayerConditioning:
    """Singular-value summary of one W (computed in float64)."""

    index: int
    sigma_min: float
    sigma_max: float
    condition_number: float
    log_abs_det: float


@dataclass
class Conditioning:
    """Per-layer conditioning and Lipschitz bounds of the whole network.

    ``inverse_lipschitz_bound`` = prod_i 1/sigma_min(W_i) * max(1, 1/slope)^m and
    ``forward_lipschitz_bound`` = prod_i sigma_max(W_i) * max(1, slope)^m, with m activations:
    ||f^-1(y1) - f^-1(y2)|| <= inverse_lipschitz_bound * ||y1 - y2||.
    """

    layers: list[LayerConditioning] = field(default_factory=list)
    inverse_lipschitz_bound: float = 1.0
    forward_lipschitz_bound: float = 1.0

    @property
    def max_condition_number(self) -> float:
        return max(layer.condition_number for layer in self.layers)

    def as_rows(self) -> list[dict]:
        return [vars(layer).copy() for layer in self.layers]


class NetworkFactors:
    """Every layer's ``LUFactors`` of one ``InvertibleMLP``, for one optimisation step.

    Build with ``net.factors()`` after ``optimizer.step()`` (or once for a no-grad evaluation),
    pass as ``factors=`` to ``net(...)``, ``net.inverse(...)`` and ``net.log_abs_det_jacobian(...)``:
    L and U (and W, when a direction asks for it) are then built once for all of them. Using
    them after the parameters changed in place (an optimizer step, ``load_state_dict``, a
    ``copy_``) raises ``ValueError``: they record the parameters' version counters.
    """

    def __init__(self, net: "InvertibleMLP") -> None:
        self._net_id = id(net)
        self._versions = net._parameter_versions()
        self.layers = tuple(linear.factors() for linear in net.linears)

    def check(self, net: "InvertibleMLP") -> None:
        if self._net_id != id(net):
            raise ValueError("these factors belong to another network; build them with this net.factors()")
        if self._versions != net._parameter_versions():
            raise ValueError("stale factors: the network's parameters changed since net.factors() "
                             "(e.g. optimizer.step()); call net.factors() again")

    def __getitem__(self, i: int) -> LUFactors:
        return self.layers[i]

    def __len__(self) -> int:
        return len(self.layers)


class InvertibleMLP(nn.Module):
    """``depth`` LULinear layers with InvertibleLeakyReLU between them.

    f(x) = A_depth(s(... s(A_1 x)))  (plus a last s when ``final_activation``), and
    f^-1 runs the pieces backwards with their inverses. ``forward``, ``inverse`` and
    ``log_abs_det_jacobian`` take ``factors=net.factors()`` to share L and U between calls
    within one optimisation step (see ``NetworkFactors``).
    """

    def __init__(self, features: int, depth: int, negative_slope: float = 0.5,
                 diagonal: float | torch.Tensor = 1.0, learn_diagonal: bool = False, bias: bool = True,
                 final_activation: bool = False, log_scale_bound: float | None = None,
                 init_std: float = 0.0) -> None:
        super().__init__()
        if not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be an int >= 1, got {depth!r}")
        self.features = features
        self.depth = depth
        self.final_activation = final_activation
        self.linears = nn.ModuleList(
            LULinear(features, diagonal=diagonal, learn_diagonal=learn_diagonal, bias=bias,
                     log_scale_bound=log_scale_bound, init_std=init_std)
            for _ in range(depth))
        self.activation = InvertibleLeakyReLU(negative_slope)

    @property
    def n_activations(self) -> int:
        return self.depth if self.final_activation else self.depth - 1

    def _has_activation_after(self, i: int) -> bool:
        return i < self.depth - 1 or self.final_activation

    def _parameter_versions(self) -> tuple[int, ...]:
        return tuple(p._version for p in self.parameters())

    def factors(self) -> NetworkFactors:
        """L and U of every layer from the current parameters (see ``NetworkFactors``)."""
        return NetworkFactors(self)

    def _layer_factors(self, factors: NetworkFactors | None) -> tuple[LUFactors | None, ...]:
        if factors is None:
            return (None,) * self.depth
        factors.check(self)
        return factors.layers

    def forward(self, x: torch.Tensor, factors: NetworkFactors | None = None) -> torch.Tensor:
        _check_input(x, self.features, "InvertibleMLP input")
        for i, (linear, f) in enumerate(zip(self.linears, self._layer_factors(factors))):
            x = linear._forward(x, f)
            if self._has_activation_after(i):
                x = self.activation(x)
        return x

    def inverse(self, y: torch.Tensor, factors: NetworkFactors | None = None) -> torch.Tensor:
        _check_input(y, self.features, "InvertibleMLP.inverse input")
        layer_factors = self._layer_factors(factors)
        for i in reversed(range(self.depth)):
            if self._has_activation_after(i):
                y = self.activation.inverse(y)
            y = self.linears[i]._inverse(y, layer_factors[i])
        return y

    def log_abs_det_jacobian(self, x: torch.Tensor, factors: NetworkFactors | None = None) -> torch.Tensor:
        """Per-sample log|det df/dx| at x, shape x.shape[:-1]."""
        _check_input(x, self.features, "InvertibleMLP input")
        total = x.new_zeros(x.shape[:-1])
        for i, (linear, f) in enumerate(zip(self.linears, self._layer_factors(factors))):
            x = linear._forward(x, f)
            total = total + linear.log_abs_det().to(x.dtype)
            if self._has_activation_after(i):
                total = total + self.activation.log_abs_det_jacobian(x)
                x = self.activation(x)
        return total

    @torch.no_grad()
    def conditioning(self) -> Conditioning:
        """Singular values of every W (float64) and the network's Lipschitz bounds."""
        slope = self.activation.negative_slope
        layers, inv_log, fwd_log = [], 0.0, 0.0
        for i, linear in enumerate(self.linears):
            weight = linear.weight.detach().double()
            sv = torch.linalg.svdvals(weight)
            s_max, s_min = float(sv[0]), float(sv[-1])
            layers.append(LayerConditioning(i, s_min, s_max, s_max / s_min, float(linear.log_abs_det())))
            inv_log += -math.log(s_min)
            fwd_log += math.log(s_max)
        inv_log += self.n_activations * max(0.0, -math.log(slope))
        fwd_log += self.n_activations * max(0.0, math.log(slope))
        return Conditioning(layers, math.exp(min(inv_log, 700.0)), math.exp(min(fwd_log, 700.0)))

    def extra_repr(self) -> str:
        return f"features={self.features}, depth={self.depth}, final_activation={self.final_activation}"


def in_precision(net: InvertibleMLP, dtype: torch.dtype) -> InvertibleMLP:
    """The network to run in ``dtype``: itself for float32; for float64 a CPU copy (the network's
    own maths without float32 rounding), or the network itself when it already is one, so that
    callers in a loop do not copy it again."""
    if dtype == torch.float32:
        return net
    if dtype != torch.float64:
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    first = next(net.parameters())
    if first.dtype == torch.float64 and first.device.type == "cpu":
        return net
    return copy.deepcopy(net).to("cpu", torch.float64).eval()
