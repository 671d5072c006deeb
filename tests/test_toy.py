"""invcap.toy: the lifting protocol, the error definitions, the stacked trainer against
invcap.inn, run_experiment on a user function and its bad inputs, and the committed artifacts."""

import csv
import json
import math
import re
from pathlib import Path

import pytest
import torch

from invcap import toy
from invcap.inn import InvertibleMLP
from invcap.toy import (FUNCTIONS, PAPER_TABLE1, TABLE_COLUMNS, VARIANTS, ExperimentResult, Job,
                        StackedInvertibleMLP, TrainConfig, evaluate, lift, run_experiment, squared_error,
                        summarise, train_stack)

ROOT = Path(__file__).resolve().parents[1]
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


def test_a_perfect_model_scores_zero():
    x = torch.linspace(-1, 1, 101, dtype=torch.float64)
    scores = evaluate(AffineOracle(2.0, 0.0), x, 2.0 * x)
    assert scores == {"learning_error": 0.0, "inversion_error": 0.0, "roundtrip_error": 0.0}


def test_a_known_offset_scores_that_offset():
    # target g(x) = 2x, model f(x) = 2x + c: forward off by c, f^-1(g(x)) = x - c/2 on the TRUE
    # targets, and the round trip is exact.
    c = 0.3
    x = torch.linspace(-1, 1, 101, dtype=torch.float64)
    scores = evaluate(AffineOracle(2.0, c), x, 2.0 * x)
    assert scores["learning_error"] == pytest.approx(c ** 2, rel=1e-12)
    assert scores["inversion_error"] == pytest.approx((c / 2) ** 2, rel=1e-12)
    assert scores["roundtrip_error"] == pytest.approx(0.0, abs=1e-28)


def test_stratified_training_points_fill_every_bin():
    x, y = toy.sample_points(torch.exp, (-1.0, 3.0), 40, torch.Generator().manual_seed(0), stratified=True)
    bins = torch.floor((x.double() + 1.0) / 4.0 * 40).long()
    assert torch.equal(bins, torch.arange(40))
    torch.testing.assert_close(y, torch.exp(x))
    x_iid, _ = toy.sample_points(torch.exp, (-1.0, 3.0), 4000, torch.Generator().manual_seed(0))
    assert -1.0 <= float(x_iid.min()) and float(x_iid.max()) <= 3.0 and abs(float(x_iid.mean()) - 1.0) < 0.1


def test_objectives():
    forward, inverse = torch.tensor([1e-2, 1e-2, 4.0]), torch.tensor([1e-4, 1e-4, 1.0])
    weights = torch.tensor([0.0, 0.3, 1.0])
    objective = torch.tensor([0, 1, 0])  # sum, log, sum
    out = toy._objective(forward, inverse, weights, objective)
    torch.testing.assert_close(out, torch.tensor([1e-2, math.log(1e-2) + 0.3 * math.log(1e-4), 5.0]))


def test_errors_count_the_pads_too():
    pred = torch.tensor([[1.0, 0.5, 0.0]])
    target = torch.tensor([[1.0, 0.0, 0.0]])
    assert float(squared_error(pred, target)) == pytest.approx(0.25)


def test_evaluate_on_a_real_network_with_a_bias_offset():
    # One identity layer with bias (c, 0, ...): learns g(x) = x with offset c in both directions.
    c = 0.1
    net = InvertibleMLP(4, 1).double()
    with torch.no_grad():
        net.linears[0].bias[0] = c
    x = torch.linspace(-1, 1, 11, dtype=torch.float64)
    scores = evaluate(net, x, x)
    assert scores["learning_error"] == pytest.approx(c ** 2)
    assert scores["inversion_error"] == pytest.approx(c ** 2)
    assert scores["roundtrip_error"] < 1e-30


# --- the stacked network is the library's network --------------------------------------------

def random_stack(dtype=torch.float64, learn=(False, True, False)) -> StackedInvertibleMLP:
    net = StackedInvertibleMLP(len(learn), 6, 4, negative_slope=0.3, learn_diagonal=list(learn), dtype=dtype)
    net.reset_parameters_([torch.Generator().manual_seed(s) for s in range(len(learn))], 0.8, 0.5)
    with torch.no_grad():
        net.log_scale.normal_(0, 0.3)  # only the learnable-diagonal models read it
    return net


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_stack_matches_invertible_mlp(dtype, tol):
    net = random_stack(dtype)
    x = torch.randn(3, 50, 6, dtype=dtype)
    with torch.no_grad():
        y, back, back_fast = net(x), net.inverse(x), net.inverse_by_matrices(x)
    for m in range(3):
        module = net.to_module(m)
        assert isinstance(module, InvertibleMLP) and module.linears[0].learn_diagonal == (m == 1)
        with torch.no_grad():
            torch.testing.assert_close(y[m], module(x[m]), rtol=tol, atol=tol)
            # the layer's left-side in-place solves round differently from the stack's right-side
            # ones: in float32 they agree to ~1e-5 relative on this ill-conditioned toy net
            torch.testing.assert_close(back[m], module.inverse(x[m]), rtol=tol * 10, atol=tol * 10)
            torch.testing.assert_close(back_fast[m], module.inverse(x[m]), rtol=tol * 10, atol=tol * 10)
    torch.testing.assert_close(net.factors()[1].diagonal(dim1=-2, dim2=-1)[0], torch.ones(4, 6, dtype=dtype))


def test_stack_inverse_of_a_subset():
    net = random_stack()
    y = torch.randn(2, 20, 6, dtype=torch.float64)
    models = torch.tensor([2, 0])
    with torch.no_grad():
        sub = net.inverse(y, models)
        for k, m in enumerate(models.tolist()):
            torch.testing.assert_close(sub[k], net.to_module(m).inverse(y[k]))


def test_stack_gradients_match_autograd_on_the_module():
    net = random_stack()
    x = torch.randn(3, 30, 6, dtype=torch.float64)
    target = torch.randn(3, 30, 6, dtype=torch.float64)
    (squared_error(net(x), target).sum() + squared_error(net.inverse(target), x).sum()).backward()
    for m in range(3):
        module = net.to_module(m)
        (squared_error(module(x[m]), target[m]) + squared_error(module.inverse(target[m]), x[m])).backward()
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


def test_run_table_cache_is_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("INVCAP_CACHE_DIR", str(tmp_path))
    config = TrainConfig(**{**TINY, "steps": 10})
    first = toy.run_table(["exponential"], ["paper", "balanced"], [0], config, cache=True)
    files = list((tmp_path / "toy").glob("table1-*.pt"))
    assert len(files) == 1
    again = toy.run_table(["exponential"], ["paper", "balanced"], [0], config, cache=True)
    assert [r.scores() for r in again] == [r.scores() for r in first]
    x = torch.linspace(-1, 1, 9)
    torch.testing.assert_close(again[1].model(lift(x, 4)), first[1].model(lift(x, 4)))
    toy.run_table(["exponential"], ["paper"], [0], config, cache=True)  # other settings, other file
    assert len(list((tmp_path / "toy").glob("table1-*.pt"))) == 2


def test_one_stack_one_dtype():
    sine = FUNCTIONS["sine"]
    jobs = [Job("sine", sine.fn, sine.domain, VARIANTS[v], 0) for v in ("paper", "paper_float64")]
    with pytest.raises(ValueError, match="one \\(dtype, steps_factor\\)"):
        train_stack(jobs, TrainConfig(**TINY))


# --- run_experiment on a user function ---------------------------------------------------------

def test_run_experiment_on_a_user_function_learns_and_is_reproducible():
    first = run_experiment(target=lambda x: torch.tanh(x), domain=(-2.0, 2.0), variant="balanced_learn_diag", seed=0, **TINY)
    again = run_experiment(target=lambda x: torch.tanh(x), domain=(-2.0, 2.0), variant="balanced_learn_diag", seed=0, **TINY)
    assert isinstance(first, ExperimentResult) and isinstance(first.model, InvertibleMLP)
    assert first.model.features == 4 and first.model.depth == 3
    for key in ("learning_error", "inversion_error", "roundtrip_error"):
        assert math.isfinite(getattr(first, key)) and getattr(first, key) >= 0
        assert getattr(first, key) == getattr(again, key)
    # tanh spans (-0.96, 0.96): a constant guess scores ~0.6; training must do far better
    assert first.learning_error < 0.02 and first.inversion_error < 0.05
    assert first.roundtrip_error < 1e-8
    # the scores are those of the returned model on fresh points
    x = torch.linspace(-2, 2, 64)
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


# --- the table ---------------------------------------------------------------------------------

def fake(function, variant, seed, learning, inversion):
    return ExperimentResult(function, variant, "float32", seed, learning, inversion, 0.0, 0.0, model=None)


def test_summarise_means_stds_and_paper_columns():
    results = [fake("sine", "paper", s, le, ie) for s, (le, ie) in enumerate([(1.0, 4.0), (3.0, 8.0)])]
    results += [fake("sine", "best", 0, 1e-6, 1e-5), fake("sine", "best", 1, 3e-6, 3e-5)]
    rows = summarise(results)
    assert [set(row) for row in rows] == [set(TABLE_COLUMNS)] * 2
    paper = rows[0]
    assert paper["seeds"] == 2 and paper["learning_error"] == 2.0 and paper["inversion_error"] == 6.0
    assert paper["learning_error_std"] == pytest.approx(math.sqrt(2)) and paper["inversion_error_std"] == pytest.approx(math.sqrt(8))
    assert (paper["paper_learning_error"], paper["paper_inversion_error"]) == PAPER_TABLE1["sine"]
    assert toy.worst_ratio_to_paper(rows, "best") == pytest.approx(2e-5 / 1e-4)
    assert toy.best_variant(rows) == "best"


def test_rounded_table_is_coarse():
    assert toy.order_of_magnitude(3.1e-5) == "1e-05" and toy.order_of_magnitude(3.2e-5) == "1e-04"
    assert toy.order_of_magnitude(0.0) == "0" and toy.order_of_magnitude(float("nan")) == "n/a"
    rows = summarise([fake("sine", "paper", 0, 1.1e-3, 5.0)])
    assert "1e-03" in toy.rounded_table(rows) and "1e+01" in toy.rounded_table(rows)


def test_conclusions_quote_the_numbers():
    results = [fake(f, v, s, le * (1 + s), ie * (1 + s)) for f in ("sine", "polynomial", "exponential")
               for v, le, ie in (("paper", 2e-5, 3.0), ("best", 1e-7, 2e-7)) for s in range(3)]
    rows = summarise(results)
    summaries = [{"function": f, "variant": v, "seed": 0, "median_amplification": a, "inverse_lipschitz_bound": b,
                  "min_sigma_min": m, "max_condition_number": c, "ends": 0.1, "inversion_share_near_ends": 0.8,
                  "sum_log_abs_det": 0.0 if v == "paper" else 90.0, "layers": [{"log_abs_det": 0.0}],
                  "activation_log_det_drop": 77.6,
                  "learning_share_near_ends": 0.1} for f in ("sine", "polynomial", "exponential")
                 for v, a, b, m, c in (("paper", 300.0, 1e6, 1e-3, 30.0), ("best", 1.5, 1e8, 0.01, 1e5))]
    text = toy.conclusions(rows, summaries)
    assert "`best`" in text and "4.0e-05" in text and "2.0e-07" in text  # paper mean learning; best mean learning
    assert "3.0e+02" in text and "1.0e+06" in text and "1.0e+08" in text  # amplification and bounds
    assert "globally worse conditioned and still inverts well" in text
    assert "Short of ten times below: polynomial** (learning 2.0e-07 (goal 1e-07), inversion 4.0e-07 (goal 1e-07))" in text
    assert "80% of the inversion error" in text and "Short of ten times below: sine" not in text
    assert "reaches the paper's numbers on 3 of 3" in text and "ten times below them on 2 of 3: sine, exponential" in text


def test_error_amplification_is_bounded_by_conditioning():
    result = run_experiment(torch.exp, (-1.0, 1.0), "paper", **{**TINY, "steps": 60})
    x = torch.linspace(-1, 1, 200)
    amplification = toy.error_amplification(result.model, x, torch.exp(x))
    assert bool((amplification <= result.model.conditioning().inverse_lipschitz_bound * (1 + 1e-4)).all())
    # a known case: identity layer with bias offset c -> residual c, inverse error c, ratio 1
    net = InvertibleMLP(3, 1).double()
    with torch.no_grad():
        net.linears[0].bias[0] = 0.2
    x = torch.linspace(-1, 1, 5, dtype=torch.float64)
    torch.testing.assert_close(toy.error_amplification(net, x, x), torch.ones(5, dtype=torch.float64))


def test_markdown_table_lists_every_row():
    rows = summarise([fake("sine", "paper", 0, 1.234e-3, 5.0), fake("exponential", "paper", 0, 2e-7, 3e-7)])
    text = toy.markdown_table(rows)
    assert "1.2e-03" in text and "2.0e-07" in text and text.count("\n") == 3


# --- committed artifacts (written by notebooks/01_toy_invertibility.ipynb) -----------------------

def committed_rows():
    path = ROOT / "results" / "table1.csv"
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def test_table1_csv_is_complete():
    rows = committed_rows()
    assert list(rows[0]) == TABLE_COLUMNS
    assert {row["function"] for row in rows} == set(FUNCTIONS)
    variants = {row["variant"] for row in rows}
    assert "paper" in variants and variants <= set(VARIANTS)
    assert len(rows) == len(FUNCTIONS) * len(variants)
    for row in rows:
        assert int(row["seeds"]) >= 3
        assert row["dtype"] == VARIANTS[row["variant"]].dtype
        for column in TABLE_COLUMNS[4:9]:
            assert math.isfinite(float(row[column])) and float(row[column]) >= 0
        assert (float(row["paper_learning_error"]), float(row["paper_inversion_error"])) == PAPER_TABLE1[row["function"]]
    record = json.loads((ROOT / "results" / "table1.json").read_text())
    assert {"config", "seed", "versions", "device", "git_commit"} <= set(record["run"])
    assert len(record["runs"]) == sum(int(row["seeds"]) for row in rows)


def test_readme_shows_this_runs_table():
    rows = [{k: (v if k in ("function", "variant", "dtype") else float(v)) for k, v in row.items()}
            for row in committed_rows()]
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"<!-- section:toy -->(.*)<!-- /section:toy -->", readme, re.S).group(1)
    assert toy.markdown_table(rows) in section


def test_readme_table_is_rewritten_from_the_csv(tmp_path):
    from invcap.notebook_tools import update_readme_toy_table

    readme = (ROOT / "README.md").read_text()
    section = re.search(r"<!-- section:toy -->(.*)<!-- /section:toy -->", readme, re.S).group(1)
    table = re.search(r"^\| function \| variant.*?\n(?!\|)", section, re.S | re.M).group(0)
    stale = tmp_path / "README.md"
    stale.write_text(readme.replace(table, table.replace("| sine |", "| sine?? |", 1)))
    assert update_readme_toy_table(stale, ROOT / "results" / "table1.csv")
    assert stale.read_text() == readme                      # restored exactly, the rest untouched
    assert not update_readme_toy_table(stale, ROOT / "results" / "table1.csv")
    with pytest.raises(FileNotFoundError, match="make paper"):
        update_readme_toy_table(stale, tmp_path / "missing.csv")
    (tmp_path / "other.md").write_text("# no toy section\n")
    with pytest.raises(ValueError, match="section:toy"):
        update_readme_toy_table(tmp_path / "other.md", ROOT / "results" / "table1.csv")


def test_divergence_is_a_clear_error():
    with pytest.raises(ValueError, match="training diverged"):
        run_experiment(torch.exp, (-1.0, 1.0), "paper", **{**TINY, "steps": 30, "lr": 1e6})


def test_conditioning_summary_on_a_trained_network():
    result = run_experiment(torch.exp, (-1.0, 1.0), "paper", name="exponential", **{**TINY, "steps": 60})
    summary = toy.conditioning_summary(result, n_points=512)
    assert summary["sum_log_abs_det"] == 0.0  # fixed k_i = 1: every det W_i = 1
    assert 0 <= summary["inversion_share_near_ends"] <= 1 and 0 <= summary["learning_share_near_ends"] <= 1
    assert 0 < summary["median_amplification"] <= summary["inverse_lipschitz_bound"]
    assert summary["activation_log_det_drop"] == pytest.approx(2 * 4 * math.log(2))  # 2 activations x 4 units
    assert len(summary["layers"]) == 3
    learned = run_experiment(torch.exp, (-1.0, 1.0), "balanced_learn_diag", name="exponential", **{**TINY, "steps": 60})
    assert toy.conditioning_summary(learned, n_points=512)["sum_log_abs_det"] != 0.0
