"""What every figure of the kit shares, so a reader learns it once: one colour per index kind
(in every figure of every notebook), plain millisecond ticks on log axes, a short title with the
details in a caption line under it, and legends outside the data."""

from __future__ import annotations

__all__ = ["KIND_COLOURS", "SHAPE_COLOURS", "plain_ticks", "legend_outside", "titled"]

KIND_COLOURS = {"vector": "tab:blue", "halfvec": "tab:green", "binary": "tab:purple"}
SHAPE_COLOURS = {"similar_assets": "tab:blue", "similar assets": "tab:blue", "new_vectors": "tab:orange",
                 "new vectors": "tab:orange"}


def plain_ticks(axis) -> None:
    """Tick labels as plain numbers (0.3, 2, 40), not powers of ten (3x10^-1), on a log axis too."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    limits = axis.axes.get_xlim() if axis.axis_name == "x" else axis.axes.get_ylim()  # autoscaled by now
    low, high = sorted(limits)
    wide = low > 0 and high / low > 300  # past two and a half decades 1, 2, 5 would run into each other
    axis.set_major_locator(LogLocator(base=10, subs=(1.0,) if wide else (1.0, 2.0, 5.0)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:.4g}"))
    axis.set_minor_formatter(FuncFormatter(lambda v, _: ""))


def legend_outside(ax, **kwargs) -> None:
    """The legend to the right of the axes: it never hides a point."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8, **kwargs)


def titled(ax, title: str, caption: str = "") -> None:
    """A short title; the details (the workload, the database) in a smaller line under it."""
    ax.set_title(title + (f"\n{caption}" if caption else ""), fontsize=10, loc="left")
