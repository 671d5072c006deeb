"""invcap.toy (the library): the lifting protocol, the error definitions, the stacked trainer against
invcap.inn, run_experiment on a user function and its bad inputs, the cache.
invcap.studies.nb01_toy_invertibility (notebook 01): parameters, table, verdicts near and far from
their thresholds, conclusions, results files and the README blocks rendered from them."""

import math

import pytest
import torch

from invcap import toy
from invcap.inn import InvertibleMLP
from invcap.toy import (FUNCTIONS, VARIANTS, ExperimentResult, Job, TrainConfig, evaluate, lift, run_experiment,
                        squared_error, train_stack)
from invcap.toy_stack import StackedInvertibleMLP, _Chain, _ChainError, _ChainWeights

TINY = dict(features=4, depth=3, steps=150, n_train=64, n_test=128)


@pytest.fixture(autouse=True)
def one_thread():
    # These ops are tiny: one thread is faster and immune to other processes' load.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- protocol and error definitions ----------------------------------------------------------

def test_lift_puts_the_value_first_and_zeros_elsewhere():
    values = torch.tensor([[1.5, -2.0, 0.25]])
    lifted = lift(values, 5)
    assert lifted.shape == (1, 3, 5)
    torch.testing.assert_close(lifted[..., 0], values)
    assert torch.count_nonzero(lifted[..., 1:]) == 0


class AffineOracle(torch.nn.Module):
    """f(x) = a x + c in coordinate 0, identity on the pads; exact inverse."""

    def __init__(self, a: float, c: float, features: int = 3):
        super().__init__()
        self.a, self.c, self.features = a, c, features

    def forward(self, x):
        out = x.clone()
        out[..., 0] = self.a * x[..., 0] + self.c
        return out

    def inverse(self, y):
        out = y.clone()
        out[..., 0] = (y[..., 0] - self.c) / self.a
        return out


def test_a_perfect_model_scores_zero_and_a_known_offset_scores_that_offset():
    x = torch.linspace(-1, 1, 101, dtype=torch.float64)
    assert evaluate(AffineOracle(2.0, 0.0), x, 2.0 * x) == {"learning_error": 0.0, "inversion_error": 0.0,
                                                           "roundtrip_error": 0.0}
    # g(x) = 2x, f(x) = 2x + c: forward off by c, f^-1(g(x)) = x - c/2 on the TRUE targets, exact round trip
    scores = evaluate(AffineOracle(2.0, 0.3), x, 2.0 * x)
    assert scores["learning_error"] == pytest.approx(0.09, rel=1e-12)
    assert scores["inversion_error"] == pytest.approx(0.0225, rel=1e-12)
    assert scores["roundtrip_error"] == pytest.approx(0.0, abs=1e-28)


def test_stratified_training_points_fill_every_bin():
    x, y = toy.sample_points(torch.exp, (-1.0, 3.0), 40, torch.Generator().manual_seed(0), stratified=True)
    bins = torch.floor((x.double() + 1.0) / 4.0 * 40).long()
    assert torch.equal(bins, torch.arange(40))
    torch.testing.assert_close(y, torch.exp(x))
    x_iid, _ = toy.sample_points(torch.exp, (-1.0, 3.0), 4000, torch.Generator().manual_seed(0))
    assert -1.0 <= float(x_iid.min()) and float(x_iid.max()) <= 3.0 and abs(float(x_iid.mean()) - 1.0) < 0.1


def test_objectives_and_errors_count_the_pads():
    forward, inverse = torch.tensor([1e-2, 1e-2, 4.0]), torch.tensor([1e-4, 1e-4, 1.0])
    out = toy._objective(forward, inverse, torch.tensor([0.0, 0.3, 1.0]), torch.tensor([0, 1, 0]))
    torch.testing.assert_close(out, torch.tensor([1e-2, math.log(1e-2) + 0.3 * math.log(1e-4), 5.0]))
    assert float(squared_error(torch.tensor([[1.0, 0.5, 0.0]]), torch.tensor([[1.0, 0.0, 0.0]]))) == pytest.approx(0.25)


def test_evaluate_on_a_real_network_with_a_bias_offset():
    net = InvertibleMLP(4, 1).double()  # one identity layer with bias (c, 0, ...): offset c both ways
    with torch.no_grad():
        net.linears[0].bias[0] = 0.1
    x = torch.linspace(-1, 1, 11, dtype=torch.float64)
    scores = evaluate(net, x, x)
    assert scores["learning_error"] == pytest.approx(0.01) and scores["inversion_error"] == pytest.approx(0.01)
    assert scores["roundtrip_error"] < 1e-30


# --- the stacked network is the library's network --------------------------------------------

def random_stack(dtype=torch.float64, learn=(False, True, False)) -> StackedInvertibleMLP:
    net = StackedInvertibleMLP(len(learn), 6, 4, negative_slope=0.3, learn_diagonal=list(learn), dtype=dtype)
    net.reset_parameters_([torch.Generator().manual_seed(s) for s in range(len(learn))], 0.8, 0.5)
    with torch.no_grad():
        net.log_scale.normal_(0, 0.3)  # only the learnable-diagonal models read it
    return net


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_stack_and_its_training_chain_match_invertible_mlp(dtype, tol):
    net = random_stack(dtype)
    x, y = torch.randn(3, 50, dtype=dtype), torch.randn(3, 50, dtype=dtype)
    models = torch.tensor([2, 1])
    with torch.no_grad():
        fwd, back = net(lift(x, 6)), net.inverse(lift(y, 6))
        chain_fwd, chain_back = net.forward_and_inverse(x, y, models)
    for m in range(3):
        module = net.to_module(m)
        assert isinstance(module, InvertibleMLP) and module.linears[0].learn_diagonal == (m == 1)
        with torch.no_grad():
            torch.testing.assert_close(fwd[m], module(lift(x[m], 6)), rtol=tol, atol=tol)
            torch.testing.assert_close(chain_fwd[m], module(lift(x[m], 6)), rtol=tol, atol=tol)
            # the layer's left-side in-place solves round differently from the stack's right-side
            # ones: in float32 they agree to ~1e-5 relative on this ill-conditioned toy net (inn, aee1cf9)
            torch.testing.assert_close(back[m], module.inverse(lift(y[m], 6)), rtol=tol * 10, atol=tol * 10)
    for k, m in enumerate(models.tolist()):
        with torch.no_grad():
            torch.testing.assert_close(chain_back[k], net.to_module(m).inverse(lift(y[m], 6)), rtol=tol * 10, atol=tol * 10)
    torch.testing.assert_close(net.factors()[1].diagonal(dim1=-2, dim2=-1)[0], torch.ones(4, 6, dtype=dtype))


def test_hand_written_backwards_pass_gradcheck():
    net = StackedInvertibleMLP(2, 4, 3, negative_slope=0.3, learn_diagonal=[True, False], dtype=torch.float64)
    net.reset_parameters_([torch.Generator().manual_seed(s) for s in range(2)], 0.8, 0.5)
    with torch.no_grad():
        net.log_scale.normal_(0, 0.3)
    for models in (torch.tensor([1]), torch.tensor([], dtype=torch.long), None):  # None: every model
        assert torch.autograd.gradcheck(
            lambda a, b, c, d: _ChainWeights.apply(a, b, c, d, net.learn_mask, models, net._lower_index,
                                                   net._upper_index, 0.3),
            (net.lower_entries, net.upper_entries, net.log_scale, net.bias))
    u = torch.randn(2, 7, dtype=torch.float64)
    w = torch.randn(3, 2, 5, 5, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, 2, 1, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, b: _Chain.apply(u, w, b, 0.3), (w, b))
    target = torch.randn(2, 7, 5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda w, b: _ChainError.apply(u, target, w, b, 0.3), (w, b))


@pytest.mark.parametrize("models", [[0, 1], [0, 1, 2]])
def test_stack_training_gradients_match_autograd_on_the_modules(models):
    net = random_stack()
    x, y = torch.randn(3, 30, dtype=torch.float64), torch.randn(3, 30, dtype=torch.float64)
    models = torch.tensor(models)
    forward, inverse = net.training_loss(x, y, models)()
    if len(models) < 3:
        assert float(inverse[2].detach()) == 1.0  # no inverse pass for a model outside `models`
    (forward.sum() + inverse.sum()).backward()
    for m in range(3):
        module = net.to_module(m)
        loss = squared_error(module(lift(x[m], 6)), lift(y[m], 6))
        if m in models.tolist():
            loss = loss + squared_error(module.inverse(lift(y[m], 6)), lift(x[m], 6))
        loss.backward()
        for i, layer in enumerate(module.linears):
            torch.testing.assert_close(net.lower_entries.grad[m, i], layer.lower_entries.grad)
            torch.testing.assert_close(net.upper_entries.grad[m, i], layer.upper_entries.grad)
            torch.testing.assert_close(net.bias.grad[m, i], layer.bias.grad)
            if layer.learn_diagonal:
                torch.testing.assert_close(net.log_scale.grad[m, i], layer.log_scale.grad)
    assert torch.count_nonzero(net.log_scale.grad[[0, 2]]) == 0  # fixed-diagonal models ignore it


def test_a_model_trains_the_same_alone_and_in_a_stack():
    sine = FUNCTIONS["sine"]
    variant = VARIANTS["balanced_learn_diag_float64"]
    job = Job("sine", sine.fn, sine.domain, variant, 3)
    other = Job("exponential", torch.exp, (-1.0, 1.0), variant, 5)
    config = TrainConfig(**{**TINY, "steps": 40})
    alone = train_stack([job], config)[0]
    stacked = train_stack([other, job, other], config)[1]
    for key in ("learning_error", "inversion_error", "roundtrip_error"):
        assert getattr(stacked, key) == pytest.approx(getattr(alone, key), rel=1e-9)


def test_steps_factor_trains_that_many_more_steps():
    longer = toy.Variant("longer", "", inverse_weight=0.3, objective="log", steps_factor=2)
    base = toy.Variant("longer", "", inverse_weight=0.3, objective="log")
    a = run_experiment(torch.exp, (-1.0, 1.0), longer, **{**TINY, "steps": 20})
    b = run_experiment(torch.exp, (-1.0, 1.0), base, **{**TINY, "steps": 40})
    assert a.learning_error == b.learning_error and a.inversion_error == b.inversion_error


def test_run_table_cache_is_reused_and_keyed_by_the_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("INVCAP_CACHE_DIR", str(tmp_path))
    config = TrainConfig(**{**TINY, "steps": 10})
    first = toy.run_table(["exponential"], ["paper", "balanced"], [0], config, cache=True)
    assert len(list((tmp_path / "toy").glob("table1-*.pt"))) == 1
    assert toy.table_cache_path(["exponential"], ["paper", "balanced"], [0], config).is_file()
    again = toy.run_table(["exponential"], ["paper", "balanced"], [0], config, cache=True)
    assert [r.scores() for r in again] == [r.scores() for r in first]
    x = torch.linspace(-1, 1, 9)
    torch.testing.assert_close(again[1].model(lift(x, 4)), first[1].model(lift(x, 4)))
    toy.run_table(["exponential"], ["paper"], [0], config, cache=True)  # other settings, other file
    assert len(list((tmp_path / "toy").glob("table1-*.pt"))) == 2
    key = toy.table_cache_key(["exponential"], [VARIANTS["paper"]], [0], config)
    assert key != toy.table_cache_key(["exponential"], [VARIANTS["paper"]], [0], TrainConfig(**{**TINY, "steps": 11}))
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "another kernel path")
    assert key != toy.table_cache_key(["exponential"], [VARIANTS["paper"]], [0], config)


def test_one_stack_one_dtype_and_divergence_is_a_clear_error():
    sine = FUNCTIONS["sine"]
    jobs = [Job("sine", sine.fn, sine.domain, VARIANTS[v], 0) for v in ("paper", "paper_float64")]
    with pytest.raises(ValueError, match="one \\(dtype, steps_factor\\)"):
        train_stack(jobs, TrainConfig(**TINY))
    with pytest.raises(ValueError, match="training diverged"):
        run_experiment(torch.exp, (-1.0, 1.0), "paper", **{**TINY, "steps": 30, "lr": 1e6})


# --- run_experiment on a user function ---------------------------------------------------------

def test_run_experiment_on_a_user_function_learns_and_is_reproducible():
    first = run_experiment(target=torch.tanh, domain=(-2.0, 2.0), variant="balanced_learn_diag", seed=0, **TINY)
    again = run_experiment(target=torch.tanh, domain=(-2.0, 2.0), variant="balanced_learn_diag", seed=0, **TINY)
    assert isinstance(first, ExperimentResult) and isinstance(first.model, InvertibleMLP)
    assert first.model.features == 4 and first.model.depth == 3
    for key in ("learning_error", "inversion_error", "roundtrip_error"):
        assert math.isfinite(getattr(first, key)) and getattr(first, key) >= 0
        assert getattr(first, key) == getattr(again, key)
    # tanh spans (-0.96, 0.96): a constant guess scores ~0.6; training must do far better
    assert first.learning_error < 0.02 and first.inversion_error < 0.05
    assert first.roundtrip_error < 1e-8
    x = torch.linspace(-2, 2, 64)  # the scores are those of the returned model on fresh points
    assert evaluate(first.model, x, torch.tanh(x))["learning_error"] < 0.05


@pytest.mark.parametrize("kwargs,match", [
    (dict(variant="nope"), "unknown variant"),
    (dict(domain=(1.0, 1.0)), "lo < hi"),
    (dict(domain=(2.0, -2.0)), "lo < hi"),
    (dict(domain=(0.0, float("inf"))), "finite"),
    (dict(domain=5.0), "pair"),
    (dict(target=torch.log, domain=(-1.0, 1.0)), "non-finite"),
    (dict(target=lambda x: x ** 2, domain=(-1.0, 1.0)), "monotone"),
    (dict(target=math.sin), "torch.Tensor"),
    (dict(target=lambda x: x.sum()), "shape"),
    (dict(target="sin"), "callable"),
    (dict(seed=-1), "seed"),
    (dict(stepz=3), "unknown setting"),
    (dict(steps=0), "steps"),
])
def test_run_experiment_bad_inputs(kwargs, match):
    args = dict(target=torch.tanh, domain=(-2.0, 2.0), variant="paper", seed=0, **TINY)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        run_experiment(**args)


def test_run_table_bad_inputs():
    with pytest.raises(ValueError, match="unknown function"):
        toy.run_table(functions=["cosine"])
    with pytest.raises(ValueError, match="unknown variant"):
        toy.run_table(variants=["paper", "magic"])
    with pytest.raises(ValueError, match="seeds"):
        toy.run_table(seeds=[])


def test_error_amplification_is_bounded_by_conditioning():
    result = run_experiment(torch.exp, (-1.0, 1.0), "paper", **{**TINY, "steps": 60})
    x = torch.linspace(-1, 1, 200)
    amplification = toy.error_amplification(result.model, x, torch.exp(x))
    assert bool((amplification <= result.model.conditioning().inverse_lipschitz_bound * (1 + 1e-4)).all())
    net = InvertibleMLP(3, 1).double()  # identity layer with bias offset c: residual c, inverse error c, ratio 1
    with torch.no_grad():
        net.linears[0].bias[0] = 0.2
    x = torch.linspace(-1, 1, 5, dtype=torch.float64)
    torch.testing.assert_close(toy.error_amplification(net, x, x), torch.ones(5, dtype=torch.float64))
