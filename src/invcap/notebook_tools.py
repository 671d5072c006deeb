"""Small helpers for the notebooks themselves (used by ``make paper``).

``python -m invcap.notebook_tools strip NB.ipynb`` removes papermill's per-cell timing
metadata, which changes on every run and would make every executed notebook show as changed,
while keeping the outputs that nbval checks.

``python -m invcap.notebook_tools seed-study [SEED ...]`` (default seeds 0 1 2) retrains notebook
05's two best generators with other training seeds, everything else as notebook 05 ran it (read
from ``results/ablation.json``), and writes ``results/seeds.csv``, ``results/seeds.json`` and
``figures/05_seeds.png``: how far the goal's numbers move with the seed alone. Seed 0 is loaded
from notebook 05's cache. ``make paper`` runs it after the notebooks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from invcap.io import results_dir, write_text_atomic

NOISY_CELL_KEYS = ("papermill", "execution")


def strip_notebook(path: str | Path) -> None:
    path = Path(path)
    nb = json.loads(path.read_text())
    nb.get("metadata", {}).pop("papermill", None)
    for cell in nb.get("cells", []):
        for key in NOISY_CELL_KEYS:
            cell.get("metadata", {}).pop(key, None)
    write_text_atomic(path, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


SEED_STUDY_DEFAULT = (0, 1, 2)


def run_seed_study(seeds: tuple[int, ...] = SEED_STUDY_DEFAULT, n_methods: int = 2) -> dict:
    """See the module docstring. Returns what it writes to ``results/seeds.json``."""
    from invcap.captioning import checkpoint_path
    from invcap.evaluation import (SEED_COLUMNS, JudgeConfig, goal_thresholds, image_captioner, load_or_train_judge,
                                   plot_seeds, seed_study, summarize_seeds)
    from invcap.features import load_features
    from invcap.io import save_figure, write_csv_atomic, write_json_atomic
    from invcap.methods import method, train_method
    from invcap.repro import run_record, seed_everything

    source = results_dir() / "ablation.json"
    if not source.is_file():
        raise FileNotFoundError(f"{source} not found: run notebooks/05_closing_the_inversion_gap.ipynb "
                                "(make paper) first; the seed study repeats its setup")
    ablation = json.loads(source.read_text())
    config, seed0 = ablation["run"]["config"], ablation["run"]["seed"]
    steps, lr, judge_steps = config["steps"], config["lr"], config["judge"]["steps"]
    rows = {r["method"]: r for r in ablation["rows"]}
    best = ablation["best"]["method"]
    others = sorted((r for n, r in rows.items() if n not in (best, "paper")),
                    key=lambda r: (r["all_correct_unseen"], r["all_correct_seen"]), reverse=True)
    names = [best] + [r["method"] for r in others[:n_methods - 1]]
    thresholds = goal_thresholds(rows["paper"]["captioning_r1"])

    seed_everything(seed0)
    train, test, unseen = (load_features(split, device="cpu", progress=False)
                           for split in ("train", "test", "compositional_test"))
    judge, _ = load_or_train_judge(JudgeConfig(steps=judge_steps, seed=seed0))
    overrides = dict(steps=steps, lr=lr, device="cpu")
    paper = method("paper")
    # notebook 05's reference captioner (notebook 03's checkpoint), which ranks captions for R-precision
    reference = train_method(paper, train.latents, train.caption_embeddings, progress=False, seed=seed0,
                             checkpoint=checkpoint_path("captioning-embedded32", paper.config(seed=seed0, **overrides)),
                             **overrides)
    found = seed_study(names, seeds, train, test, unseen, judge, test.autoencoder.decode,
                       image_captioner(reference, test.autoencoder.encode), **overrides)
    summary = summarize_seeds(found, thresholds)
    write_csv_atomic(results_dir() / "seeds.csv",
                     [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()} for r in found],
                     SEED_COLUMNS)
    out = {"run": run_record({"seeds": list(seeds), "methods": names, "steps": steps, "lr": lr,
                              "judge_steps": judge_steps, "from": "results/ablation.json"}, seed0, "cpu"),
           "thresholds": thresholds, "rows": found, "summary": summary}
    write_json_atomic(results_dir() / "seeds.json", out)
    save_figure(plot_seeds(found, thresholds), "05_seeds.png")
    return out


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "strip":
        for name in argv[1:]:
            strip_notebook(name)
        return 0
    if argv and argv[0] == "seed-study":
        try:
            seeds = tuple(int(a) for a in argv[1:]) or SEED_STUDY_DEFAULT
        except ValueError:
            print(f"seed-study takes integer seeds, got {argv[1:]}", file=sys.stderr)
            return 2
        out = run_seed_study(seeds)
        for s in out["summary"]:
            print(f"{s['method']}: " + ", ".join(
                f"{c} {s[c + '_mean']:.1f} ± {s[c + '_std']:.1f} (min {s[c + '_min']:.1f}, "
                f"{s.get(c + '_seeds_meeting', '-')}/{s['seeds']} seeds meet {out['thresholds'][c]:.1f})"
                for c in ("all_correct_seen", "all_correct_unseen", "captioning_r1")))
        return 0
    print("usage: python -m invcap.notebook_tools strip NOTEBOOK.ipynb [...]\n"
          "       python -m invcap.notebook_tools seed-study [SEED ...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
