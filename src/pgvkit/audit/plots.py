"""The recall audit's figures: per-search recall of one audit, and recall over time with the
index changes between audits marked."""

from __future__ import annotations

import numpy as np

from ..display.extras import need
from ..display.figures import SHAPE_COLOURS, legend_outside, titled

__all__ = ["plot_recall", "plot_history", "index_method"]


def plot_recall(result):
    """Per-query recall@k of each shape, side by side: how many searches return how much of the truth."""
    plt = need("matplotlib.pyplot", "the recall plots")
    fig, ax = plt.subplots(figsize=(9, 3.5))
    edges = np.arange(result.k + 2) / result.k - 0.5 / result.k  # one bin per possible recall: 0, 0.1, ..., 1
    names = list(result.shapes)
    ax.hist([result.shapes[n].per_query for n in names], bins=edges, rwidth=0.85,
            color=[SHAPE_COLOURS.get(n, "tab:gray") for n in names],
            label=[f"{n.replace('_', ' ')} (mean {result.shapes[n].recall:.3f})" for n in names])
    ax.axvline(result.target, color="0.35", ls=":", label=f"target recall {result.target}")
    ax.set_xlabel(f"recall@{result.k} of one search (the share of its {result.k} true neighbours it returned)")
    ax.set_ylabel("searches")
    ax.set_xticks(np.arange(result.k + 1) / result.k)
    titled(ax, f"Recall per search on {result.database}", f"{result.table}, {result.rows_in_table:,} rows")
    legend_outside(ax)
    fig.tight_layout()
    return fig


def index_method(definition) -> str:
    """`hnsw (m=16, ef_construction=64)` from an index definition; `no index` without one."""
    import re

    if not isinstance(definition, str) or not definition:
        return "no index"
    using = re.search(r"USING (\w+)", definition)
    params = re.search(r"WITH \((.*)\)\s*$", definition)
    return (using.group(1) if using else "index") + (f" ({params.group(1).replace(chr(39), '')})" if params else "")


def _index_changes(history) -> list:
    """(when, before, after) for each audit whose index differs from the audit before it, `when`
    halfway between the two (the change happened in between)."""
    audits = history.sort_values("at").drop_duplicates("at")
    changes = []
    for (at0, def0), (at1, def1) in zip(audits[["at", "index_definition"]].values[:-1],
                                        audits[["at", "index_definition"]].values[1:]):
        if def0 != def1:
            changes.append((at0 + (at1 - at0) / 2, index_method(def0), index_method(def1)))
    return changes


def plot_history(history):
    """Recall over time, one line per shape, with the target and a dashed line where the index
    changed between two audits (a tuning migration); the time axis spans the audits."""
    plt = need("matplotlib.pyplot", "the recall plots")
    fig, ax = plt.subplots(figsize=(9, 3.5))
    for shape, rows in history.groupby("shape"):
        ax.plot(rows["at"], rows["recall"], "o-", color=SHAPE_COLOURS.get(shape, "tab:gray"),
                label=str(shape).replace("_", " "))
    if len(history):
        ax.axhline(float(history["target"].iloc[-1]), color="0.35", ls=":",
                   label=f"target recall {float(history['target'].iloc[-1])}")
        for when, before, after in _index_changes(history):
            ax.axvline(when, color="0.5", ls="--", lw=1)
            ax.annotate(f"index changed:\n{before} → {after}", (when, 0.5), xytext=(4, 0), textcoords="offset points",
                        fontsize=8, color="0.3", va="center")
        first, last = history["at"].min(), history["at"].max()
        pad = max((last - first) * 0.05, __import__("pandas").Timedelta(minutes=5))
        ax.set_xlim(first - pad, last + pad)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("audit time (UTC)")
    ax.set_ylabel("recall@k")
    audits = history["at"].nunique() if len(history) else 0
    titled(ax, "Recall over time", f"every recorded audit of this table ({audits} audit{'' if audits == 1 else 's'})")
    legend_outside(ax)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig
