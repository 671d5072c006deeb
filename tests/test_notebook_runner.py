"""invcap.studies.notebooks: the papermill runner behind `make paper` and `make flickr30k`."""

import json
from pathlib import Path

import nbformat
import pytest

from invcap.studies import notebooks


def _notebook(path):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("GREETING = 'hello'\nN = 2")
    params.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell(
        "import os\nfrom invcap.io import results_dir, write_json_atomic\n"
        "write_json_atomic(results_dir() / 'demo.json', {'greeting': GREETING, 'n': N})\nprint(GREETING * N)")
    nb.cells = [params, body]
    nb.metadata["kernelspec"] = {"name": "invcap", "display_name": "Python (invcap)", "language": "python"}
    nbformat.write(nb, path)


def test_run_into_a_folder_with_a_params_file(tmp_path, monkeypatch):
    monkeypatch.delenv("INVCAP_OUTPUT_DIR", raising=False)
    source = tmp_path / "nb" / "99_demo.ipynb"
    source.parent.mkdir()
    _notebook(source)
    params = tmp_path / "params.yaml"
    params.write_text("GREETING: hi\nN: 3\nUNUSED: 1\n")
    out = tmp_path / "out"
    seconds = notebooks.run_notebooks([source], out=out, params=notebooks.read_params(params), timeout=120)
    assert set(seconds) == {"99_demo.ipynb"}
    executed = json.loads((out / "99_demo.ipynb").read_text())
    assert "papermill" not in executed["metadata"]
    assert any("hihihi" in "".join(o.get("text", "")) for c in executed["cells"] for o in c.get("outputs", []))
    assert json.loads((out / "results" / "demo.json").read_text()) == {"greeting": "hi", "n": 3}
    timings = json.loads((out / "results" / notebooks.TIMINGS_FILE).read_text())
    assert timings["99_demo"]["parameters"]["N"] == 3 and timings["99_demo"]["seconds"] >= 0
    assert json.loads(source.read_text())["cells"][1].get("outputs", []) == []   # the source is untouched


def test_bad_inputs_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        notebooks.run_notebooks([tmp_path / "missing.ipynb"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ValueError, match="mapping"):
        notebooks.read_params(bad)


def test_sections_and_overrides_give_each_notebook_its_own_parameters():
    params = {"DATASET": "flickr30k", "STEPS": 1, "03_captioning": {"STEPS": 3000},
              "05": {"STEPS": 750, "LR": 1e-3}, "final_table": {"SEEDS": [0, 1, 2]}}
    assert notebooks.params_for("notebooks/02_autoencoder.ipynb", params) == {"DATASET": "flickr30k", "STEPS": 1}
    assert notebooks.params_for("03_captioning.ipynb", params)["STEPS"] == 3000
    assert notebooks.params_for("05_closing.ipynb", params, {"DEVICE": "cuda"}) == {
        "DATASET": "flickr30k", "STEPS": 750, "LR": 1e-3, "DEVICE": "cuda"}
    assert notebooks.params_for("final_table", params) == {"DATASET": "flickr30k", "STEPS": 1, "SEEDS": [0, 1, 2]}
    assert notebooks.params_for("03_captioning", params, {"STEPS": 5})["STEPS"] == 5  # --set beats sections
    assert notebooks.parse_overrides(["DEVICE=cuda", "STEPS=10", "DATA_ROOT=/a/b", "X="]) == {
        "DEVICE": "cuda", "STEPS": 10, "DATA_ROOT": "/a/b", "X": None}
    with pytest.raises(ValueError, match="NAME=VALUE"):
        notebooks.parse_overrides(["DEVICE"])


def test_a_params_file_can_extend_another(tmp_path):
    (tmp_path / "full.yaml").write_text("IMAGE_SIZE: 64\nEPOCHS: 30\n03_captioning:\n  STEPS: 3000\n  LR: 0.003\n")
    (tmp_path / "short.yaml").write_text("extends: full.yaml\nEPOCHS: 2\n03_captioning:\n  STEPS: 10\n")
    assert notebooks.read_params(tmp_path / "short.yaml") == {
        "IMAGE_SIZE": 64, "EPOCHS": 2, "03_captioning": {"STEPS": 10, "LR": 0.003}}


def _record_many(prefix):
    for i in range(25):
        notebooks._record_timing(f"{prefix}{i}", 1.0, {})


def test_timings_of_two_chains_side_by_side_are_all_kept(tmp_path, monkeypatch):
    # `make paper` runs two runners at once; each entry must survive the other's writes.
    import multiprocessing

    monkeypatch.setenv("INVCAP_OUTPUT_DIR", str(tmp_path))
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_record_many, args=(p,)) for p in ("a", "b")]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    timings = json.loads((tmp_path / "results" / notebooks.TIMINGS_FILE).read_text())
    assert set(timings) == {f"{p}{i}" for p in "ab" for i in range(25)}


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("0*.ipynb")),
                         ids=lambda p: p.stem)
def test_papermill_reads_every_parameter_of_each_notebook(path):
    # papermill's parser drops (with only a warning) a line whose comment holds '=', e.g. '>= 97 %':
    # `papermill --help-notebook` would then not list that parameter.
    from papermill.translators import PythonTranslator

    cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    names = [line.split("=", 1)[0].strip() for line in cell.source.splitlines()
             if line and not line.startswith(("#", " ")) and "=" in line.split("#", 1)[0]]
    assert [p.name for p in PythonTranslator.inspect(cell)] == names
