"""invcap.studies.portability: the spread of key numbers between two numeric paths."""

import json

from invcap.studies import portability


def test_compare_and_render(tmp_path, monkeypatch):
    for name, value in (("a", 38.0), ("b", 36.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "x.json").write_text(json.dumps({"r1": value, "psnr": 30.7}))
    monkeypatch.setattr(portability, "key_number_functions", lambda: {
        "R@1 (%)": lambda d: json.loads((d / "x.json").read_text())["r1"],
        "PSNR (dB)": lambda d: json.loads((d / "x.json").read_text())["psnr"],
        "absent": lambda d: json.loads((d / "missing.json").read_text())["y"],
    })
    out = portability.compare(tmp_path / "a", tmp_path / "b")
    rows = {r["number"]: r for r in out["rows"]}
    assert rows["R@1 (%)"]["abs_diff"] == 2.0 and abs(rows["R@1 (%)"]["rel_diff"] - 2 / 38) < 1e-12
    assert rows["PSNR (dB)"]["abs_diff"] == 0.0
    assert [m["number"] for m in out["missing"]] == ["absent"]
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / portability.RESULTS_FILE).write_text(json.dumps(out))
    table = portability.render(tmp_path / "results")
    assert "| R@1 (%) | 38 | 36 | 2 (5.3 %) |" in table and "absent" in table


def test_the_block_says_how_to_measure_before_the_first_comparison(tmp_path):
    text = portability.render(tmp_path)
    assert "Not measured" in text and "make test-portable" in text
