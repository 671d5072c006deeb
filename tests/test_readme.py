"""README number blocks are rendered from results/ by code, and this test fails when one is stale."""

import pytest

from invcap.io import marked_block, replace_marked_block, repo_root
from invcap.studies import readme


def test_every_readme_block_matches_its_results_file():
    root = repo_root()
    stale = readme.stale_blocks(root / "README.md", root / "results")
    assert not stale, f"README blocks disagree with results/: {stale}; run `make paper` or " \
                      f"`python -m invcap.studies.readme`"


def test_every_registered_block_is_in_the_readme():
    text = (repo_root() / "README.md").read_text()
    missing = [name for name in readme.renderers() if marked_block(text, name) is None]
    assert not missing, f"README lacks the blocks {missing}"


def test_a_stale_block_is_detected_and_rewritten(tmp_path, monkeypatch):
    monkeypatch.setattr(readme, "renderers", lambda: {"demo": lambda results: f"value {(results / 'x.txt').read_text()}"})
    (tmp_path / "x.txt").write_text("42")
    page = tmp_path / "README.md"
    page.write_text("intro\n<!-- results:demo -->\nvalue 41\n<!-- /results:demo -->\nend\n")
    assert readme.stale_blocks(page, tmp_path) == ["demo"]
    assert readme.update_readme(page, tmp_path) == ["demo"]
    assert marked_block(page.read_text(), "demo") == "value 42"
    assert readme.stale_blocks(page, tmp_path) == []
    assert page.read_text().startswith("intro\n") and page.read_text().endswith("end\n")


def test_missing_markers_are_a_clear_error():
    with pytest.raises(ValueError, match="no block"):
        replace_marked_block("no markers here", "demo", "x")
