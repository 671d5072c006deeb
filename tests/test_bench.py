"""invcap.bench: the code path on tiny sizes (no timing is asserted), the nflows-missing and
nflows-without-__init__ paths, and the README block renderer."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from invcap import bench
from invcap.inn import LULinear
from invcap.io import marked_block, repo_root


def test_gpu_script_on_cpu_writes_results_and_the_readme_block(tmp_path, capsys):
    """scripts/gpu_bench.sh up to the device: its command line (BENCH_DRY_RUN) with --device cpu
    --quick and no nflows, run in-process; then the README block rendered from what it wrote."""
    out = tmp_path / "bench_inn.json"
    env = {**os.environ, "BENCH_DEVICE": "cpu", "BENCH_QUICK": "1", "BENCH_THREADS": "1", "BENCH_NO_INSTALL": "1",
           "BENCH_DEPS": str(tmp_path / "no-deps"), "BENCH_OUT": str(out), "PY": sys.executable, "BENCH_DRY_RUN": "1"}
    done = subprocess.run(["bash", str(repo_root() / "scripts" / "gpu_bench.sh")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    command = done.stdout.split()
    assert command[:3] == [sys.executable, "-m", "invcap.bench"] and "float32,bfloat16" in command
    assert bench.main(command[3:]) == 0
    assert "nflows is not installed" in capsys.readouterr().out
    report = json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert report["nflows"]["available"] is False and report["run"]["config"]["device"] == "cpu"
    for name in ("plain_matmul", "forward", "inverse", "dense_solve", "reference_forward", "reference_inverse"):
        assert report["layer"]["timings"][name]["repeats"] >= 1
    assert report["layer"]["checks"]["inverse_round_trip_relative_error"] < 1e-4
    assert report["targets_met"]["forward_vs_nflows"] is None            # not measured, not "met"
    assert {row["inverse_loss"] for row in report["train_step"]["rows"]} == {False, True}
    assert all(row["steps_per_s"] > 0 for row in report["captioning_loop"]["rows"])
    bf16 = report["by_dtype"]["bfloat16"]
    assert "shared_factors" in bf16["train_step"]["rows"][1]["steps_per_s"]   # mixed precision trains
    assert "triangular" in bf16["layer"]["unsupported"]["inverse"]            # no bfloat16 solve: said so

    text = bench.render(tmp_path)
    assert "nflows was not available" in text and "| `LULinear` inverse |" in text and "shared" in text
    readme = tmp_path / "README.md"
    readme.write_text("top\n<!-- results:bench -->\nold\n<!-- /results:bench -->\nend\n")
    bench.update_readme(readme, tmp_path)
    assert marked_block(readme.read_text(), "bench") == text.strip("\n")
    assert readme.read_text().startswith("top\n") and readme.read_text().endswith("end\n")


def test_render_without_results_says_how_to_make_them(tmp_path):
    assert "make bench" in bench.render(tmp_path)


def _fake_nflows(root: Path) -> Path:
    """A package shaped like nflows whose __init__ files fail on an optional dependency."""
    files = {
        "nflows/__init__.py": "",
        "nflows/transforms/__init__.py": "import UMNN  # optional in the real package\n",
        "nflows/utils/__init__.py": "import UMNN\n",
        "nflows/utils/torchutils.py": "SCALE = 2\n",
        "nflows/transforms/linear.py": "from nflows.utils import torchutils\nclass Linear:\n    scale = torchutils.SCALE\n",
        "nflows/transforms/lu.py": "from nflows.transforms.linear import Linear\nclass LULinear(Linear):\n    pass\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.fixture
def clean_nflows(monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))
    saved = {k: v for k, v in sys.modules.items() if k == "nflows" or k.startswith("nflows.")}
    yield
    for name in [k for k in sys.modules if k == "nflows" or k.startswith("nflows.")]:
        del sys.modules[name]
    sys.modules.update(saved)


def test_nflows_is_loaded_without_its_package_init(tmp_path, clean_nflows):
    cls, note = bench.load_nflows_lulinear(_fake_nflows(tmp_path))
    assert cls is not None and cls.__name__ == "LULinear" and cls.scale == 2
    assert "without the package __init__" in note and "UMNN" in note


def test_missing_nflows_is_reported(tmp_path, clean_nflows):
    cls, note = bench.load_nflows_lulinear(tmp_path)
    assert cls is None and "not installed" in note


def test_nflows_copy_holds_our_weights():
    cls, note = bench.load_nflows_lulinear(repo_root() / ".bench-deps")
    if cls is None:
        pytest.skip(note)
    torch.manual_seed(0)
    layer = LULinear(9, init_std=0.5).double()
    with torch.no_grad():
        layer.bias.normal_()
    peer = bench._nflows_copy(cls, layer).double()
    x = torch.randn(5, 9, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(peer(x)[0], layer(x))
        torch.testing.assert_close(peer.inverse(layer(x))[0], x)


def test_reference_layer_is_the_same_function():
    torch.manual_seed(0)
    layer = LULinear(7, init_std=0.5, diagonal=torch.linspace(0.5, 2.0, 7)).double()
    x = torch.randn(4, 7, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(bench.reference_forward(layer, x), layer(x))
        torch.testing.assert_close(bench.reference_inverse(layer, layer(x)), x)


def test_the_cuda_block_says_when_nothing_ran_and_renders_a_gpu_report(tmp_path):
    from invcap.bench import CUDA_RESULTS, render_cuda, repo_root
    assert "no GPU was lent" in render_cuda(tmp_path)
    committed = repo_root() / "results" / CUDA_RESULTS
    if not committed.is_file():
        pytest.skip("no CUDA bench results committed")
    (tmp_path / CUDA_RESULTS).write_text(committed.read_text())
    block = render_cuda(tmp_path)
    assert "--device cuda" in block and "| `LULinear` inverse |" in block
    assert "**bfloat16**" in block and "Training step depth" in block
