"""Every figure the notebooks draw explains itself without the code: a title, labelled axes, a
legend that hides no point, plain numbers on its ticks, one colour per index kind in every
figure, the recommended point unmistakable. Drawn from results built here (no database needed:
what is checked is the drawing)."""

from dataclasses import replace

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.colors import to_hex  # noqa: E402

from pgvkit.display.figures import KIND_COLOURS  # noqa: E402
from pgvkit.memory import Budget  # noqa: E402
from pgvkit.models.plots import plot_change  # noqa: E402
from pgvkit.schema.models import Coverage, ModelColumn  # noqa: E402
from pgvkit.audit.recall import Audit, ShapeResult, plot_history, plot_recall  # noqa: E402
from pgvkit.tuning.build import Config  # noqa: E402
from pgvkit.tuning.plots import plot_builds, plot_kinds, plot_tradeoff  # noqa: E402
from pgvkit.tuning.recommend import Recommendation  # noqa: E402
from pgvkit.tuning.sweep import Point, SweepResult  # noqa: E402

HNSW = Config("hnsw", (("m", 16), ("ef_construction", 64)))
HALF = Config("hnsw", (("m", 16), ("ef_construction", 64)), "halfvec")


def sweep() -> tuple[SweepResult, Recommendation]:
    points = []
    for config, shift in ((HNSW, 0.0), (HALF, -0.01)):
        for ef, recall, p95 in ((20, 0.90, 0.4), (40, 0.95, 0.7), (80, 0.98, 1.3), (160, 0.995, 2.6)):
            points.append(Point(config, "hnsw.ef_search", ef, True, recall=recall + shift, p95_ms=p95,
                                memory_bytes=(40 if config is HNSW else 20) * 2**20))
    result = SweepResult("12,000 x 768 vectors (a sample of ip_asset_embeddings), k = 10, cosine distance; new "
                         "vectors: 200 queries + 200 fresh; similar assets: 200 queries + 200 fresh", 10, points,
                         [{"index": HNSW.label, "build_s": 5.1, "size_bytes": 40 * 2**20},
                          {"index": HALF.label, "build_s": 4.2, "size_bytes": 20 * 2**20}], live_rows=12_000)
    rec = Recommendation(0.95, 10, points[2], True, "met", budget=Budget(30 * 2**20, "a test budget"))
    return result, rec


def audit() -> Audit:
    rng = np.random.default_rng(0)
    shapes = {name: ShapeResult(200, float(q.mean()), float(np.percentile(q, 5)), 1.0, 2.0, q)
              for name, q in (("similar_assets", rng.choice([0.8, 0.9, 1.0], 200)),
                              ("new_vectors", rng.choice([0.7, 0.9, 1.0], 200)))}
    return Audit("jarvis", "ip_asset_embeddings", 12_000, 10, 0.95, None, {}, shapes)


IVFFLAT_DEFINITION = ("CREATE INDEX idx_embedding_cosine ON public.ip_asset_embeddings USING ivfflat (embedding "
           "vector_cosine_ops) WITH (lists='100')")
HNSW_DEFINITION = ("CREATE INDEX idx_embedding_cosine ON public.ip_asset_embeddings USING hnsw (embedding vector_cosine_ops) "
        "WITH (m='16', ef_construction='64')")


def history(audits: int) -> pd.DataFrame:
    """Audits two hours apart as audit_history returns them; the index changed after the first."""
    at = pd.date_range("2026-11-30 09:00", periods=audits, freq="2h", tz="UTC")
    return pd.DataFrame([{"at": t, "shape": s, "recall": r, "target": 0.95, "index_definition": IVFFLAT_DEFINITION if i == 0
                          else HNSW_DEFINITION} for i, t in enumerate(at) for s, r in (("similar_assets", 0.97),
                                                                              ("new_vectors", 0.93))])


def test_recall_over_time_marks_where_the_index_changed_between_two_audits():
    fig = plot_history(history(3))
    [changed] = [t.get_text() for t in fig.axes[0].texts if t.get_text().startswith("index changed")]
    assert changed == "index changed:\nivfflat (lists=100) → hnsw (m=16, ef_construction=64)"
    [line] = [x for x in fig.axes[0].lines if list(x.get_linestyle()) and x.get_linestyle() == "--"]
    marked = pd.Timestamp(line.get_xdata()[0])
    assert pd.Timestamp("2026-11-30 09:00", tz="UTC") < marked < pd.Timestamp("2026-11-30 11:00", tz="UTC")
    assert not [t for t in plot_history(history(1)).axes[0].texts if t.get_text().startswith("index changed")]


FIGURES = {
    "tradeoff": lambda: plot_tradeoff(*sweep()[:1], 0.95, sweep()[1]),
    "builds": lambda: plot_builds(sweep()[0]),
    "kinds": lambda: plot_kinds(sweep()[0], 0.95, sweep()[1]),
    "kinds, the budget three decades away": lambda: plot_kinds(  # a server's cache: ticks 1, 2, 5 would run together
        sweep()[0], 0.95, replace(sweep()[1], budget=Budget(17 * 2**30, "effective_cache_size"))),
    "recall per search": lambda: plot_recall(audit()),
    "recall over time": lambda: plot_history(history(3)),
    "one audit over time": lambda: plot_history(history(1)),
    "model change": lambda: plot_change(models(), {"old model": audit(), "new model\nbefore the switch": audit()}),
}


def models() -> Coverage:
    return Coverage("ip_asset_embeddings", [(ModelColumn("embedding", "current", 768), 12_000, 12_000),
                                            (ModelColumn("embedding_clip", "clip", 1024, state="backfilling"),
                                             7_500, 12_000)])


def problems(fig) -> list[str]:
    """What a reader would miss in `fig`: each axes' title and labels, legends over the data,
    tick labels that are powers of ten or run together, labels drawn on each other or past the
    figure's edge, titles of two panels running into each other."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    found = []
    for n, ax in enumerate(fig.axes):
        siblings = [a for a in ax.get_shared_y_axes().get_siblings(ax) if a is not ax]
        if not ax.get_title(loc="left") and not ax.get_title():
            found.append(f"axes {n}: no title")
        if not ax.get_xlabel():
            found.append(f"axes {n}: no x label")
        if not ax.get_ylabel() and not any(a.get_ylabel() for a in siblings):
            found.append(f"axes {n}: no y label")
        for tick in ax.get_xticklabels() + ax.get_yticklabels():
            if "$" in tick.get_text() or "times" in tick.get_text():
                found.append(f"axes {n}: tick {tick.get_text()!r} is not a plain number")
                break
        legend = ax.get_legend()
        if legend is not None and legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer)):
            found.append(f"axes {n}: the legend sits over the data")
        labels = [(t.get_text(), t.get_window_extent(renderer)) for t in ax.texts if t.get_visible() and t.get_text()]
        found += [f"axes {n}: labels {a!r} and {b!r} overlap" for i, (a, box) in enumerate(labels)
                  for b, other in labels[i + 1:] if box.overlaps(other)]
        low, high = sorted(ax.get_xlim())
        ticks = [(t.get_text(), t.get_window_extent(renderer)) for t in ax.get_xticklabels()
                 if t.get_text() and low <= t.get_position()[0] <= high]  # those outside the view are not drawn
        found += [f"axes {n}: tick labels {a!r} and {b!r} run together" for (a, box), (b, other) in zip(ticks, ticks[1:])
                  if box.overlaps(other)]
        title = ax.title if ax.get_title() else ax._left_title
        for other in fig.axes[n + 1:]:
            theirs = other.title if other.get_title() else other._left_title
            if title.get_text() and theirs.get_text() and \
                    title.get_window_extent(renderer).overlaps(theirs.get_window_extent(renderer)):
                found.append(f"axes {n}: its title runs into the next one's")
        width = fig.bbox.width
        found += [f"axes {n}: label {text!r} is cut off at the edge" for text, box in labels + ticks
                  if box.x1 > width + 1 or box.x0 < -1]
    return found


@pytest.mark.parametrize("name", FIGURES)
def test_each_figure_has_a_title_labelled_axes_plain_ticks_and_a_legend_outside_the_data(name):
    import matplotlib.pyplot as plt

    fig = FIGURES[name]()
    try:
        assert problems(fig) == []
    finally:
        plt.close(fig)


def test_the_check_finds_a_bare_figure():
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0.1, 1, 10], [1, 2, 3], label="a line")
    ax.set_xscale("log")
    ax.legend(loc="center")
    try:
        found = problems(fig)
        assert [f.split("'")[0] + ("is not a plain number" if "plain" in f else "") for f in found] == [
            "axes 0: no title", "axes 0: no x label", "axes 0: no y label",
            "axes 0: tick is not a plain number", "axes 0: the legend sits over the data"]
        assert "10^{" in found[3]
    finally:
        plt.close(fig)


def test_the_check_finds_labels_on_each_other_ticks_run_together_titles_touching_and_labels_cut_off():
    import matplotlib.pyplot as plt

    from pgvkit.display.figures import titled

    fig, (a, b) = plt.subplots(1, 2, figsize=(6, 3))
    a.plot([1, 2], [1, 2], label="a line")
    a.annotate("ef 40", (1.5, 1.5))
    a.annotate("ef 40", (1.5, 1.5))  # the same spot: both unreadable
    b.plot([1, 2], [1, 2])
    b.annotate("probes 4", (2.0, 1.0), xytext=(60, 0), textcoords="offset points")  # past the figure's edge
    a.set_xticks([1.0, 1.01, 2.0])  # 1.0 and 1.01 print on each other
    titled(a, "Build time of each candidate, on the workload")
    titled(b, "Index size")
    for ax in (a, b):
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    try:
        found = problems(fig)
        assert "axes 0: labels 'ef 40' and 'ef 40' overlap" in found
        assert any(f.startswith("axes 0: tick labels") and f.endswith("run together") for f in found)
        assert "axes 0: its title runs into the next one's" in found
        assert "axes 1: label 'probes 4' is cut off at the edge" in found
    finally:
        plt.close(fig)


def test_wide_log_axes_label_only_the_decades_and_narrow_ones_also_2_and_5():
    import matplotlib.pyplot as plt

    from pgvkit.display.figures import plain_ticks

    fig, (wide, narrow) = plt.subplots(1, 2)
    for ax, (low, high) in ((wide, (4, 20_000)), (narrow, (0.3, 6))):
        ax.plot([low, high], [0, 1])
        ax.set_xscale("log")
        plain_ticks(ax.xaxis)
    fig.canvas.draw()
    try:
        shown = [[t.get_text() for t in ax.get_xticklabels() if t.get_text() and low <= t.get_position()[0] <= high]
                 for ax, (low, high) in ((wide, (4, 20_000)), (narrow, (0.3, 6)))]
        assert shown == [["10", "100", "1,000", "10,000"], ["0.5", "1", "2", "5"]]
    finally:
        plt.close(fig)


def test_an_index_kind_has_one_colour_in_every_figure_and_the_recommended_point_stands_out():
    import matplotlib.pyplot as plt

    result, rec = sweep()
    tradeoff, kinds = plot_tradeoff(result, 0.95, rec), plot_kinds(result, 0.95, rec)
    try:
        lines = {line.get_label().split("\n")[0]: to_hex(line.get_color()) for line in tradeoff.axes[0].get_lines()}
        assert lines[HNSW.label] == to_hex(KIND_COLOURS["vector"]) and lines[HALF.label] == to_hex(KIND_COLOURS["halfvec"])
        scatters = {c.get_label().split(" ")[0]: to_hex(c.get_edgecolor()[0]) for c in kinds.axes[0].collections
                    if c.get_label() in ("vector", "halfvec (needs allow_query_change)")}
        assert scatters == {"vector": to_hex(KIND_COLOURS["vector"]), "halfvec": to_hex(KIND_COLOURS["halfvec"])}
        star = [c for c in tradeoff.axes[0].collections if c.get_label().startswith("recommended")]
        assert len(star) == 1 and to_hex(star[0].get_facecolor()[0]) == to_hex("gold")
        labels = [t.get_text() for t in tradeoff.axes[0].texts]
        assert labels.count("ef 40") == 2  # every point says its setting where its label has room
        legend = [t.get_text() for t in tradeoff.axes[0].get_legend().get_texts()]
        assert "over the memory budget" in legend and any("needs allow_query_change" in t for t in legend)
    finally:
        plt.close(tradeoff)
        plt.close(kinds)
