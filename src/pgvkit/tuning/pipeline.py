"""All the steps in one call, as `pgvkit tune` runs them."""

from __future__ import annotations

import time

from ..display import Echo, echo_to
from ..memory import Budget, budget as server_budget
from .lock import hold
from .recommend import Recommendation, recommend
from .sweep import SweepResult, sweep
from .truth import exact_knn
from .workload import Workload, cleanup, prepare

__all__ = ["tune"]


def tune(url: str, *, target: float = 0.95, k: int = 10, rows: int | None = None, queries: int = 200,
         source: str = "auto", grid: dict | None = None, seed: int = 0, filter_owner: str | None = None,
         shapes: tuple[str, ...] = ("new", "similar"), query_vectors=None, progress: bool = True,
         candidates: tuple[str, ...] | None = None, memory_budget: int | str | None = "auto",
         query_change: bool = True,
         echo: Echo | None = None) -> tuple[Workload, SweepResult, Recommendation]:
    """prepare, ground truth, sweep, recommend, for the query shapes asked (new vectors, similar
    assets, both) and the index kinds asked (`candidates`: vector, halfvec, binary; default all,
    or the grid's "kinds"); the scratch table is dropped at the end, also on errors and
    interrupts (and by the next run if the process was killed). `memory_budget`: bytes the
    index may take at the live table's size, "auto" (what the server's cache leaves,
    pgvkit.memory.budget) or None (no limit). `query_change` False: recommend only what direct
    ORDER BY embedding <=> ... queries can use (pgvkit tune without --allow-query-change)."""
    echo = echo or echo_to()
    if candidates:
        grid = {**(grid or {}), "kinds": list(candidates)}
    with hold(url):  # before the scratch table is touched: a second run stops here, in one line
        budget = resolve_budget(url, memory_budget)
        if budget is not None:
            echo(f"memory budget: {budget}")
        cleanup(url)
        try:
            workload = prepare(url, source=source, rows=rows, queries=queries, k=k, seed=seed,
                               filter_owner=filter_owner, shapes=shapes, query_vectors=query_vectors, echo=echo)
            echo(f"workload: {workload.describe()}")
            start = time.perf_counter()
            truth = exact_knn(workload.vectors, workload.queries, k, ids=workload.ids, exclude=workload.query_ids)
            echo(f"exact neighbours of {len(workload.queries)} queries in {time.perf_counter() - start:.2f} s (numpy)")
            result = sweep(url, workload, grid=grid, truth=truth if "new" in workload.shapes else None,
                           progress=progress, echo=echo)
        finally:
            cleanup(url)
    return workload, result, recommend(result, target, budget, query_change=query_change)


def resolve_budget(url: str, memory_budget: int | str | Budget | None) -> Budget | None:
    """"auto": what the server's cache leaves; a number: bytes given; None: no budget."""
    if memory_budget is None or isinstance(memory_budget, Budget):
        return memory_budget
    if memory_budget == "auto":
        return server_budget(url)
    return Budget(int(memory_budget), "given")
