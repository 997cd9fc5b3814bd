"""pgvkit watch's figure: recall per shape and search latency over one time axis, a line per
server, the thresholds drawn and the index changes between watches marked."""

from __future__ import annotations

from ..audit.plots import index_method
from ..display.extras import need
from ..display.figures import SHAPE_COLOURS, legend_outside, titled

__all__ = ["plot_watch"]

_STYLES = ["-", "--", ":", "-."]  # one per server: colour says the shape, the line the server


def _index_changes(frame) -> list:
    """(when, before, after) where a server's index differs from its watch before (halfway between)."""
    changes = []
    for _, rows in frame.sort_values("at").groupby("server"):
        values = rows[["at", "index"]].values
        for (at0, def0), (at1, def1) in zip(values[:-1], values[1:]):
            if def0 != def1 and not any(abs((at0 + (at1 - at0) / 2) - c[0]).total_seconds() < 1 for c in changes):
                changes.append((at0 + (at1 - at0) / 2, index_method(def0), index_method(def1)))
    return changes


def plot_watch(frame, *, target: float = 0.95, p95_budget_ms: float = 100.0):
    """Two panels over the watches of `frame` (pgvkit.watch_history.history): recall of each
    shape, and search_assets' p95 (estimated from the server's statistics) per server; the target
    and the budget dotted, an index change between two watches dashed."""
    plt = need("matplotlib.pyplot", "the watch figure")
    pd = need("pandas", "the watch figure")
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True, gridspec_kw={"height_ratios": [1, 1]})
    servers = list(dict.fromkeys(frame["server"]))
    for i, server in enumerate(servers):
        rows = frame[frame["server"] == server].sort_values("at")
        style = _STYLES[i % len(_STYLES)]
        for shape in ("similar_assets", "new_vectors"):
            shown = rows[rows[shape].notna()]
            if len(shown):
                top.plot(shown["at"], shown[shape], "o" + style, color=SHAPE_COLOURS.get(shape, "tab:gray"),
                         label=f"{shape.replace('_', ' ')} ({server})")
        seen = rows[rows["p95_ms"].notna()]
        if len(seen):
            bottom.plot(seen["at"], seen["p95_ms"], "s" + style, color="tab:purple", label=f"p95, est. ({server})")
            bottom.plot(seen["at"], seen["mean_ms"], "." + style, color="tab:gray", label=f"mean ({server})")
    top.axhline(target, color="0.35", ls=":", label=f"target recall {target}")
    bottom.axhline(p95_budget_ms, color="tab:red", ls=":", label=f"p95 budget {p95_budget_ms:g} ms")
    for when, before, after in _index_changes(frame):
        for ax in (top, bottom):
            ax.axvline(when, color="0.5", ls="--", lw=1)
        top.annotate(f"index changed:\n{before} → {after}", (when, 0.45), xytext=(4, 0), textcoords="offset points",
                     fontsize=8, color="0.3", va="center")
    if len(frame):
        first, last = frame["at"].min(), frame["at"].max()
        pad = max((last - first) * 0.05, pd.Timedelta(seconds=5))
        bottom.set_xlim(first - pad, last + pad)
    top.set_ylim(0, 1.02)
    top.set_ylabel("recall@10")
    bottom.set_ylabel("search_assets, ms")
    bottom.set_yscale("log")
    bottom.set_xlabel("watch time (UTC)")
    watches = frame["at"].nunique() if len(frame) else 0
    titled(top, "Production search, watched",
           f"{watches} watch{'' if watches == 1 else 'es'} of {len(servers)} server{'' if len(servers) == 1 else 's'}: "
           "recall of a sample, and latency of the application's searches between watches")
    legend_outside(top)
    legend_outside(bottom)
    fig.autofmt_xdate()
    fig.tight_layout()
    return fig
