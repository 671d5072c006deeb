"""invcap.studies.notebooks: the papermill runner behind `make paper` and `make flickr30k`."""

import json

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
