"""The model change in one figure: how far each model's column is filled, and recall of each
model at each step (both query shapes, against the target)."""

from __future__ import annotations

import numpy as np

from ..display.extras import need
from ..display.figures import SHAPE_COLOURS, legend_outside, titled

__all__ = ["plot_change"]


def plot_change(coverage, audits: dict):
    """Left: rows with an embedding, per model's column (`coverage`: models.Coverage). Right:
    recall@k per step (`audits`: label -> recall.Audit, in order), one bar per query shape."""
    plt = need("matplotlib.pyplot", "the model change figure")
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.6), gridspec_kw={"width_ratios": [1, 2]})
    labels = [f"{m.model}\n({m.column})" for m, _, _ in coverage.found]
    shares = [have / total * 100 if total else 0 for _, have, total in coverage.found]
    left.barh(labels, shares, color="tab:gray")
    for y, (share, (_, have, _)) in enumerate(zip(shares, coverage.found)):
        left.text(min(share, 80) + 1, y, f"{have:,} rows", va="center", fontsize=8)
    left.set_xlim(0, 100)
    left.set_xlabel("rows with an embedding (% of the table)")
    left.set_ylabel("model (column)")
    titled(left, "Coverage", coverage.table)
    steps = list(audits)
    shapes = sorted({s for a in audits.values() for s in a.shapes})
    width = 0.8 / max(len(shapes), 1)
    x = np.arange(len(steps))
    for n, shape in enumerate(shapes):
        values = [audits[step].shapes[shape].recall if shape in audits[step].shapes else np.nan for step in steps]
        bars = right.bar(x + (n - (len(shapes) - 1) / 2) * width, values, width, color=SHAPE_COLOURS.get(shape),
                         label=shape.replace("_", " "))
        right.bar_label(bars, fmt="%.3f", fontsize=7)
    target = next(iter(audits.values())).target if audits else 0.95
    right.axhline(target, color="0.35", ls=":", label=f"target recall {target}")
    right.set_xticks(x, steps, fontsize=8)
    right.set_ylim(0, 1.08)
    right.set_xlabel("step of the change")
    right.set_ylabel(f"recall@{next(iter(audits.values())).k if audits else 10}")
    titled(right, "Recall of each model", "new images never in the table, and similar assets (rows left out)")
    legend_outside(right)
    fig.tight_layout()
    return fig
