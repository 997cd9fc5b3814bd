"""Pictures for the notebook: recall against latency with the Pareto front, build time and size,
and per index kind, recall against the memory each needs (with the budget) and against latency."""

from __future__ import annotations

from collections.abc import Sequence

from ..extras import need
from .recommend import Recommendation
from .sweep import Point, SweepResult

__all__ = ["plot_tradeoff", "plot_builds", "plot_kinds"]

_KIND_COLOURS = {"vector": "tab:blue", "halfvec": "tab:green", "binary": "tab:purple"}


def _pareto(points: Sequence[Point]) -> list[Point]:
    front, best = [], -1.0
    for p in sorted(points, key=lambda p: (p.p95_ms, -p.recall)):
        if p.recall > best:
            front.append(p)
            best = p.recall
    return front


def plot_tradeoff(result: SweepResult, target: float = 0.95, recommendation: Recommendation | None = None):
    """Recall@k against p95 latency for every measured point, the Pareto front and the target."""
    plt = need("matplotlib.pyplot", "the tuning plots")

    fig, ax = plt.subplots(figsize=(8, 5))
    counted = [p for p in result.points if p.index_used and p.iterative is None]
    for label in dict.fromkeys(p.config.label for p in counted):
        pts = [p for p in counted if p.config.label == label]
        ax.plot([p.p95_ms for p in pts], [p.recall for p in pts], "o-", label=label, alpha=0.8)
    front = _pareto(counted)
    ax.plot([p.p95_ms for p in front], [p.recall for p in front], "k--", lw=1, label="Pareto front")
    ax.axhline(target, color="red", lw=1, ls=":", label=f"target {target}")
    if recommendation and recommendation.point:
        p = recommendation.point
        ax.plot([p.p95_ms], [p.recall], "r*", ms=16, label="recommended")
    ax.set_xscale("log")
    ax.set_xlabel("p95 latency (ms, log scale)")
    ax.set_ylabel(f"recall@{result.k}")
    ax.set_title(result.workload, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_builds(result: SweepResult):
    """Build time and index size per configuration."""
    plt = need("matplotlib.pyplot", "the tuning plots")

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5))
    labels = [b_["index"] for b_ in result.builds]
    a.barh(labels, [b_["build_s"] for b_ in result.builds])
    a.set_xlabel("build time (s)")
    b.barh(labels, [b_["size_bytes"] / 2**20 for b_ in result.builds], color="tab:orange")
    b.set_xlabel("index size (MB)")
    b.set_yticks([])
    fig.tight_layout()
    return fig


def plot_kinds(result: SweepResult, target: float = 0.95, recommendation: Recommendation | None = None):
    """Per index kind (vector, halfvec, binary + re-rank): recall@k against the memory the index
    needs at the live table's size, with the memory budget marked, and against p95 latency."""
    plt = need("matplotlib.pyplot", "the tuning plots")

    fig, (size_ax, lat_ax) = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    counted = [p for p in result.points if p.index_used and p.iterative is None]
    for kind in dict.fromkeys(p.config.kind_name for p in counted):
        pts = [p for p in counted if p.config.kind_name == kind]
        colour = _KIND_COLOURS.get(kind)
        size_ax.scatter([p.memory_bytes / 2**20 for p in pts], [p.recall for p in pts], color=colour, label=kind,
                        alpha=0.7)
        lat_ax.scatter([p.p95_ms for p in pts], [p.recall for p in pts], color=colour, label=kind, alpha=0.7)
    budget = recommendation.budget if recommendation else None
    if budget is not None:
        size_ax.axvline(max(budget.bytes, 1) / 2**20, color="black", lw=1, ls="--",
                        label=f"memory budget {budget.bytes / 2**20:,.0f} MB")
    for ax in (size_ax, lat_ax):
        ax.axhline(target, color="red", lw=1, ls=":", label=f"target {target}")
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    if recommendation and recommendation.point:
        p = recommendation.point
        size_ax.plot([p.memory_bytes / 2**20], [p.recall], "r*", ms=16, label="recommended")
        lat_ax.plot([p.p95_ms], [p.recall], "r*", ms=16)
    size_ax.set_xlabel(f"memory the index needs at {result.live_rows:,} rows (MB, log scale)")
    size_ax.set_ylabel(f"recall@{result.k} (the shape with the least margin)")
    lat_ax.set_xlabel("p95 latency (ms, log scale)")
    size_ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Index kinds: size against recall and latency", fontsize=10)
    fig.tight_layout()
    return fig
