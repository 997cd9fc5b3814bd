"""All the steps in one call, as `pgvkit tune` runs them."""

from __future__ import annotations

import time

from ..display import Echo, echo_to
from .recommend import Recommendation, recommend
from .sweep import SweepResult, sweep
from .truth import exact_knn
from .workload import Workload, cleanup, prepare

__all__ = ["tune"]


def tune(url: str, *, target: float = 0.95, k: int = 10, rows: int | None = None, queries: int = 200,
         source: str = "auto", grid: dict | None = None, seed: int = 0, filter_owner: str | None = None,
         shapes: tuple[str, ...] = ("new", "similar"), query_vectors=None, progress: bool = True,
         echo: Echo | None = None) -> tuple[Workload, SweepResult, Recommendation]:
    """prepare, ground truth, sweep, recommend, for the query shapes asked (new vectors, similar
    assets, both); the scratch table is dropped at the end, also on errors and interrupts (and by
    the next run if the process was killed)."""
    echo = echo or echo_to()
    cleanup(url)
    try:
        workload = prepare(url, source=source, rows=rows, queries=queries, k=k, seed=seed, filter_owner=filter_owner,
                           shapes=shapes, query_vectors=query_vectors, echo=echo)
        echo(f"workload: {workload.describe()}")
        start = time.perf_counter()
        truth = exact_knn(workload.vectors, workload.queries, k, ids=workload.ids, exclude=workload.query_ids)
        echo(f"exact neighbours of {len(workload.queries)} queries in {time.perf_counter() - start:.2f} s (numpy)")
        result = sweep(url, workload, grid=grid, truth=truth if "new" in workload.shapes else None,
                       progress=progress, echo=echo)
    finally:
        cleanup(url)
    return workload, result, recommend(result, target)
