"""Notebooks 02-04's study modules end to end on a tiny embedded dataset: every step, the results
files, verdicts, tables, narratives and README blocks come from the same code path as the
notebooks' numbers; the pieces moved out of notebook cells are tested against references."""

import ast
import json
import math
from pathlib import Path

import pytest
import torch

from invcap.data import embedded as E
from invcap.studies import nb02_autoencoder as nb02
from invcap.studies import nb03_captioning as nb03
from invcap.studies import nb04_inversion_analysis as nb04

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """Notebooks 02, 03 and 04 at tiny sizes, in one temporary cache and output folder."""
    mp = pytest.MonkeyPatch()
    folder = tmp_path_factory.mktemp("studies")
    mp.setenv("INVCAP_CACHE_DIR", str(folder / "cache"))
    mp.setenv("INVCAP_OUTPUT_DIR", str(folder / "out"))
    mp.setenv("INVCAP_PROGRESS", "off")
    mp.setattr(E, "SPLIT_SIZES", {"train": 24, "val": 8, "test": 8, "compositional_val": 8, "compositional_test": 8})
    p02 = nb02.Params(image_size=16, epochs=1, device="cpu")
    data = nb02.load_data(p02)
    data_part = nb02.summarize_data(data)
    model, info = nb02.train_autoencoder(p02, progress=False)
    features = nb02.build_features(p02, data, progress=False)
    parts = {"data": data_part, "captions": nb02.analyse_captions(features),
             "autoencoder": nb02.reconstruction_metrics(model, info, data, features)}
    r02 = nb02.write_results(p02, data, {"total": 1.0}, *parts.values())
    p03 = nb03.Params(image_size=16, device="cpu", steps=5, batch_size=8)
    splits = nb03.load_splits(p03, progress=False)
    run = nb03.train(p03, splits, progress=False)
    evaluation = nb03.evaluate(run, splits)
    r03 = nb03.write_results(p03, run, splits, evaluation, {"training": 1.0})
    p04 = nb04.Params(device="cpu", sigmas=[1e-9, 1e-3], n_directions=2, n_jacobian=2, n_grid=2,
                      user_captions=["a red circle"])
    setup = nb04.load(p04, progress=False)
    generation, generated = nb04.generation(setup, p04)
    noise = nb04.noise_study(setup, generated, p04, progress=False)
    amplification, arrays = nb04.amplification_study(setup, generated, p04)
    r04 = nb04.write_results(p04, setup, [generation, noise, amplification], {"noise sweep": 1.0})
    # the checked cells print verdicts of each step's part, before the results file exists
    texts = [nb02.verdicts(part, name) for name, part in parts.items()]
    texts += [nb02.tables(parts[name], name) for name in ("captions", "autoencoder")]
    texts += [nb03.verdicts(evaluation, part) for part in ("errors", "retrieval")]
    texts += [nb03.tables(evaluation, part) for part in ("errors", "retrieval")]
    for part, fragment in (("generation", generation), ("noise", noise), ("amplification", amplification)):
        texts += [nb04.verdicts(fragment, part), nb04.tables(fragment, part)]
    assert all(texts)
    yield {"folder": folder / "out" / "results", "r02": r02, "r03": r03, "r04": r04, "run": run, "setup": setup,
           "generated": generated, "arrays": arrays, "features": features, "data": data, "model": model, "info": info}
    mp.undo()


def test_notebook_02_steps_results_and_texts(pipeline):
    r = pipeline["r02"]
    assert set(nb02.RESULTS_KEYS) <= set(r) and r["latent_dim"] == r["embedding_dim"] == 384
    assert set(r["data"]["splits"]) == {"train", "val", "test", "compositional_val", "compositional_test"}
    assert r["data"]["splits"]["compositional_test"]["combinations_in_train"] == 0
    assert set(r["metrics"]) == {"val", "test", "compositional_val", "compositional_test"}
    # compositional_test's captions are left to the final table (reconstructions reported all the same)
    assert set(pipeline["features"]) == {"train", "val", "test", "compositional_val"}
    assert r["run"]["timings"] == {"total": 1.0} and r["run"]["data"].startswith("embedded:")
    on_disk = json.loads((pipeline["folder"] / "autoencoder.json").read_text())
    assert on_disk["metrics"]["test"]["psnr_db"] == pytest.approx(r["metrics"]["test"]["psnr_db"])
    for part in ("data", "captions", "autoencoder"):
        text = nb02.verdicts(r, part)
        assert text and all(line.endswith(("True", "False")) or part == "data" for line in text.splitlines()
                            if not line.startswith(" "))
    assert "linear probe" in nb02.tables(r, "captions") and "PSNR" in nb02.tables(r, "autoencoder")
    assert f"{r['metrics']['test']['psnr_db']:.1f} dB" in nb02.summary_text(r)
    assert "| test |" in nb02.render_readme(pipeline["folder"])
    with pytest.raises(ValueError, match="part must be"):
        nb02.verdicts(r, "nonsense")


def test_notebook_02_names_its_autoencoder_for_later_notebooks(pipeline):
    kwargs = nb02.features_kwargs(image_size=16, folder=pipeline["folder"])
    from invcap.autoencoder import AutoencoderConfig

    assert kwargs["epochs"] == 1 and kwargs["widths"] == tuple(AutoencoderConfig().widths) and kwargs["image_size"] == 16
    with pytest.raises(ValueError, match="other data"):
        nb02.features_kwargs(image_size=32, folder=pipeline["folder"])
    with pytest.raises(FileNotFoundError, match="02_autoencoder"):
        nb02.features_kwargs(folder=pipeline["folder"] / "nowhere")


def test_notebook_03_results_texts_and_network_record(pipeline):
    r = pipeline["r03"]
    assert set(r["embedding_error"]["test"]) == {"invertible f", "least squares", "attribute oracle"}
    assert "ridge" in r["least_squares"] and r["retrieval"]["protocol"] == "attribute match"
    assert r["network"]["config"]["steps"] == 5 and Path(r["network"]["checkpoint"]).is_file()
    for part in ("data", "errors", "retrieval"):
        assert nb03.verdicts(r, part)
    assert "least squares" in nb03.tables(r, "errors") and "chance R@1" in nb03.tables(r, "retrieval")
    assert f"{r['embedding_error']['test']['invertible f']['mse_per_caption']:.2e}" in nb03.summary_text(r)
    assert "| invertible f |" in nb03.render_readme(pipeline["folder"])
    assert nb03.glance_row(pipeline["folder"]).startswith("| (1) ") and "retrieval **" in nb03.glance_row(pipeline["folder"])
    shown = nb03.retrieved_captions(pipeline["run"], pipeline["setup"].test, 2)
    assert len(shown["captions"]) == 2 and all(len(row) == 3 for row in shown["correct"])


def test_retrieved_captions_are_marked_by_the_relevance_matrix(pipeline):
    test = pipeline["setup"].test
    shown = nb03.retrieved_captions(pipeline["run"], test, 3)
    flat = [c for caps in test.captions for c in caps]
    for i, (caps, marks) in enumerate(zip(shown["captions"], shown["correct"])):
        for caption, ok in zip(caps, marks):
            owners = [j // 5 for j, c in enumerate(flat) if c == caption]
            assert ok == any(test.attributes[o] == test.attributes[i] for o in owners)


def test_notebook_04_reads_notebook_03s_network(pipeline, monkeypatch):
    net, _ = nb03.load_network_from_results(pipeline["folder"], device="cpu", progress=False)
    for a, b in zip(net.state_dict().values(), pipeline["run"].net.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(FileNotFoundError, match="03_captioning"):
        nb04.load(nb04.Params(), folder=pipeline["folder"] / "nowhere")
    from invcap import captioning

    monkeypatch.setattr(captioning, "TRAINING_CODE", captioning.TRAINING_CODE + ("edited training code",))
    with pytest.raises(ValueError, match="rerun notebooks/03_captioning"):
        nb03.load_network_from_results(pipeline["folder"], device="cpu", progress=False)


def test_notebook_04_results_and_texts(pipeline):
    r = pipeline["r04"]
    assert set(r["noise_sweep"]) == set(r["paper_noise"]) == {"float32", "float64"}
    sigmas = [row["sigma"] for row in r["noise_sweep"]["float64"]]
    assert sigmas == [0.0, 1e-9, 1e-4, 1e-3, 1e-2]   # the paper's two readings are added to the sweep
    assert r["paper_noise"]["float64"]["variance"]["sigma"] == pytest.approx(1e-2)
    assert set(r["attribute_judge"]["accuracy_percent"]) == {"autoencoder reconstruction", "inverted y_pred",
                                                             "generated from caption"}
    assert r["amplification"]["worst direction (1/σ_min of J_f)"]["n"] == 2
    for part in ("generation", "noise", "amplification"):
        assert nb04.verdicts(r, part) and nb04.tables(r, part)
    text = nb04.summary_text(r)
    assert "Finding 2" in text and f"{r['conditioning']['inverse_lipschitz_bound']:.1e}" in text
    assert "| (3)" in nb04.render_readme(pipeline["folder"])
    rows = nb04.glance_rows(pipeline["folder"])   # the README overview's rows = the block's finding rows
    assert [row[:5] for row in rows] == ["| (2)", "| (3)"] and all(row in nb04.render_readme(pipeline["folder"]) for row in rows)
    for key, number in nb04.KEY_NUMBERS.items():
        assert math.isfinite(number(pipeline["folder"])), key


def test_figures_of_the_three_notebooks(pipeline):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    r04, setup, gen = pipeline["r04"], pipeline["setup"], pipeline["generated"]
    figures = [nb02.plot_samples(pipeline["data"].splits["test"], [0, 1]),
               nb02.plot_reconstructions(nb02.reconstruction_rows(pipeline["model"], pipeline["data"], pipeline["features"], 2)),
               nb03.plot_history(pipeline["run"].history, pipeline["r03"]),
               nb04.plot_image_rows(*nb04.generation_grid(setup, gen, 2)),
               nb04.plot_noise_sweep(r04), nb04.plot_amplification(r04, pipeline["arrays"])]
    assert all(len(fig.axes) >= 2 for fig in figures)
    # captions are wrapped in full: every word of a long caption is in the grid's titles
    long = "a very small red circle drawn at the very top left of the picture on a dark ground"
    fig = nb04.plot_image_rows({"row": setup.test.images[:1]}, [long])
    assert fig.axes[0].get_title().split() == long.split()
    for fig in figures + [fig]:
        plt.close(fig)


def test_pieces_moved_out_of_notebook_cells():
    assert nb04.chance_levels([{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]) == {"a": 50.0, "b": 100.0, "all": 50.0}
    rows = [{"sigma": 0.0, "psnr": 30.0}, {"sigma": 1e-9, "psnr": 29.5}, {"sigma": 1e-8, "psnr": 25.0},
            {"sigma": 1e-7, "psnr": 29.9}]
    assert nb04.largest_acceptable_sigma(rows, 1.0) == 1e-9     # stops at the first failure
    assert nb04.largest_acceptable_sigma(rows, 10.0) == 1e-7
    assert nb04.largest_acceptable_sigma(rows[:1] + [{"sigma": 1e-9, "psnr": float("nan")}], 1.0) == 0.0
    with pytest.raises(ValueError, match="noise-free"):
        nb04.largest_acceptable_sigma(rows[1:], 1.0)


def test_spearman_matches_scipy():
    from scipy.stats import spearmanr

    from invcap.inversion import spearman

    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(50, generator=gen), torch.randn(50, generator=gen)
    assert spearman(a, b) == pytest.approx(spearmanr(a.numpy(), b.numpy()).statistic, abs=1e-12)
    ties = torch.tensor([1.0, 2.0, 2.0, 3.0, 5.0, 5.0])
    other = torch.tensor([2.0, 1.0, 4.0, 3.0, 6.0, 5.0])
    assert spearman(ties, other) == pytest.approx(spearmanr(ties.numpy(), other.numpy()).statistic, abs=1e-12)


def _parameters_cell(notebook: str) -> dict:
    nb = json.loads((ROOT / "notebooks" / notebook).read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", []))
    tree = ast.parse("".join(cell["source"]))
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body if isinstance(node, ast.Assign)}


@pytest.mark.parametrize("notebook, study", [("02_autoencoder.ipynb", nb02), ("03_captioning.ipynb", nb03),
                                             ("04_inversion_analysis.ipynb", nb04)])
def test_params_defaults_equal_the_notebooks_parameters_cell(notebook, study):
    cell = _parameters_cell(notebook)
    assert study.Params.from_notebook(cell) == study.Params()
    assert {name.lower() for name in cell} == set(study.Params().as_dict())
