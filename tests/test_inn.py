"""invcap.inn against dense references: torch.linalg, autograd Jacobians, float64."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch.autograd.functional import jacobian

from invcap import inn
from invcap.inn import InvertibleLeakyReLU, InvertibleMLP, LULinear


def randomize_(module: torch.nn.Module, scale: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """Random non-identity parameters (off-diagonals ~ scale/sqrt(n), biases ~ scale)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            n = p.shape[0] if p.dim() else 1
            if name.endswith("entries"):
                n_features = int((1 + math.isqrt(1 + 8 * n)) // 2)
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale / math.sqrt(n_features))
            else:
                p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    return module


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest per-sample relative error ||a_i - b_i|| / ||b_i|| over the batch."""
    return float(((a - b).norm(dim=-1) / b.norm(dim=-1)).max())


# --- LULinear ---------------------------------------------------------------------------------

@pytest.mark.parametrize("learn_diagonal", [False, True])
def test_lu_structure_and_weight(learn_diagonal):
    n = 7
    k = torch.linspace(0.5, 2.0, n) * torch.tensor([1, -1] * 3 + [1.0])
    layer = randomize_(LULinear(n, diagonal=k, learn_diagonal=learn_diagonal).double())
    L, U = layer.lower, layer.upper
    assert torch.equal(L, torch.tril(L)) and torch.equal(torch.diagonal(L), torch.ones(n, dtype=L.dtype))
    assert torch.equal(U, torch.triu(U))
    torch.testing.assert_close(torch.diagonal(U), layer.diagonal.detach())
    if not learn_diagonal:
        torch.testing.assert_close(torch.diagonal(U), k.double())
    torch.testing.assert_close(layer.weight, L @ U)
    assert layer.lower_entries.numel() == n * (n - 1) // 2 == layer.upper_entries.numel()


@pytest.mark.parametrize("learn_diagonal", [False, True])
def test_lu_forward_inverse_logdet_match_dense(learn_diagonal):
    n, batch = 32, 50
    layer = randomize_(LULinear(n, diagonal=torch.linspace(0.5, 1.5, n), learn_diagonal=learn_diagonal)).double()
    x = torch.randn(batch, n, dtype=torch.float64)
    W, b = layer.weight, layer.bias
    torch.testing.assert_close(layer(x), x @ W.T + b)
    y = torch.randn(batch, n, dtype=torch.float64)
    torch.testing.assert_close(layer.inverse(y), (y - b) @ torch.linalg.inv(W).T)
    sign, logabs = torch.linalg.slogdet(W)
    torch.testing.assert_close(layer.log_abs_det(), logabs)


@pytest.mark.parametrize("k", [1.0, 0.5, -2.0, 3.0])
def test_det_is_product_of_diagonal(k):
    n = 20
    diag = torch.full((n,), k) * torch.linspace(0.8, 1.2, n)
    layer = randomize_(LULinear(n, diagonal=diag), seed=3).double()
    det = torch.linalg.det(layer.weight)
    torch.testing.assert_close(det, torch.prod(diag.double()), rtol=1e-9, atol=0)


def test_batch_dimensions_are_kept():
    layer = randomize_(LULinear(6)).double()
    x = torch.randn(2, 3, 6, dtype=torch.float64)
    y = layer(x)
    assert y.shape == x.shape
    torch.testing.assert_close(layer.inverse(y), x)


def test_learnable_diagonal_moves_and_stays_nonzero():
    layer = LULinear(5, diagonal=-1.0, learn_diagonal=True, log_scale_bound=2.0)
    assert sum(p.numel() for p in layer.parameters()) == 10 + 10 + 5 + 5
    with torch.no_grad():
        layer.log_scale.fill_(100.0)  # the bound keeps |k| within exp(+-2)
    k = layer.diagonal
    assert bool((k < 0).all()) and float(k.detach().abs().max()) <= math.exp(2.0) + 1e-6
    torch.testing.assert_close(layer.log_abs_det(), torch.log(k.abs()).sum())


def test_fixed_diagonal_is_not_a_parameter():
    layer = LULinear(5, diagonal=2.0)
    names = {n for n, _ in layer.named_parameters()}
    assert names == {"lower_entries", "upper_entries", "bias"}
    assert "fixed_diagonal" in dict(layer.named_buffers())


# --- activation -------------------------------------------------------------------------------

def test_leaky_relu_inverse_and_logdet():
    act = InvertibleLeakyReLU(0.3)
    x = torch.tensor([[-2.0, -0.0, 0.0, 1e-8, -1e-8, 5.0]], dtype=torch.float64)
    torch.testing.assert_close(act.inverse(act(x)), x)
    y = torch.tensor([[-7.0, 3.0]], dtype=torch.float64)  # values forward never produces for slope<1 are fine too
    torch.testing.assert_close(act(act.inverse(y)), y)
    J = jacobian(lambda v: act(v), x[0])
    torch.testing.assert_close(act.log_abs_det_jacobian(x)[0], torch.linalg.slogdet(J)[1])


# --- the network ------------------------------------------------------------------------------

@pytest.mark.parametrize("final_activation", [False, True])
@pytest.mark.parametrize("learn_diagonal", [False, True])
def test_network_matches_dense_composition_and_autograd_jacobian(final_activation, learn_diagonal):
    n, depth = 10, 4
    net = randomize_(InvertibleMLP(n, depth, negative_slope=0.4, diagonal=torch.linspace(0.7, 1.3, n),
                                   learn_diagonal=learn_diagonal, final_activation=final_activation),
                     scale=0.5).double()
    x = torch.randn(8, n, dtype=torch.float64)

    def dense(v):
        for i, lin in enumerate(net.linears):
            v = v @ lin.weight.T + lin.bias
            if i < depth - 1 or final_activation:
                v = torch.where(v >= 0, v, 0.4 * v)
        return v

    torch.testing.assert_close(net(x), dense(x))
    logdets = net.log_abs_det_jacobian(x)
    assert logdets.shape == (8,)
    for i in range(3):
        J = jacobian(net, x[i])
        torch.testing.assert_close(logdets[i], torch.linalg.slogdet(J)[1])
        # the inverse's Jacobian is the inverse matrix of the forward's
        J_inv = jacobian(net.inverse, net(x[i : i + 1])[0])
        torch.testing.assert_close(J_inv, torch.linalg.inv(J))


@pytest.mark.parametrize("dtype, tolerance", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_round_trip_at_realistic_size(dtype, tolerance):
    # Off-diagonals ~ 0.15/sqrt(n) give layers with condition numbers ~1.5: genuinely non-identity.
    # In float32 the round-trip error is eps times the network's conditioning (computing W in
    # float64 does not change it), so much worse-conditioned random layers exceed 1e-5.
    n, depth, batch = 384, 8, 256
    torch.manual_seed(0)
    net = randomize_(InvertibleMLP(n, depth, negative_slope=0.5), scale=0.15).to(dtype)
    assert net.conditioning().max_condition_number > 1.4
    x = torch.randn(batch, n, dtype=dtype)
    with torch.no_grad():
        assert relative_error(net.inverse(net(x)), x) <= tolerance
        y = torch.randn(batch, n, dtype=dtype)
        assert relative_error(net(net.inverse(y)), y) <= tolerance


def test_gradcheck_forward_and_inverse():
    net = randomize_(InvertibleMLP(5, 3, negative_slope=0.6, learn_diagonal=True), scale=0.5).double()
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(net, (x,))
    assert torch.autograd.gradcheck(net.inverse, (x,))
    # gradients reach every parameter through the inverse too
    net.inverse(x).pow(2).sum().backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in net.parameters())


def test_conditioning_against_svd():
    net = randomize_(InvertibleMLP(12, 3, negative_slope=0.5), scale=0.8).double()
    report = net.conditioning()
    assert len(report.layers) == 3
    bound = 1.0
    for layer, lin in zip(report.layers, net.linears):
        sv = torch.linalg.svdvals(lin.weight.detach())
        assert math.isclose(layer.sigma_max, float(sv[0]), rel_tol=1e-10)
        assert math.isclose(layer.condition_number, float(sv[0] / sv[-1]), rel_tol=1e-10)
        bound /= float(sv[-1])
    bound *= (1 / 0.5) ** 2
    assert math.isclose(report.inverse_lipschitz_bound, bound, rel_tol=1e-9)
    # the bound holds for actual perturbations
    y = torch.randn(64, 12, dtype=torch.float64)
    dy = 1e-3 * torch.randn_like(y)
    with torch.no_grad():
        ratio = (net.inverse(y + dy) - net.inverse(y)).norm(dim=1) / dy.norm(dim=1)
    assert float(ratio.max()) <= report.inverse_lipschitz_bound * (1 + 1e-9)


# --- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize("diagonal, match", [
    (0.0, "non-zero"), (torch.tensor([1.0, 0.0, 2.0]), "index"), (float("nan"), "NaN"),
    (torch.ones(4), "1-D tensor of 3"),
])
def test_bad_diagonal(diagonal, match):
    with pytest.raises(ValueError, match=match):
        LULinear(3, diagonal=diagonal)


@pytest.mark.parametrize("slope", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_slope(slope):
    with pytest.raises(ValueError, match="negative_slope"):
        InvertibleLeakyReLU(slope)
    with pytest.raises(ValueError, match="negative_slope"):
        InvertibleMLP(4, 2, negative_slope=slope)


@pytest.mark.parametrize("features", [0, -3, 2.5])
def test_bad_features(features):
    with pytest.raises(ValueError, match="features"):
        LULinear(features)


def test_bad_depth():
    with pytest.raises(ValueError, match="depth"):
        InvertibleMLP(4, 0)


@pytest.mark.parametrize("call", ["forward", "inverse", "log_abs_det_jacobian"])
def test_bad_inputs_to_network(call):
    net = InvertibleMLP(4, 2)
    fn = getattr(net, call)
    with pytest.raises(ValueError, match="last dimension must be 4"):
        fn(torch.randn(3, 5))
    with pytest.raises(ValueError, match="NaN/Inf"):
        fn(torch.tensor([[1.0, float("nan"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match="NaN/Inf"):
        fn(torch.tensor([[1.0, float("inf"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match="floating"):
        fn(torch.ones(2, 4, dtype=torch.long))


def test_bad_inputs_to_layer():
    layer = LULinear(4)
    with pytest.raises(ValueError, match="last dimension must be 4"):
        layer.inverse(torch.randn(3))
    with pytest.raises(ValueError, match="NaN/Inf"):
        layer(torch.full((2, 4), float("nan")))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu():
    net = randomize_(InvertibleMLP(64, 4)).double()
    x = torch.randn(16, 64, dtype=torch.float64)
    expected = net(x)
    cuda_net = copy.deepcopy(net).to("cuda")
    torch.testing.assert_close(cuda_net(x.cuda()).cpu(), expected)
    torch.testing.assert_close(cuda_net.inverse(expected.cuda()).cpu(), x)
    with torch.no_grad():                                   # the in-place solves, and shared factors
        factors = cuda_net.factors()
        torch.testing.assert_close(cuda_net.inverse(expected.cuda(), factors=factors).cpu(), x)
        torch.testing.assert_close(cuda_net(x[:3].cuda(), factors=factors).cpu(), expected[:3])


def test_in_precision_copies_once_and_matches_float32():
    from invcap.inn import in_precision

    torch.manual_seed(0)
    net = InvertibleMLP(12, 3, negative_slope=0.5)
    assert in_precision(net, torch.float32) is net
    net64 = in_precision(net, torch.float64)
    assert net64 is not net and next(net64.parameters()).dtype == torch.float64
    assert next(net.parameters()).dtype == torch.float32          # the original is untouched
    assert in_precision(net64, torch.float64) is net64            # no second copy
    x = torch.randn(5, 12)
    with torch.no_grad():
        assert torch.allclose(net64(x.double()).float(), net(x), atol=1e-5)
    with pytest.raises(ValueError, match="float32 or torch.float64"):
        in_precision(net, torch.float16)


# --- shared factors and the fast paths --------------------------------------------------------

def dense_lu(layer: LULinear) -> tuple[torch.Tensor, torch.Tensor]:
    """L and U written entry by entry from the flat parameters, independently of the layer's scatter."""
    n = layer.features
    rows, cols = torch.tril_indices(n, n, offset=-1)
    L = torch.eye(n, dtype=torch.float64)
    U = torch.diag(layer.diagonal.detach().double())
    L[rows, cols] = layer.lower_entries.detach().double()
    U[cols, rows] = layer.upper_entries.detach().double()
    return L, U


@pytest.mark.parametrize("batch", [100, 400])   # below n: two triangular matmuls; from n on: W
def test_forward_paths_match_dense_at_realistic_size(batch):
    n = 384
    layer = randomize_(LULinear(n, diagonal=torch.linspace(0.6, 1.6, n)), scale=0.3).double()
    L, U = dense_lu(layer)
    torch.testing.assert_close(layer.lower, L, rtol=0, atol=0)
    torch.testing.assert_close(layer.upper, U, rtol=0, atol=0)
    x = torch.randn(batch, n, dtype=torch.float64)
    with torch.no_grad():
        assert relative_error(layer(x), x @ (L @ U).T + layer.bias) <= 1e-13


@pytest.mark.parametrize("bias, block_rows", [(True, 512), (False, 512), (True, 64)])
def test_inverse_paths_match_dense_solve_at_realistic_size(bias, block_rows, monkeypatch):
    # The no-grad path solves in place, block_rows rows at a time (64: several blocks and a
    # partial last one), the autograd path allocates; both against a dense float64
    # torch.linalg.solve, and float32 against the float64 truth.
    monkeypatch.setattr(inn, "INVERSE_BLOCK_ROWS", block_rows)
    n, batch = 384, 300
    torch.manual_seed(0)
    layer = randomize_(LULinear(n, bias=bias), scale=0.3).double()
    L, U = dense_lu(layer)
    b = layer.bias.detach() if bias else torch.zeros(n, dtype=torch.float64)
    y = torch.randn(batch, n, dtype=torch.float64)
    y_before = y.clone()
    truth = torch.linalg.solve(L @ U, (y - b).T).T
    with torch.no_grad():
        in_place = layer.inverse(y)
    assert torch.equal(y, y_before)                     # the input is never overwritten
    y_grad = y.clone().requires_grad_()
    with_graph = layer.inverse(y_grad)
    assert with_graph.requires_grad
    assert relative_error(in_place, truth) <= 1e-12
    assert relative_error(with_graph.detach(), truth) <= 1e-12
    layer32 = copy.deepcopy(layer).float()
    with torch.no_grad():
        assert relative_error(layer32.inverse(y.float()).double(), truth) <= 1e-5


def test_shared_factors_give_the_same_values_and_gradients():
    torch.manual_seed(0)
    net = randomize_(InvertibleMLP(12, 3, negative_slope=0.6, learn_diagonal=True), scale=0.5).double()
    x = torch.randn(5, 12, dtype=torch.float64)      # 5 rows < 12: the two-matmul forward
    x_big = torch.randn(20, 12, dtype=torch.float64)  # 20 rows >= 12: the W forward
    y = torch.randn(5, 12, dtype=torch.float64)

    def loss(factors):
        return (net(x, factors=factors).pow(2).sum() + net(x_big, factors=factors).sin().sum()
                + net.inverse(y, factors=factors).pow(2).sum() + net.log_abs_det_jacobian(x, factors=factors).sum())

    grads = []
    for factors in (None, net.factors()):
        net.zero_grad()
        value = loss(factors)
        value.backward()
        grads.append((value.detach(), [p.grad.clone() for p in net.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1]):
        torch.testing.assert_close(a, b)


def test_stale_or_foreign_factors_are_refused():
    net, other = InvertibleMLP(6, 2), InvertibleMLP(6, 2)
    factors = net.factors()
    x = torch.randn(3, 6)
    net(x, factors=factors)
    with pytest.raises(ValueError, match="another network"):
        other(x, factors=factors)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    net(x, factors=factors).sum().backward()
    optimizer.step()
    with pytest.raises(ValueError, match="stale factors"):
        net.inverse(x, factors=factors)
    net.inverse(x, factors=net.factors())            # fresh factors work again


def test_weight_built_without_grad_is_not_kept_for_a_graph():
    layer = randomize_(LULinear(5))
    factors = layer.factors()
    with torch.no_grad():
        factors.weight
    assert not factors.has_weight                     # else later gradients would skip W
    assert factors.weight.requires_grad and factors.has_weight


def test_training_hook_gets_the_steps_factors():
    from invcap.captioning import CaptioningConfig, train_captioning
    from invcap.inn import NetworkFactors

    seen = []

    def hook(net, z, y, prediction, factors=None):
        seen.append(isinstance(factors, NetworkFactors))
        return net.inverse(y, factors=factors).pow(2).mean() * 0.0

    z, y = torch.randn(40, 8), torch.randn(40, 2, 8)
    train_captioning(z, y, CaptioningConfig(depth=2, steps=3, batch_size=16, device="cpu", inverse_weight=0.5),
                     progress=False, extra_loss=hook)
    assert seen == [True, True, True]


def test_method_loss_with_the_steps_factors_matches_without():
    from invcap.methods import Contrastive, Inverse, Method, MethodLoss, Spread

    loss = MethodLoss(Method("t", "spread + inverse + contrastive", terms=(Spread(1e-2), Inverse(1.0),
                                                                          Contrastive(0.1, 0.5))))
    net = randomize_(InvertibleMLP(8, 3, learn_diagonal=True), scale=0.4).double()
    z, y = torch.randn(6, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64)
    results = []
    for factors in (None, net.factors()):
        net.zero_grad()
        torch.manual_seed(1)                          # the same noise draw both times
        value = loss(net, z, y, net(z, factors=factors), factors=factors)
        value.backward()
        results.append((value.detach(), [p.grad.clone() for p in net.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        torch.testing.assert_close(a, b)


def test_no_grad_calls_reuse_factors_until_a_parameter_changes():
    torch.manual_seed(0)
    layer = randomize_(LULinear(12, learn_diagonal=True))
    x = torch.randn(40, 12)
    with torch.no_grad():
        first = layer._call_factors()
        assert layer._call_factors() is first                      # built once
        y = layer(x)
        assert first.has_weight                                    # W kept with them
        assert torch.equal(y, F.linear(x, layer.lower @ layer.upper, layer.bias))
        assert torch.equal(layer.inverse(y), layer.inverse(y, factors=layer.factors()))
        layer.upper_entries.add_(0.1)                              # an in-place change: new factors
        assert layer._call_factors() is not first
        assert torch.allclose(layer(x), x @ (layer.lower @ layer.upper).T + layer.bias, atol=1e-6)
    assert layer.factors() is not layer.factors()                  # with autograd: always fresh
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer(x).square().sum().backward()
    optimizer.step()                                               # an optimizer step: new factors
    with torch.no_grad():
        assert torch.allclose(layer(x), x @ (layer.lower @ layer.upper).T + layer.bias, atol=1e-6)
        double = layer.double()                                    # .to: new storage, new factors
        assert torch.allclose(double(x.double()), x.double() @ (double.lower @ double.upper).T + double.bias,
                              atol=1e-12)
    state = {k: v.clone() + 0.05 for k, v in layer.state_dict().items()}
    layer.load_state_dict(state)                                   # load_state_dict: new factors
    with torch.no_grad():
        assert torch.allclose(layer(x.double()), x.double() @ (layer.lower @ layer.upper).T + layer.bias, atol=1e-12)
