"""The report's plots: matplotlib (Agg) figures returned as base64 PNG for ``<img src="data:...">``."""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

DPI = 100
LEVEL_COLOURS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def grouped_bars(
    panels: Sequence[tuple[str, dict[str, dict[str, float]]]], levels: Sequence[str]
) -> str:
    """One panel per (title, {model: {level: value}}): a group of bars per model, one per level."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.4 * len(panels), 3.6), squeeze=False)
    for ax, (title, values) in zip(axes[0], panels, strict=True):
        models = list(values)
        width = 0.8 / max(len(levels), 1)
        for j, level in enumerate(levels):
            xs = [i + (j - (len(levels) - 1) / 2) * width for i in range(len(models))]
            ys = [values[m].get(level, math.nan) for m in models]
            bars = ax.bar(xs, ys, width, label=level, color=LEVEL_COLOURS[j % len(LEVEL_COLOURS)])
            ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
        ax.set_xticks(range(len(models)), models)
        ax.set_title(title, fontsize=10)
        ax.margins(y=0.15)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(title="level", fontsize=8, title_fontsize=8)
    return _png(fig)


def reliability(rows: Sequence[dict[str, float]]) -> str:
    """Observed vs mean predicted P[Love] per bin, with the bins' intervals; log axes if wide."""
    pred = [r["predicted"] for r in rows]
    obs = [r["observed"] for r in rows]
    positive = [v for v in pred + obs if v > 0]
    log = bool(positive) and max(positive) / min(positive) > 30
    fig, ax = plt.subplots(figsize=(5.6, 4.4))
    floor = min(positive) / 2 if log else 0.0  # where bins without positives are drawn
    shown = [max(v, floor) for v in obs]
    has_ci = all("lower" in r and "upper" in r for r in rows)
    yerr = (
        [
            [max(s - max(r["lower"], floor), 0) for s, r in zip(shown, rows, strict=True)],
            [max(r["upper"] - s, 0) for s, r in zip(shown, rows, strict=True)],
        ]
        if has_ci
        else None
    )
    for keep, style, label in ((True, "o", "bins (95 % interval)"), (False, "v", "no positives")):
        idx = [i for i, o in enumerate(obs) if (o > 0 or not log) == keep]
        if not idx:
            continue
        err = [[yerr[0][i] for i in idx], [yerr[1][i] for i in idx]] if yerr else None
        colour = LEVEL_COLOURS[0] if keep else "grey"
        ax.errorbar(
            [pred[i] for i in idx],
            [shown[i] for i in idx],
            yerr=err,
            fmt=style,
            capsize=3,
            color=colour,
            label=label,
        )
    lo, hi = (floor / 1.6, max(positive) * 1.6) if log else (0.0, max(pred + obs) * 1.05)
    ax.plot([lo, hi], [lo, hi], "--", color="black", lw=1, label="perfect calibration")
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("mean predicted P[Love] in bin")
    ax.set_ylabel("observed love rate in bin")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _png(fig)


def lines(
    x: Sequence[float],
    series: dict[str, Sequence[float]],
    xlabel: str,
    ylabel: str,
    baselines: dict[str, float] | None = None,
    baseline_label: str = "baseline",
) -> str:
    """Curves of ``series`` over ``x``, each best point labelled; ``baselines[name]`` dashed."""
    fig, ax = plt.subplots(figsize=(7.5, 4.0))
    for i, (name, ys) in enumerate(series.items()):
        colour = LEVEL_COLOURS[i % len(LEVEL_COLOURS)]
        ax.plot(x, ys, "o-", label=name, color=colour)
        best = max(range(len(ys)), key=lambda j: ys[j])
        ax.annotate(
            f"{ys[best]:.3f}",
            (x[best], ys[best]),
            textcoords="offset points",
            xytext=(0, 6),
            ha="center",
            fontsize=8,
            color=colour,
        )
        if baselines and name in baselines:
            ax.axhline(
                baselines[name], ls="--", lw=1, color=colour, label=f"{baseline_label}: {name}"
            )
    ax.margins(y=0.12)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def recall_vs_qps(
    curves: dict[str, list[tuple[float, float, str]]],
    served: tuple[float, float, str] | None,
    floor: float | None,
) -> str:
    """Recall vs queries/s per index kind (points ``(qps, recall, setting)``), log-scaled qps;
    the settings go in the table beside it. Curves ``"<kind> · <size>"`` share their kind's
    colour, one line style per catalogue size."""
    fig, ax = plt.subplots(figsize=(7.4, 4.8))
    kinds = list(dict.fromkeys(name.split(" · ")[0] for name in curves))
    sizes = list(dict.fromkeys(name.partition(" · ")[2] for name in curves))
    for name, points in curves.items():
        kind, _, size = name.partition(" · ")
        colour = LEVEL_COLOURS[kinds.index(kind) % len(LEVEL_COLOURS)]
        style = ("-", "--", ":", "-.")[sizes.index(size) % 4]
        points = sorted(points)
        ax.plot(
            [p[0] for p in points],
            [p[1] for p in points],
            marker="o",
            ls=style,
            label=name,
            color=colour,
        )
    if served is not None:
        ax.plot(served[0], served[1], "*", ms=16, color="black", label=f"served ({served[2]})")
    if floor is not None:
        ax.axhline(floor, ls="--", lw=1, color="red", label=f"recall floor {floor:g}")
    recalls = [p[1] for pts in curves.values() for p in pts] + ([served[1]] if served else [])
    low = min(recalls + ([floor] if floor is not None else []))
    ax.set_ylim(max(0.0, low - 0.03), min(1.0, max(recalls)) + 0.02)
    ax.set_xscale("log")
    ax.set_xlabel("queries per second (log scale)")
    ax.set_ylabel("recall vs exact search")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="best")
    return _png(fig)


def tradeoff_grid(
    x: Sequence[float],
    panels: dict[str, Sequence[float]],
    xlabel: str,
    references: dict[str, dict[str, float]] | None = None,
) -> str:
    """A 2-column grid of small plots, one per metric; the ``x`` values evenly spaced (0, ¼ … 16)."""
    n = len(panels)
    cols = 2
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(10, 3.0 * rows), squeeze=False)
    pos = list(range(len(x)))
    for ax, (name, ys) in zip(axes.flat, panels.items(), strict=False):
        ax.plot(pos, ys, "o-", color=LEVEL_COLOURS[0])
        for j, (label, y) in enumerate((references or {}).get(name, {}).items()):
            ax.axhline(y, ls="--", lw=1, color=LEVEL_COLOURS[1 + j], label=label)
        ax.set_xticks(pos, [f"{v:g}" for v in x])
        ax.margins(x=0.05, y=0.12)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.grid(alpha=0.3)
        if (references or {}).get(name):
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    return _png(fig)
