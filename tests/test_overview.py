"""invcap.studies.overview: the README's "Results at a glance" block collects the studies' rows."""

import sys
import types

from invcap.io import read_json
from invcap.studies import overview, readme


def _study(name, monkeypatch, **functions):
    module = types.ModuleType(name)
    for key, value in functions.items():
        setattr(module, key, value)
    monkeypatch.setitem(sys.modules, name, module)
    return name


def test_rows_come_from_the_studies_in_readme_order(tmp_path, monkeypatch):
    (tmp_path / "a.json").write_text('{"r1": 38.0}')
    first = _study("fake_first", monkeypatch, glance_row=lambda res: f"| claim A | R@1 {read_json(res / 'a.json')['r1']:.0f} % | works |")
    second = _study("fake_second", monkeypatch,
                    glance_rows=lambda res: [f"| claim B | {read_json(res / 'b.json')} | x |"])
    monkeypatch.setattr(readme, "MODULES", (first, "fake_without_rows_missing_module", second))
    text = overview.render(tmp_path)
    lines = text.splitlines()
    assert lines[:2] == overview.HEADER
    assert lines[2] == "| claim A | R@1 38 % | works |"
    assert "fake_second" in lines[3] and "not measured here: b.json not found" in lines[3]   # not measured: said, not fatal
    assert len(lines) == 6 and lines[5] == "No results file records its commit yet."


def test_provenance_names_each_commit_and_its_files(tmp_path):
    (tmp_path / "a.json").write_text('{"run": {"git_commit": "878a47fbbc12", "git_dirty": false}}')
    (tmp_path / "b.json").write_text('{"run": {"git_commit": "878a47fbbc12", "git_dirty": false}}')
    (tmp_path / "c.json").write_text('{"run": {"git_commit": "ab9889745b00", "git_dirty": true}}')
    (tmp_path / "d.json").write_text('{"no": "run"}')
    assert overview.provenance(tmp_path) == ("Runs by commit: `878a47fbbc` (clean): a.json, b.json; "
                                             "`ab9889745b` (dirty): c.json.")
