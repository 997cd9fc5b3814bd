"""Pictures for the notebook: recall against latency with the Pareto front, build time and size,
and per index kind, recall against the memory each needs (with the budget) and against latency."""

from __future__ import annotations

from collections.abc import Sequence

from ..display.extras import need
from ..display.figures import KIND_COLOURS, legend_outside, plain_ticks, titled
from .recommend import Recommendation
from .sweep import Point, SweepResult

__all__ = ["plot_tradeoff", "plot_builds", "plot_kinds"]

_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "h"]
_SHORT = {"hnsw.ef_search": "ef", "ivfflat.probes": "probes"}


def _setting(p: Point) -> str:
    return f"re-rank {p.rerank}" if p.rerank else f"{_SHORT.get(p.search_param, p.search_param)} {p.search_value}"


def _wrapped(text: str, width: int = 110) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def _declutter(fig, ax) -> None:
    """Take out each label that would be drawn over one drawn before it: two labels on one spot
    are both unreadable (the legend and the table name every point anyway)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    kept = []
    for text in list(ax.texts):
        box = text.get_window_extent(renderer)
        if any(box.overlaps(other) for other in kept):
            text.remove()
        else:
            kept.append(box)


def _pareto(points: Sequence[Point]) -> list[Point]:
    front, best = [], -1.0
    for p in sorted(points, key=lambda p: (p.p95_ms, -p.recall)):
        if p.recall > best:
            front.append(p)
            best = p.recall
    return front


def plot_tradeoff(result: SweepResult, target: float = 0.95, recommendation: Recommendation | None = None):
    """Recall@k against p95 latency: one line per index (its kind's colour, hollow when only
    search_assets can use it), each point labelled with its search setting, points over the
    memory budget crossed, the Pareto front, the target and the recommended point."""
    plt = need("matplotlib.pyplot", "the tuning plots")

    fig, ax = plt.subplots(figsize=(10, 5))
    counted = [p for p in result.points if p.index_used and p.iterative is None]
    budget = recommendation.budget.bytes if recommendation and recommendation.budget else None
    crossed = False
    for n, label in enumerate(dict.fromkeys(p.config.label for p in counted)):
        pts = [p for p in counted if p.config.label == label]
        kind = pts[0].config.kind_name
        colour = KIND_COLOURS.get(kind, "tab:gray")
        direct = kind == "vector"
        ax.plot([p.p95_ms for p in pts], [p.recall for p in pts], "-", color=colour, lw=1, alpha=0.6,
                marker=_MARKERS[n % len(_MARKERS)], mfc=colour if direct else "white", mec=colour, ms=7,
                label=label + ("" if direct else "\n  (needs allow_query_change)"))
        for p in pts:
            ax.annotate(_setting(p), (p.p95_ms, p.recall), textcoords="offset points", xytext=(5, -10), fontsize=7,
                        color=colour)
            if budget is not None and p.memory_bytes > budget:
                ax.plot([p.p95_ms], [p.recall], "x", color="black", ms=9, mew=1.5,
                        label=None if crossed else "over the memory budget")
                crossed = True
    front = _pareto(counted)
    ax.plot([p.p95_ms for p in front], [p.recall for p in front], "k--", lw=1, label="Pareto front")
    ax.axhline(target, color="0.35", lw=1, ls=":", label=f"target recall {target}")
    if recommendation and recommendation.point:
        p = recommendation.point
        ax.scatter([p.p95_ms], [p.recall], marker="*", s=420, facecolor="gold", edgecolor="black", zorder=6,
                   label=f"recommended:\n  {p.config.label}, {_setting(p)}")
    ax.set_xscale("log")
    if counted:
        ax.set_xlim(min(p.p95_ms for p in counted) / 1.15, max(p.p95_ms for p in counted) * 1.6)  # room for labels
    plain_ticks(ax.xaxis)
    ax.set_xlabel("p95 latency of one search (ms, log scale)")
    ax.set_ylabel(f"recall@{result.k} (the shape with the least margin)")
    titled(ax, "Recall against latency, per index and search setting", _wrapped(result.workload_short))
    legend_outside(ax)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    _declutter(fig, ax)
    return fig


def plot_builds(result: SweepResult):
    """Build time and index size per configuration, in its kind's colour."""
    plt = need("matplotlib.pyplot", "the tuning plots")

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 0.5 + 0.4 * max(3, len(result.builds))), sharey=True)
    labels = [b_["index"] for b_ in result.builds]
    colours = [KIND_COLOURS.get(next((k for k in KIND_COLOURS if b_["index"].startswith(k + " ")), "vector"))
               for b_ in result.builds]
    a.barh(labels, [b_["build_s"] for b_ in result.builds], color=colours)
    a.set_xlabel("build time (s)")
    a.set_ylabel("candidate index")
    titled(a, "Build time")
    b.barh(labels, [b_["size_bytes"] / 2**20 for b_ in result.builds], color=colours)
    b.set_xlabel("index size (MB)")
    titled(b, "Index size")
    a.invert_yaxis()
    fig.tight_layout()
    return fig


def plot_kinds(result: SweepResult, target: float = 0.95, recommendation: Recommendation | None = None):
    """Per index kind (vector, halfvec, binary + re-rank): recall@k against the memory the index
    needs at the live table's size, with the memory budget marked, and against p95 latency."""
    plt = need("matplotlib.pyplot", "the tuning plots")

    fig, (size_ax, lat_ax) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    counted = [p for p in result.points if p.index_used and p.iterative is None]
    for kind in dict.fromkeys(p.config.kind_name for p in counted):
        pts = [p for p in counted if p.config.kind_name == kind]
        colour = KIND_COLOURS.get(kind, "tab:gray")
        face = colour if kind == "vector" else "white"
        label = kind + ("" if kind == "vector" else " (needs allow_query_change)")
        size_ax.scatter([p.memory_bytes / 2**20 for p in pts], [p.recall for p in pts], facecolor=face,
                        edgecolor=colour, label=label, alpha=0.8)
        lat_ax.scatter([p.p95_ms for p in pts], [p.recall for p in pts], facecolor=face, edgecolor=colour, alpha=0.8)
    budget = recommendation.budget if recommendation else None
    if budget is not None:
        size_ax.axvline(max(budget.bytes, 1) / 2**20, color="black", lw=1, ls="--",
                        label=f"memory budget {budget.bytes / 2**20:,.0f} MB")
    for ax in (size_ax, lat_ax):
        ax.axhline(target, color="0.35", lw=1, ls=":", label=f"target recall {target}" if ax is size_ax else None)
        ax.set_xscale("log")
        plain_ticks(ax.xaxis)
        ax.grid(alpha=0.3)
    if recommendation and recommendation.point:
        p = recommendation.point
        for ax, x in ((size_ax, p.memory_bytes / 2**20), (lat_ax, p.p95_ms)):
            ax.scatter([x], [p.recall], marker="*", s=420, facecolor="gold", edgecolor="black", zorder=6,
                       label="recommended" if ax is size_ax else None)
    size_ax.set_xlabel(f"memory the index needs at {result.live_rows:,} rows (MB, log scale)")
    size_ax.set_ylabel(f"recall@{result.k} (the shape with the least margin)")
    lat_ax.set_xlabel("p95 latency of one search (ms, log scale)")
    titled(size_ax, "Index kinds: memory against recall")
    titled(lat_ax, "Index kinds: latency against recall")
    handles, labels = size_ax.get_legend_handles_labels()
    lat_ax.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8)
    fig.tight_layout()
    return fig
