"""Step 6: the recommendation. The cheapest measured configuration whose recall clears the target
with a margin."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..display import Table
from .sweep import Point, SweepResult
from .workload import SHAPES

__all__ = ["Recommendation", "recommend", "figures", "at_full_size"]


@dataclass(repr=False)
class Recommendation(Table):
    target: float
    k: int
    point: Point | None
    met: bool
    message: str
    runner_up: list[Point] = field(default_factory=list)
    workload: str = ""
    columns = ("index", "setting", "new", "fresh new", "similar", "fresh similar", "decided by", "p95 ms", "qps",
               "build s", "size MB")

    @property
    def title(self) -> str:
        return self.message

    def rows(self) -> list[dict]:
        return [p.row() for p in ([self.point] if self.point else []) + self.runner_up]

    def to_dict(self) -> dict:
        return {"target_recall": self.target, "k": self.k, "met": self.met, "message": self.message,
                "choice": self.point.row() if self.point else None,
                "index_definition": self.index_clause if self.point else None}

    @property
    def index_clause(self) -> str:
        c = self.point.config
        return f"USING {c.method} (embedding vector_cosine_ops) WITH (" + ", ".join(f"{k} = {v}" for k, v in c.params) + ")"


def figures(p: Point) -> str:
    """Recall of each shape measured, and which one decided ("new vectors 0.962 (fresh 0.958), ...")."""
    if not p.shapes:
        return f"{p.recall:.3f} (fresh queries {p.fresh_recall:.3f})"
    text = ", ".join(f"{SHAPES[s].split(' (')[0]} {v['recall']:.3f} (fresh {v['fresh']:.3f})"
                     for s, v in p.shapes.items())
    return text + (f"; {SHAPES[p.decided_by].split(' (')[0]} decided" if len(p.shapes) > 1 else "")


def recommend(result: SweepResult, target: float = 0.95) -> Recommendation:
    """The cheapest measured configuration (lowest p95 latency, then build time, then size)
    whose mean recall@k on the held-out queries of every shape measured meets the target with a
    margin of MARGIN_SE standard errors (not just the mean: a few hundred queries are a sample,
    and the choice must hold on queries nobody measured); the shape with the least margin decides."""
    counted = [p for p in result.points if p.index_used and p.iterative is None]
    meets = sorted((p for p in counted if p.recall_low >= target), key=lambda p: (p.p95_ms, p.build_s, p.size_bytes))
    if meets:
        best = meets[0]
        return Recommendation(
            target, result.k, best, True,
            f"{best.config.label} with {best.search_param} = {best.search_value}: recall@{result.k} "
            f"{figures(best)} >= {target}, p95 {best.p95_ms:.2f} ms",
            meets[1:4], result.workload)
    if not counted:
        return Recommendation(target, result.k, None, False,
                              "no configuration could be measured: the planner never used a candidate index "
                              "(is the workload too small? try --rows 10000 or more)", workload=result.workload)
    closest = max(counted, key=lambda p: (p.recall, -p.p95_ms))
    return Recommendation(
        target, result.k, None, False,
        f"nothing reached recall@{result.k} >= {target}: closest is {closest.config.label} with "
        f"{closest.search_param} = {closest.search_value} at {figures(closest)}; try larger ef_search or "
        "probes values, HNSW with m = 32 / ef_construction = 200, or a lower target",
        [closest], result.workload)


def at_full_size(url: str, workload) -> str:
    """What the workload's recall says about the live table: at full size when the whole table was
    used; else an upper bound (at fixed settings recall falls as a table grows: a list or a graph
    search covers a smaller share of the rows), beside the live index's latest recorded audit."""
    from psycopg import sql

    from ..db import connect

    if workload.source == "synthetic":
        head = (f"Measured on {workload.rows:,} synthetic rows: the live table holds {workload.live_rows:,}, too few to "
                "tune on. Once it is loaded, tune on its own vectors and audit it (07_recall_audit).")
    elif workload.live_rows > workload.rows:
        head = (f"Measured on a sample: {workload.rows:,} of the live table's {workload.live_rows:,} rows. At the same "
                "settings recall falls as a table grows, so these figures are an upper bound for the live table; "
                "run the tuner with rows = the table's size for the figure at full size, and audit the index once "
                "applied (07_recall_audit).")
    else:
        return f"Measured on the whole live table ({workload.rows:,} rows): these are its figures at full size."
    with connect(url) as conn:
        if conn.execute("SELECT to_regclass('pgvkit.recall_audits')").fetchone()[0] is None:
            return head
        rows = conn.execute(sql.SQL(
            "SELECT DISTINCT ON (shape) shape, recall, queries, at::date, index_definition FROM pgvkit.recall_audits"
            " WHERE table_name = %s ORDER BY shape, id DESC"), [workload.table]).fetchall()
    if not rows:
        return head + " The live index has no recorded audit yet."
    figures = ", ".join(f"{shape.replace('_', ' ')} {recall:.3f} ({queries} queries, {day})"
                        for shape, recall, queries, day, _ in rows)
    return head + f" At full size, the live index's latest audit: {figures}."
