"""All the steps in one call, as `pgvkit tune` runs them."""

from __future__ import annotations

import time

from ..audit.truth import NEAR_DUPLICATE, NEAR_DUPLICATE_QUERIES, exact_knn, near_duplicates
from ..display import Echo, echo_to
from ..errors import PgvkitError
from ..memory import Budget, budget as server_budget, index_bytes_per_row, short_budget
from ..server.db import mask_url
from .build import Config
from .lock import hold
from .recommend import Recommendation, recommend
from .scale import carry, enough, sample_sizes
from .sweep import EF_SEARCH_MAX, SATURATED, SweepResult, default_grid, sweep
from .workload import Workload, cleanup, prepare

__all__ = ["tune", "preview_migration"]


def tune(url: str, *, target: float = 0.95, k: int = 10, rows: int | None = None, queries: int = 200,
         source: str = "auto", grid: dict | None = None, seed: int = 0, filter_owner: str | None = None,
         shapes: tuple[str, ...] = ("new", "similar"), query_vectors=None, progress: bool = True,
         candidates: tuple[str, ...] | None = None, memory_budget: int | str | None = "auto",
         query_change: bool = True, column: str = "embedding",
         echo: Echo | None = None) -> tuple[Workload, SweepResult, Recommendation]:
    """prepare, ground truth, sweep, recommend, for the query shapes asked (new vectors, similar
    assets, both) and the index kinds asked (`candidates`: vector, halfvec, binary; default all,
    or the grid's "kinds"); the scratch table is dropped at the end, also on errors and
    interrupts (and by the next run if the process was killed). `memory_budget`: bytes the
    index may take at the live table's size, "auto" (what the server's cache leaves,
    pgvkit.memory.budget) or None (no limit). `query_change` False: recommend only what direct
    ORDER BY embedding <=> ... queries can use (pgvkit tune without --allow-query-change).
    `column`: a second model's column during a model change: its rows that have an embedding are
    sampled, HNSW only (what pgvkit model index builds)."""
    from ..server.pooler import require_session

    require_session(url, mask_url(url), "pgvkit tune")  # its lock and its builds' settings are a session's
    echo = echo or echo_to()
    if column != "embedding":  # its own kind only: the index pgvkit model index builds on the column itself
        kind = _column_kind(url, column)
        if candidates and set(candidates) != {kind}:
            raise PgvkitError(f"{column} is a {kind} column, and its index is of that kind: drop --candidates, or "
                              f"pass --candidates {kind}")
        candidates, query_change = (kind,), True
        grid = {"ivfflat_lists": [], **(grid or {})}
    if candidates:
        grid = {**(grid or {}), "kinds": list(candidates)}
    graphs_asked = "hnsw" in (grid or {})  # pgvkit tune --hnsw: the graphs are the user's, never extended
    with hold(url):  # before the scratch table is touched: a second run stops here, in one line
        budget = resolve_budget(url, memory_budget)
        if budget is not None:
            echo(f"memory budget: {budget}")
        cleanup(url)
        try:
            live_rows = _live_rows(url, column=column) if source != "synthetic" or column != "embedding" else 0
            sizes = sample_sizes(live_rows if live_rows >= 1000 or source == "table" else 0, rows)
            if not candidates and not query_change and len(sizes) > 1 and "kinds" not in (grid or {}):
                grid = {**(grid or {}), "kinds": ["vector"]}
                echo("index kinds: vector only (halfvec and binary indexes serve only search_assets, so without "
                     "--allow-query-change they could not be chosen; --candidates vector,halfvec,binary sweeps them)")
            workload = prepare(url, source=source, rows=sizes[-1], queries=queries, k=k, seed=seed,
                               filter_owner=filter_owner, shapes=shapes, query_vectors=query_vectors, echo=echo,
                               column=column)
            echo(f"workload: {workload.describe()}")
            if budget is not None and workload.live_rows:  # before any build: nothing could be chosen
                kinds = (grid or {}).get("kinds") or ["vector", "halfvec", "binary"]
                share = min({"vector": 1.0, "halfvec": 0.5, "binary": 1 / 32}.get(k, 1.0) for k in kinds)
                short = short_budget(url, budget, index_bytes_per_row(workload.dims) * workload.live_rows * share,
                                     f"the smallest index of {workload.live_rows:,} rows ({', '.join(kinds)})")
                if short:
                    echo(f"WARNING: {short}")
            if workload.source != "table":
                sizes = sizes[-1:]
            stop_at = SATURATED
            if len(sizes) > 1:
                echo(f"{workload.live_rows:,} rows are too many to sweep whole in minutes: the sweep runs on "
                     f"{sizes[-1]:,} of them, the HNSW candidates again on {sizes[1]:,} and {sizes[0]:,}, and recall "
                     f"is carried to {workload.live_rows:,} rows by how it falls from one size to the next "
                     "(--rows N: another sample size); the search settings are confirmed on the live index after "
                     "migrating (pgvkit confirm)")
                # IVFFlat left out unless asked: at 768 dimensions its index is as large as HNSW's, and at the
                # same recall its searches were about ten times slower in every run at this size (docs/
                # benchmarks.md), while sweeping its probes costs minutes
                if "ivfflat_lists" not in (grid or {}):
                    echo("IVFFlat left out at this size (as large as HNSW at 768 dimensions, ~10x slower at the same "
                         "recall); a grid with ivfflat_lists sweeps it")
                # up to pgvector's maximum: a hard table may need it at full size (1,000,000 topic rows: 0.913
                # at 320); a candidate stops at the first setting whose recall would meet the target even after
                # the steepest fall carried to the live size (pgvkit.tuning.scale.enough), read at its lower
                # bound as the choice reads the carried range: on 1,000,000 densified rows a sweep stopped by
                # the mean left (24, 100) at ef_search 160, whose range ended below 0.95, and tune chose
                # (16, 64) at 640 (p95 22 ms) where (24, 100) at 320 had given 11 ms
                grid = {"ef_search": [2 * k, 4 * k, 8 * k, 16 * k, 32 * k, 64 * k, EF_SEARCH_MAX],
                        "ivfflat_lists": [], **(grid or {})}
                stop_at = enough(target, live_rows, sizes[-1])
            start = time.perf_counter()
            truth = exact_knn(workload.vectors, workload.queries, k, ids=workload.ids, exclude=workload.query_ids)
            echo(f"exact neighbours of {len(workload.queries)} queries in {time.perf_counter() - start:.2f} s (numpy)")
            if query_vectors is None and workload.source == "table" and "new" in workload.shapes:
                copies = near_duplicates(truth)
                if copies >= NEAR_DUPLICATE_QUERIES:  # a sample holds fewer of them than the table
                    workload.query_source += (
                        f"; NOTE: {copies:.0%} of these rows have a near-duplicate left in the sample, so new "
                        "images are likely harder to find than these: pass --query-file with new images")
                    echo(f"WARNING: {copies:.0%} of the new-vector queries (rows taken out of the table) have a "
                         f"near-duplicate left in it (nearest neighbour closer than {NEAR_DUPLICATE} of the {k}th's "
                         "distance): their recall overstates what new images get; pass --query-file with new "
                         "images")
            start = time.perf_counter()
            sizes[-1] = workload.rows  # the sample less the rows taken out as new-vector queries
            results = {sizes[-1]: sweep(url, workload, grid=grid, truth=truth if "new" in workload.shapes else None,
                                        progress=progress, echo=echo, enough=stop_at, pessimistic=len(sizes) > 1)}
            if len(sizes) > 1 and not graphs_asked:
                _denser(url, workload, results[sizes[-1]], {**default_grid(workload.rows, k), **(grid or {})},
                        truth if "new" in workload.shapes else None, target, budget, query_change, progress, echo,
                        stop_at)
            took = time.perf_counter() - start
            hnsw_share = _hnsw_share(results[sizes[-1]])
            for n in reversed(sizes[:-1]):
                left = took * hnsw_share / 3 * sum((m / sizes[-1]) ** 1.1 for m in sizes[:-1] if m <= n)
                echo(f"sample of {n:,} rows (the cheapest HNSW candidate; about {left / 60:.1f} min left) ...")
                workload = workload.shrink(url, n, seed)
                # the cheapest HNSW candidate of each kind again: how its recall falls with size is carried
                # to the denser ones too (a denser graph falls no faster), at a fraction of the builds
                full = {**default_grid(workload.rows, k), **(grid or {})}
                results[n] = sweep(url, workload, grid={**full, "ivfflat_lists": [], "hnsw": full["hnsw"][:1],
                                                        "binary_hnsw": full["binary_hnsw"][:1]},
                                   progress=progress, echo=echo, fresh=False, enough=stop_at)
        finally:
            cleanup(url)
    if len(sizes) > 1:
        result, _ = carry(results, workload.live_rows)
        echo("recall falls with size as rows^slope of its deficit: " + ", ".join(
            f"{name} {slope:.2f} ± {error:.2f}" for name, (slope, error) in result.slopes.items()))
    else:
        result = results[sizes[-1]]
    return workload, result, recommend(result, target, budget, query_change=query_change)


DENSER = (32, 200)  # the graph tune adds when nothing of its grid would reach the target at the live size
DENSER_BUDGET_S = 300  # its build on the largest sample may take this long (tune at 1M rows: under 10 min)


def _denser(url: str, workload: Workload, top: SweepResult, grid: dict, truth, target: float, budget,
            query_change: bool, progress: bool, echo: Echo, stop_at: float) -> None:
    """When nothing of the largest sample's sweep, carried to the live size at the default fall,
    would reach the target: a denser graph (DENSER) swept on the same sample, added to `top`, unless
    its build (estimated from the densest one built, as m x ef_construction) would pass DENSER_BUDGET_S."""
    provisional = recommend(carry({workload.rows: top}, workload.live_rows)[0], target, budget,
                            query_change=query_change)
    closest = provisional.below
    if closest is None or closest.config.method != "hnsw" or closest.config.kind.reranks:
        return
    built = [p for p in top.points if p.config.method == "hnsw" and p.config.kind == closest.config.kind]
    densest = max(built, key=lambda p: _work(p.config))
    config = Config("hnsw", (("m", DENSER[0]), ("ef_construction", DENSER[1])), closest.config.kind_name)
    if _work(densest.config) >= _work(config):
        return
    estimate = densest.build_s * _work(config) / _work(densest.config)
    said = (f"carried to {workload.live_rows:,} rows at the default fall, nothing measured reaches recall@"
            f"{workload.k} >= {target} by its lower bound (closest: {closest.config.label} with "
            f"{closest.search_param} = {closest.search_value}, {closest.recall:.3f}, lower bound "
            f"{closest.recall_low:.3f})")
    if estimate > DENSER_BUDGET_S:
        echo(f"{said}; a denser graph, {config.label}, would take about {estimate / 60:.0f} min to build on "
             f"{workload.rows:,} rows: not tried (pgvkit tune --hnsw {DENSER[0]}:{DENSER[1]} tries it)")
        return
    echo(f"{said}: a denser graph, {config.label}, on the same {workload.rows:,} rows (about "
         f"{max(1, round(estimate / 60))} min) ...")
    extra = sweep(url, workload, grid={**grid, "hnsw": [DENSER], "ivfflat_lists": [], "binary_hnsw": [],
                                       "kinds": [closest.config.kind_name]},
                  truth=truth, progress=progress, echo=echo, enough=stop_at, pessimistic=True)
    top.points += extra.points
    top.builds += extra.builds


def _work(config: Config) -> int:
    """How a graph's build cost grows with its parameters: m x ef_construction."""
    params = dict(config.params)
    return params["m"] * params["ef_construction"]


def _live_rows(url: str, table: str = "ip_asset_embeddings", column: str = "embedding") -> int:
    """The rows a search can find: all of them, or those that have a second model's embedding."""
    from psycopg import sql

    from ..server.db import connect

    with connect(url) as conn:
        if conn.execute("SELECT to_regclass(%s)", [sql.Identifier(table).as_string(conn)]).fetchone()[0] is None:
            return 0
        counted = sql.SQL("*") if column == "embedding" else sql.Identifier(column)
        return conn.execute(sql.SQL("SELECT count({}) FROM {}").format(counted, sql.Identifier(table))).fetchone()[0]


def _column_kind(url: str, column: str, table: str = "ip_asset_embeddings") -> str:
    """vector or halfvec: the type of a second model's column."""
    from psycopg import sql

    from ..server.db import connect

    with connect(url) as conn:
        row = conn.execute("SELECT format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = to_regclass(%s)"
                           " AND attname = %s AND attnum > 0 AND NOT attisdropped",
                           [sql.Identifier(table).as_string(conn), column]).fetchone()
    if row is None or row[0] not in ("vector", "halfvec"):
        raise PgvkitError(f"{table} has no vector or halfvec column {column}: pgvkit model list shows the models' columns")
    return row[0]


def _hnsw_share(result: SweepResult) -> float:
    """The share of a sweep's build time spent on HNSW candidates (what the smaller samples repeat)."""
    total = sum(b["build_s"] for b in result.builds) or 1.0
    return sum(b["build_s"] for b in result.builds if "hnsw" in b["index"]) / total


def resolve_budget(url: str, memory_budget: int | str | Budget | None) -> Budget | None:
    """"auto": what the server's cache leaves; a number: bytes given; None: no budget."""
    if memory_budget is None or isinstance(memory_budget, Budget):
        return memory_budget
    if memory_budget == "auto":
        return server_budget(url)
    return Budget(int(memory_budget), "given")


def preview_migration(url: str, recommendation: Recommendation, migrations_dir, *,
                      allow_query_change: bool = False) -> tuple[str, str]:
    """(file name, SQL) of the migration write_migration would write for this recommendation,
    written into a throwaway copy of the migrations directory: the reader sees the file, the
    directory is left as it was."""
    import shutil
    import tempfile
    from pathlib import Path

    from .migration import write_migration

    with tempfile.TemporaryDirectory(prefix="pgvkit-preview-") as work:
        copy = Path(work) / "migrations"
        shutil.copytree(migrations_dir, copy)
        up, _ = write_migration(url, recommendation, copy, allow_query_change=allow_query_change)
        return up.name, up.read_text()
