"""The figures of notebook 01: learned functions and inverses, the errors beside the paper's, and
the layers' singular values. Legends sit outside the axes so that they never cover data."""

from __future__ import annotations

from typing import Any, Sequence

import torch

from invcap import toy

__all__ = ["plot_fits", "plot_errors", "plot_toy_conditioning"]

_NO_UNIT = "(dimensionless)"


def _pick(results: Sequence[toy.ExperimentResult], function: str, variant: str, seed: int) -> toy.ExperimentResult:
    for r in results:
        if (r.function, r.variant, r.seed) == (function, variant, seed):
            return r
    raise ValueError(f"no result for function={function!r}, variant={variant!r}, seed={seed}")


@torch.no_grad()
def _curves(result: toy.ExperimentResult, x64: torch.Tensor, y64: torch.Tensor) -> dict[str, torch.Tensor]:
    """f(x), f^-1(g(x)) (first coordinate) and both pointwise error norms over all coordinates."""
    model = result.model
    dtype = next(model.parameters()).dtype
    x, y = toy.lift(x64.to(dtype), model.features), toy.lift(y64.to(dtype), model.features)
    fx, inv = model(x), model.inverse(y)
    return {"f": fx[:, 0].double(), "inverse": inv[:, 0].double(),
            "forward_error": (fx - y).double().norm(dim=-1).clamp_min(1e-12),
            "inverse_error": (inv - x).double().norm(dim=-1).clamp_min(1e-12)}


def plot_fits(results: Sequence[toy.ExperimentResult], variants: Sequence[str], seed: int = 0, points: int = 801):
    """Per function (columns): the learned f against g, the inverse f^-1 applied to the true g(x)
    against x (clipped view), and both pointwise errors on a log scale. One legend, below."""
    import matplotlib.pyplot as plt

    functions = list(dict.fromkeys(r.function for r in results))
    fig, axes = plt.subplots(3, len(functions), figsize=(4.4 * len(functions), 10), squeeze=False,
                             layout="constrained")
    handles = {}
    for col, name in enumerate(functions):
        function = toy.FUNCTIONS[name]
        lo, hi = function.domain
        x64 = torch.linspace(lo, hi, points, dtype=torch.float64)
        y64 = function.fn(x64)
        ax_f, ax_i, ax_e = axes[:, col]
        handles["target g (and true g$^{-1}$)"], = ax_f.plot(x64, y64, color="black", lw=3, alpha=0.3)
        ax_i.plot(y64, x64, color="black", lw=3, alpha=0.3)
        for k, variant in enumerate(variants):
            curves, color = _curves(_pick(results, name, variant, seed), x64, y64), f"C{k}"
            handles[f"{variant}: f, f$^{{-1}}$ / forward error"], = ax_f.plot(x64, curves["f"], lw=1.2, color=color)
            ax_i.plot(y64, curves["inverse"], lw=1.2, color=color)
            ax_e.semilogy(x64, curves["forward_error"], lw=1, color=color)
            handles[f"{variant}: inverse error"], = ax_e.semilogy(x64, curves["inverse_error"], lw=1, ls="--",
                                                                  color=color)
        span = hi - lo
        ax_i.set_ylim(lo - 0.5 * span, hi + 0.5 * span)  # a forward-only inverse can leave the plot
        ax_f.set(title=function.formula, xlabel="x", ylabel="f(x), coordinate 0")
        ax_i.set(xlabel="y = g(x)", ylabel="f$^{-1}$(y), coordinate 0")
        ax_e.set(xlabel="x", ylabel="error norm, all coordinates")
        for ax in (ax_f, ax_i, ax_e):
            ax.grid(alpha=0.3)
    fig.suptitle(f"Learned functions and inverses (seed {seed}; every quantity is dimensionless)\nmiddle row: the "
                 f"inverse applied to the true targets, clipped to the interval ± half its width; bottom row: "
                 f"||f(x) - g(x)|| and ||f$^{{-1}}$(g(x)) - x|| over all coordinates", fontsize=10)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(len(handles), 3),
               fontsize=8, frameon=False)
    return fig


def plot_errors(rows: Sequence[dict[str, Any]], results: Sequence[toy.ExperimentResult] = ()):
    """Learning and inversion error per function and variant: mean over seeds (bars), the range
    over seeds (whiskers from the smallest to the largest seed, so they stay positive on the log
    axis), each seed (dots), and the paper's Table 1 (black bars). Legend below the axes."""
    import matplotlib.pyplot as plt

    functions = list(dict.fromkeys(row["function"] for row in rows))
    variants = list(dict.fromkeys(row["variant"] for row in rows))
    width = 0.8 / (len(variants) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5), sharey=True, layout="constrained")
    titles = ("learning error  mean ||f(x) - g(x)||$^2$", "inversion error  mean ||f$^{-1}$(g(x)) - x||$^2$")
    for ax, kind, title in zip(axes, ("learning_error", "inversion_error"), titles):
        for k, variant in enumerate(variants + ["paper Table 1"]):
            for i, function in enumerate(functions):
                row = next(r for r in rows if r["function"] == function and
                           (r["variant"] == variant or variant == "paper Table 1"))
                pos = i + (k - len(variants) / 2) * width
                label = variant if i == 0 else None
                if variant == "paper Table 1":
                    ax.bar(pos, row[f"paper_{kind}"], width, color="black", label=label)
                    continue
                mean, low, high = row[kind], row[f"{kind}_min"], row[f"{kind}_max"]
                ax.bar(pos, mean, width, color=f"C{k}", alpha=0.8, label=label,
                       yerr=[[mean - low], [high - mean]], capsize=2, error_kw={"lw": 1})
                seeds = [getattr(r, kind) for r in results if r.function == function and r.variant == variant]
                ax.scatter([pos] * len(seeds), seeds, s=6, color="black", zorder=3)
        ax.set_yscale("log")
        ax.set_xticks(range(len(functions)), functions)
        ax.set(title=title, xlabel="target function")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(f"test error, squared distance {_NO_UNIT}, log scale")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 4), fontsize=8, frameon=False)
    fig.suptitle("bars: mean over seeds; whiskers: smallest to largest seed; dots: each seed", fontsize=9)
    return fig


def plot_toy_conditioning(rows: Sequence[dict[str, Any]]):
    """Per function: sigma_min and sigma_max of every W_i for each variant in ``rows`` (from
    ``toy_conditioning_rows``), with the inverse Lipschitz bound and the measured median error
    amplification in a legend below each panel."""
    import matplotlib.pyplot as plt

    functions = list(dict.fromkeys(s["function"] for s in rows))
    fig, axes = plt.subplots(1, len(functions), figsize=(4.8 * len(functions), 5.4), squeeze=False,
                             layout="constrained")
    for ax, function in zip(axes[0], functions):
        for k, row in enumerate(s for s in rows if s["function"] == function):
            layers = [layer["index"] + 1 for layer in row["layers"]]
            label = (f"{row['variant']}\nLip(f$^{{-1}}$) <= {row['inverse_lipschitz_bound']:.1e}, "
                     f"median amplification {row['median_amplification']:.1e}")
            ax.semilogy(layers, [layer["sigma_max"] for layer in row["layers"]], "o-", color=f"C{k}", label=label)
            ax.semilogy(layers, [layer["sigma_min"] for layer in row["layers"]], "s--", color=f"C{k}")
        ax.set(title=f"{function}: singular values of W_i (seed {rows[0]['seed']})", xlabel="layer i",
               ylabel=f"singular value {_NO_UNIT}: σ_max solid, σ_min dashed")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.14), frameon=False)
    return fig
