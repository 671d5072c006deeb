"""Figures of notebook 05 and its final table (``invcap.studies.nb05_closing_the_inversion_gap``,
``invcap.studies.final_table``): bars with 95 % intervals and value labels, seeds as dots, the
caption -> image grid with hand-typed captions, partial-caption variation, training stability."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import torch

from invcap import evaluation as ev

__all__ = ["plot_ablation", "grid_picks", "plot_grid", "plot_partial", "plot_final", "plot_stability"]


def _nb05():
    # imported at call time: notebook 05's module imports these figures
    from invcap.studies import nb05_closing_the_inversion_gap as nb05
    return nb05


def method_label(name: str) -> str:
    return name.replace("+", "\n+").replace(" (", "\n(")


def bars(ax, x, width, entries, colour, label, value_labels: bool = True):
    """Bars with 95 % interval whiskers and, above each, its value."""
    import numpy as np

    values = np.array([e["value"] if e else np.nan for e in entries])
    lo = np.array([e["value"] - e["lo"] if e else 0 for e in entries])
    hi = np.array([e["hi"] - e["value"] if e else 0 for e in entries])
    ax.bar(x, values, width, color=colour, label=label, yerr=[lo, hi], capsize=2, error_kw={"lw": 0.8})
    if value_labels:
        for xi, v, h in zip(x, values, hi):
            if np.isfinite(v):
                ax.text(xi, v + h + 1, f"{v:.1f}", ha="center", va="bottom", fontsize=5.5, rotation=90)


def plot_ablation(results: Mapping):
    """Left: all-attributes-correct rate on seen / unseen validation combinations per model (R-precision
    and caption -> image retrieval through f^-1 without attributes), 95 % intervals, the test goals
    dashed. Right: image -> text R@1 through f and through f^-1, the paper row's level dashed."""
    import matplotlib.pyplot as plt
    import numpy as np

    nb05 = _nb05()
    rows = results["rows"]
    names = nb05._models(results)
    x = np.arange(len(names))
    fig, (left, right) = plt.subplots(1, 2, figsize=(max(12.0, 1.35 * len(names) * 2), 5.4))
    if results["ceiling"]:
        pairs = [(f"{nb05.SEEN}/training/all_correct", "tab:blue", "seen combinations (val)"),
                 (f"{nb05.UNSEEN}/training/all_correct", "tab:orange", "unseen combinations (compositional_val)")]
        for (wording, kind), goal in nb05.GOALS.items():
            if wording == "training":
                left.axhline(goal, color="tab:blue" if kind == "seen" else "tab:orange", ls="--", lw=0.8,
                             label=f"test goal, {kind} ({goal:.0f})")
        left.set_ylabel("all attributes correct (%)")
        left.set_title("text -> image: judged images generated from validation captions", fontsize=9)
    else:
        pairs = [("val/own/r_precision", "tab:blue", "R-precision (independent captioner)"),
                 ("val/inv_t2i_R@1", "tab:orange", "caption -> image R@1 through f⁻¹")]
        left.set_ylabel("percent")
        left.set_title("text -> image on val", fontsize=9)
    for i, (key, colour, label) in enumerate(pairs):
        bars(left, x + (i - 0.5) * 0.4, 0.4, [rows[n].get(key) for n in names], colour, label)
    for i, (key, colour, label) in enumerate([("val/i2t_R@1", "tab:gray", "through f (captioning)"),
                                              ("val/inv_i2t_R@1", "tab:olive", "through f⁻¹ (captions inverted)")]):
        bars(right, x + (i - 0.5) * 0.4, 0.4, [rows[n].get(key) for n in names], colour, label)
    right.axhline(nb05._value(rows["paper"], "val/i2t_R@1"), color="k", ls="--", lw=0.8, label="paper row, through f")
    right.set_ylabel("image -> text R@1 (%)")
    right.set_title("image -> text retrieval on val", fontsize=9)
    for ax in (left, right):
        ax.set_ylim(0, 112)   # room for the value labels above 100
        ax.set_xticks(x)
        ax.set_xticklabels([method_label(n) for n in names], fontsize=6)
        ax.set_xlabel("model (bars: one training seed; whiskers: 95% cluster-bootstrap interval)", fontsize=7)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.32), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def grid_picks(inputs, wordings: tuple[str, ...] = ("training",), per_split: int = 1) -> list[tuple]:
    """Grid columns: (text, embedding, real image or None, attributes or None, title): the typed
    captions in the styles of ``wordings`` (data with attributes), then ``per_split`` images of
    every split per wording (the split's own captions without attributes)."""
    picks = []
    if inputs.attributes is not None:
        typed = [c for c in _nb05().TYPED_CAPTIONS if "held-out" not in c[2] or "heldout" in wordings]
        texts = [t for t, _, _ in typed]
        for (text, attrs, style), emb in zip(typed, inputs.train.encoder.encode(texts, progress=False)):
            picks.append((text, emb, None, attrs, style))
    for name, split in inputs.splits.items():
        for wording in (wordings if split.attributes is not None else ("own",)):
            captions = inputs.captions[name][wording]
            first = list(dict.fromkeys(captions.image.tolist()))[:per_split if split.attributes is not None else 6]
            for i in first:
                j = captions.image.tolist().index(i)
                text = captions.texts[j] or f"caption {j} of image {i}"
                picks.append((text, captions.embeddings[j], split.images[i],
                              None if split.attributes is None else split.attributes[i], f"{name}, {wording}"))
    return picks


def plot_grid(picks: list[tuple], models: Mapping[str, Any], names: list[str], decode, judge=None):
    """Captions (columns: ``grid_picks``) -> the image each model generates (rows); the first row
    shows the real image a caption was drawn for. Frames: the judge reads every attribute of the
    caption's image right (green) or not (red)."""
    import textwrap

    import matplotlib.pyplot as plt

    names = [n for n in names if n in models]
    fig, axes = plt.subplots(len(names) + 1, len(picks), figsize=(1.3 * len(picks) + 1.4, 1.3 * len(names) + 2.6),
                             squeeze=False)
    embeddings = torch.stack([p[1] for p in picks])
    for r, name in enumerate([None] + names):
        images = None if name is None else ev.decode_all(models[name], embeddings, decode)[:, 0].clamp(0, 1)
        verdict = None
        if images is not None and judge is not None:
            verdict = [p is not None and pick[3] is not None and all(p[a] == pick[3][a] for a in pick[3])
                       for p, pick in zip(judge.predict(images), picks)]
        for c, pick in enumerate(picks):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            image = pick[2] if name is None else images[c]
            if image is not None:
                ax.imshow(image.float().clamp(0, 1).permute(1, 2, 0).numpy(), interpolation="nearest")
            else:
                ax.set_facecolor("0.92")
                ax.text(0.5, 0.5, "typed by hand:\nno real image", ha="center", va="center", fontsize=5.5)
            if verdict is not None:
                for spine in ax.spines.values():
                    spine.set_edgecolor("tab:green" if verdict[c] else "tab:red")
                    spine.set_linewidth(2.2)
            if r == 0:
                ax.set_title(f"[{pick[4]}]\n" + "\n".join(textwrap.wrap(pick[0], 20)), fontsize=5.5)
            if c == 0:
                ax.set_ylabel("real image" if name is None else method_label(name), fontsize=6)
    fig.suptitle("caption -> image (frame: the judge reads every attribute right = green, else red)", fontsize=8)
    fig.tight_layout()
    return fig


def plot_partial(results: Mapping, prefix: str = "val/training partial"):
    """Partial captions (keys ``prefix/...``): per omitted attribute, how much the samples for one
    caption vary in it (0 = always the same value, 100 = as many values as the samples can show),
    per model; and how often every stated attribute is right."""
    import matplotlib.pyplot as plt
    import numpy as np

    rows = results["rows"]
    names = [n for n in rows if any(k.startswith(f"{prefix}/varies_") for k in rows[n])]
    if not names:   # data without attributes: nothing to vary in, say so in the figure
        fig, ax = plt.subplots(figsize=(6, 1.2))
        ax.axis("off")
        ax.text(0.5, 0.5, "no partial-caption scores: this dataset has no attributes to omit", ha="center")
        return fig
    attributes = sorted({k.rsplit("_", 1)[1] for n in names for k in rows[n] if k.startswith(f"{prefix}/varies_")})
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        x = np.arange(len(attributes)) + (i - (len(names) - 1) / 2) * width
        bars(left, x, width, [rows[name].get(f"{prefix}/varies_{a}") for a in attributes], f"C{i}", name,
              value_labels=False)
    left.set_xticks(np.arange(len(attributes)))
    left.set_xticklabels([f"{a} omitted" for a in attributes])
    left.set_ylabel("variation among samples (%)")
    left.set_ylim(0, 100)
    left.set_title(f"does a partial caption's image vary in what it leaves out? ({prefix})", fontsize=9)
    bars(right, np.arange(len(names)), 0.6, [rows[n].get(f"{prefix}/stated_correct") for n in names],
          "tab:green", "stated attributes right")
    right.set_xticks(np.arange(len(names)))
    right.set_xticklabels([method_label(n) for n in names], fontsize=6)
    right.set_ylabel("samples with every stated attribute right (%)")
    right.set_ylim(0, 112)
    right.set_title("and does it keep what it says?", fontsize=9)
    left.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=3, frameon=False)
    fig.tight_layout()
    return fig


def _diverged(runs: Sequence[Mapping]) -> bool:
    return any(r["divergence"].get("diverged") or r.get("collapsed") for r in runs)


def plot_final(results: Mapping):
    """All-attributes-correct rate on the test splits per row, both wordings (no attributes:
    R-precision), and R@1 through f and f^-1: bars with 95 % intervals over combinations and
    seeds, every seed a dot; a row with a diverged or collapsed seed shows its dots only. Goals,
    the decoder ceiling and the text ceiling (``final_table.text_ceiling``) are lines."""
    import matplotlib.pyplot as plt
    import numpy as np

    rows, runs = results["rows"], results["runs"]
    names = list(rows)
    if results["ceiling"]:
        panels = [(f"{s}/{w}/all_correct", f"{w} wording, {k} (%)", _nb05().GOALS[(w, k)], s)
                  for w in ("training", "heldout") for s, k in (("test", "seen"), ("compositional_test", "unseen"))]
    else:
        panels = [("test/own/r_precision", "R-precision (%)", None, None)]
    panels += [("test/i2t_R@1", "image -> text R@1 through f (%)", None, None),
               ("test/inv_i2t_R@1", "image -> text R@1 through f⁻¹ (%)", None, None)]
    cols = 3 if len(panels) > 3 else len(panels)
    fig, axes = plt.subplots(math.ceil(len(panels) / cols), cols, figsize=(5.2 * cols, 4.6 * math.ceil(len(panels) / cols)),
                             squeeze=False)
    x = np.arange(len(names))
    for ax, (key, label, goal, split) in zip(axes.flat, panels):
        for i, name in enumerate(names):
            entry = rows[name].get(key)
            if entry is None:
                continue
            if not _diverged(runs[name]):
                ax.bar(i, entry["value"], 0.65, color="tab:blue", alpha=0.35,
                       yerr=[[entry["value"] - entry["lo"]], [entry["hi"] - entry["value"]]], capsize=2)
            ax.scatter([i] * len(entry["per_seed"]), entry["per_seed"], color="tab:blue", s=10, zorder=3)
            ax.text(i, min(entry["hi"], 100) + 1.5, f"{entry['value']:.1f}", ha="center", fontsize=5.5, rotation=90)
        if goal is not None:
            ax.axhline(goal, color="tab:red", ls="--", lw=0.9, label=f"goal {goal:.0f}")
        if split is not None and split in results["ceiling"]:
            ax.axhline(results["ceiling"][split]["all_correct"]["value"], color="k", ls=":", lw=0.9,
                       label="decoder ceiling")
        text = results.get("text_ceiling", {}).get(split, {}).get(key.split("/")[1], {}) if split else {}
        if "all_correct" in text:   # what a probe reads from the same captions' embeddings
            ax.axhline(text["all_correct"]["value"], color="tab:green", ls="-.", lw=0.9, label="text ceiling")
        ax.set_ylim(0, 112)
        ax.set_ylabel(label, fontsize=8)
        ax.set_xticks(x)
        ax.set_xticklabels([method_label(n) for n in names], fontsize=5.5)
        if goal is not None or split is not None:
            ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.42), ncol=3, frameon=False)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("final table on the test splits (bars: mean over seeds with 95% interval over attribute "
                 "combinations and seeds; dots: seeds; no bar: a seed diverged)", fontsize=8)
    fig.tight_layout()
    return fig


def plot_stability(models: Mapping[str, list[dict]], chosen: str):
    """Training loss per step (50-step running mean, log scale) of every seed of every method, the
    chosen method's on both numeric paths in colour, diverged runs marked."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.6))
    for name, entries in models.items():
        for entry in entries:
            history = getattr(entry.get("model"), "history", None) or {}
            loss = torch.tensor(history.get("loss", []), dtype=torch.float64)
            if loss.numel() < 60:
                continue
            smooth = torch.nn.functional.avg_pool1d(loss[None, None], 50, stride=1)[0, 0]
            seed = entry["job"].get("overrides", {}).get("seed")
            mine = name in (chosen, f"{chosen} (portable path)")
            style = {"lw": 1.2, "label": f"{name}, seed {seed}"} if mine else {"lw": 0.6, "color": "0.7"}
            if entry["divergence"].get("diverged"):
                style = {"lw": 1.2, "color": "tab:red", "ls": "--", "label": f"{name}, seed {seed}: diverged"}
            ax.plot(range(50, 50 + len(smooth)), smooth, **style)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("training loss (50-step mean)")
    ax.set_title("training stability: the chosen method per seed and numeric path (grey: every other run)", fontsize=9)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    return fig
