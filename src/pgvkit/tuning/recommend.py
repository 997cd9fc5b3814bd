"""Step 6: the recommendation. The cheapest measured configuration whose recall clears the target
with a margin and whose index fits the memory budget at the live table's size."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..display import Table
from ..memory import Budget, size_text
from .sweep import Point, SweepResult
from .workload import SHAPES

__all__ = ["Recommendation", "recommend", "figures", "at_full_size", "live_index_today"]


@dataclass(repr=False)
class Recommendation(Table):
    target: float
    k: int
    point: Point | None
    met: bool
    message: str
    runner_up: list[Point] = field(default_factory=list)
    workload: str = ""
    dims: int = 768
    budget: Budget | None = None
    excluded: Point | None = None  # the cheapest point that met the target but not the budget
    with_query_change: Point | None = None  # what a halfvec / binary index would give, when not allowed
    live_rows: int = 0  # the table's rows the figures (memory, build time) are for
    below: Point | None = None  # nothing met the target: the closest, which tune still writes for confirm to measure
    columns = ("index", "setting", "new", "fresh new", "similar", "fresh similar", "decided by", "p95 ms", "qps",
               "build s", "size MB", "memory MB")

    @property
    def title(self) -> str:
        return self.message

    def rows(self) -> list[dict]:
        return [p.row() for p in self.rows_points()]

    def rows_points(self) -> list[Point]:
        return ([self.point] if self.point else []) + self.runner_up

    def to_dict(self) -> dict:
        return {"target_recall": self.target, "k": self.k, "met": self.met, "message": self.message,
                "choice": self.point.row() if self.point else None,
                "index_definition": self.index_clause if self.point else None,
                "kind": self.point.config.kind_name if self.point else None,
                "memory_budget_bytes": self.budget.bytes if self.budget else None,
                "memory_budget": str(self.budget) if self.budget else None,
                "excluded_by_budget": self.excluded.row() if self.excluded else None,
                "with_query_change": self.with_query_change.row() if self.with_query_change else None}

    @property
    def index_clause(self) -> str:
        c = self.point.config
        return (f"USING {c.method} ({c.kind.index_key(self.dims).as_string()}) WITH ("
                + ", ".join(f"{k} = {v}" for k, v in c.params) + ")")


def figures(p: Point) -> str:
    """Recall of each shape measured, and which one decided ("new vectors 0.962 (fresh 0.958), ...");
    a figure carried to the live size with its range ("new vectors 0.962 (range 0.948-0.971, fresh
    0.958)"), whose low end the choice used."""
    if not p.shapes:
        return f"{p.recall:.3f} (fresh queries {p.fresh_recall:.3f})"
    text = ", ".join(f"{SHAPES[s].split(' (')[0]} {v['recall']:.3f} ("
                     + (f"range {v['low']:.3f}-{v['high']:.3f}, " if "high" in v else "") + f"fresh {v['fresh']:.3f})"
                     for s, v in p.shapes.items())
    return text + (f"; {SHAPES[p.decided_by].split(' (')[0]} decided" if len(p.shapes) > 1 else "")


def _setting(p: Point) -> str:
    return f"{p.search_param} = {p.search_value}" + (f", re-rank depth {p.rerank}" if p.rerank else "")


def _cost(best: Point, excluded: Point, budget: Budget, rows: int) -> str:
    """What the budget cost: the choice against the cheapest point it excluded."""
    recall = best.recall_low - excluded.recall_low
    return (f"; the memory budget {size_text(budget.bytes)} cost {best.p95_ms - excluded.p95_ms:+.2f} ms p95 and "
            f"{recall:+.3f} recall against {excluded.config.label} with {_setting(excluded)} (p95 "
            f"{excluded.p95_ms:.2f} ms), which needs {size_text(excluded.memory_bytes)} at {rows:,} rows")


def recommend(result: SweepResult, target: float = 0.95, budget: Budget | None = None, *,
              query_change: bool = True) -> Recommendation:
    """The cheapest measured configuration (lowest p95 latency, then build time, then size)
    whose mean recall@k on the held-out queries of every shape measured meets the target with a
    margin of MARGIN_SE standard errors (not just the mean: a few hundred queries are a sample,
    and the choice must hold on queries nobody measured); the shape with the least margin decides.
    With a memory `budget`, an index that would not fit it at the live table's size is left out,
    and the message says what that cost. Without `query_change`, only indexes the application's
    direct ORDER BY embedding <=> ... can use (vector) are chosen, and the message names what a
    halfvec or binary index would have given."""
    counted = [p for p in result.points if p.index_used and p.iterative is None]
    if query_change:
        return _choose(result, counted, target, budget)
    direct = [p for p in counted if p.config.kind.direct]
    free = _choose(result, counted, target, budget)
    if not direct and counted:
        return Recommendation(target, result.k, None, False,
                              "only halfvec or binary indexes were measured, which direct ORDER BY embedding <=> ... "
                              "queries cannot use: add vector to --candidates, or pass --allow-query-change once the "
                              "application searches through search_assets", free.rows_points(),
                              workload=result.workload, dims=result.dims, budget=budget)
    rec = _choose(result, direct, target, budget)
    if free.point is not None and not free.point.config.kind.direct and free.point is not rec.point:
        q = free.point
        rec.message += (f"; with --allow-query-change (the application searching through search_assets): "
                        f"{q.config.label} with {_setting(q)}, p95 {q.p95_ms:.2f} ms, needs "
                        f"{size_text(q.memory_bytes)}")
        rec.with_query_change = q
    return rec


def _choose(result: SweepResult, counted: list[Point], target: float, budget: Budget | None) -> Recommendation:
    meets = sorted((p for p in counted if p.recall_low >= target), key=lambda p: (p.p95_ms, p.build_s, p.size_bytes))
    fits = [p for p in meets if budget is None or p.memory_bytes <= budget.bytes]
    common = {"workload": result.workload, "dims": result.dims, "budget": budget, "live_rows": result.live_rows}
    if fits:
        best = fits[0]
        excluded = meets[0] if meets[0] is not best else None
        return Recommendation(
            target, result.k, best, True,
            f"{best.config.label} with {_setting(best)}: recall@{result.k} "
            f"{figures(best)} >= {target}, p95 {best.p95_ms:.2f} ms, needs {size_text(best.memory_bytes)} at "
            f"{result.live_rows:,} rows" + (_cost(best, excluded, budget, result.live_rows) if excluded else ""),
            fits[1:4], excluded=excluded, **common)
    if meets:
        smallest = min(meets, key=lambda p: p.memory_bytes)
        return Recommendation(
            target, result.k, None, False,
            f"nothing that reaches recall@{result.k} >= {target} fits the memory budget {budget}: the smallest, "
            f"{smallest.config.label} with {_setting(smallest)}, needs {size_text(smallest.memory_bytes)} at "
            f"{result.live_rows:,} rows; raise --memory-budget, give the server more memory, or add a smaller kind "
            "to --candidates (halfvec, binary)", [smallest], excluded=smallest, **common)
    if not counted:
        return Recommendation(target, result.k, None, False,
                              "no configuration could be measured: the planner never used a candidate index "
                              "(is the workload too small? try --rows 10000 or more)", **common)
    fitting = [p for p in counted if budget is None or p.memory_bytes <= budget.bytes] or counted
    closest = max(fitting, key=lambda p: (p.recall_low, p.recall, -p.p95_ms))
    return Recommendation(
        target, result.k, None, False,
        f"below the target at the predicted size: nothing reached recall@{result.k} >= {target} by its lower bound; "
        f"closest is {closest.config.label} with {_setting(closest)} at {figures(closest)} (the lower bound the "
        f"decision used: {closest.recall_low:.3f}); its migration hands it to pgvkit confirm, which measures it at "
        "full size and raises the search setting as far as pgvector allows (a denser graph: pgvkit tune --hnsw "
        "32:200 --write-migration)", [closest], below=closest, **common)


def at_full_size(workload) -> str:
    """What the workload's recall says about the live table: at full size when the whole table was
    used; else an upper bound (at fixed settings recall falls as a table grows: a list or a graph
    search covers a smaller share of the rows)."""
    if workload.source == "synthetic":
        return (f"Measured on {workload.rows:,} synthetic rows: the live table holds {workload.live_rows:,}, too few "
                "to tune on. Once it is loaded, tune on its own vectors and audit it (07_recall_audit).")
    if workload.live_rows > workload.rows:
        return (f"Measured on a sample: {workload.rows:,} of the live table's {workload.live_rows:,} rows. At the "
                "same settings recall falls as a table grows, so these figures are an upper bound for the live table "
                "(pgvkit tune carries them to its size from nested samples); once the index is built, pgvkit confirm "
                "chooses the search settings on the live index at full size (section 8), and 07_recall_audit "
                "audits it.")
    return f"Measured on the whole live table ({workload.rows:,} rows): these are its figures at full size."


def live_index_today(url: str, table: str = "ip_asset_embeddings") -> str:
    """What the live index returns today, in one line: the latest recorded audit of each shape at
    full size (pgvkit recall), with the index and the settings it ran with."""
    from ..audit.plots import index_method
    from ..audit.recall import latest_audits
    from ..server.db import connect

    with connect(url) as conn:
        recorded = conn.execute("SELECT to_regclass('pgvkit.recall_audits')").fetchone()[0] is not None
        audits = (latest_audits(conn, table) or []) if recorded else []
    if not audits:
        return (f"No audit of {table} is recorded yet: nothing says what its index returns. pgvkit recall (or "
                "07_recall_audit) measures it.")
    shown = "; ".join(f"{a['shape'].replace('_', ' ')} {a['recall']:.3f} ({a['queries']:,} queries, "
                      f"{a['at']:%Y-%m-%d})" for a in audits)
    first = audits[0]
    method = index_method(first["index_definition"])
    settings = ", ".join(f"{k} = {v}" for k, v in (first["settings"] or {}).items()
                         if v is not None and k.startswith(method.split(" ")[0] + "."))
    low = min(a["recall"] for a in audits)
    return (f"Today the live index ({method}{'; ' + settings if settings else ''}) returns {low:.0%} of the true "
            f"neighbours (recall@{first['k']} at full size, the worse shape). pgvkit recall measured {shown}. "
            f"The target: {first['target']}.")
