"""The library never imports the study layer (invcap.studies)."""

import ast
from pathlib import Path

import invcap

PACKAGE = Path(invcap.__file__).parent


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_library_never_imports_studies():
    offenders = {}
    for path in PACKAGE.rglob("*.py"):
        if "studies" in path.relative_to(PACKAGE).parts:
            continue
        bad = sorted(n for n in _imports(path) if n == "invcap.studies" or n.startswith("invcap.studies."))
        if bad:
            offenders[str(path.relative_to(PACKAGE))] = bad
    assert not offenders, f"library modules import invcap.studies: {offenders}"


def test_the_check_would_catch_an_offender(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from invcap.studies import common\nimport invcap.studies.readme\n")
    assert {"invcap.studies", "invcap.studies.readme"} <= _imports(bad)
