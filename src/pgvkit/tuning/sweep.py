"""Step 5: the sweep. Build each candidate of each kind (vector, halfvec, binary quantization +
re-rank), then measure every query-time setting (ivfflat.probes, hnsw.ef_search, the re-rank
depth): recall on the held-out and the fresh queries, latency percentiles, build time, size and
the memory it needs at the live table's size; filtered queries with iterative scans off and on
when asked."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from pgvector.psycopg import register_vector
from psycopg import sql

from ..audit.truth import GroundTruth, exact_knn, recall_at_k, recall_low
from ..display import Echo, Table, echo_to
from ..errors import PgvkitError
from ..indexes import plan_index
from ..kinds import KINDS
from ..server.db import connect
from .build import SEARCH_PARAM, Config, build
from .lock import hold
from .measure import measure, query_shape
from .workload import SCHEMA, Workload

__all__ = ["Point", "SweepResult", "default_grid", "candidates", "settings_of", "sweep"]


EF_SEARCH_MAX = 1000  # pgvector's upper bound for hnsw.ef_search
SATURATED = 0.998  # recall at which a candidate's larger search settings are not measured


@dataclass
class Point:
    config: Config
    search_param: str
    search_value: int
    index_used: bool
    recall: float = float("nan")  # mean recall@k, ties with the k-th true neighbour counted as right
    recall_p5: float = float("nan")
    fresh_recall: float = float("nan")  # the second query set
    recall_low: float = float("nan")  # mean recall less MARGIN_SE standard errors
    iterative: str | None = None  # set for filtered points: the iterative_scan mode measured
    p50_ms: float = float("nan")
    p95_ms: float = float("nan")
    p99_ms: float = float("nan")
    qps: float = float("nan")
    build_s: float = float("nan")
    size_bytes: int = 0
    rerank: int = 0  # binary: the nearest N by Hamming distance re-ranked by cosine
    memory_bytes: int = 0  # the index at the live table's row count: what must sit in memory to be fast
    note: str = ""
    shapes: dict[str, dict] = field(default_factory=dict)  # per query shape: recall, p5, fresh, low
    decided_by: str = ""  # the shape whose margin is smallest: recall, p5, fresh and low above are its

    def measured(self, shape: str, per_query, fresh_per_query) -> None:
        """One shape's figures; the point's own recall figures follow the shape with the least margin."""
        self.shapes[shape] = {"recall": float(per_query.mean()), "p5": float(np.percentile(per_query, 5)),
                              "fresh": float(fresh_per_query.mean()), "low": recall_low(per_query)}
        self.decided_by = min(self.shapes, key=lambda s: self.shapes[s]["low"])
        worst = self.shapes[self.decided_by]
        self.recall, self.recall_p5 = worst["recall"], worst["p5"]
        self.fresh_recall, self.recall_low = worst["fresh"], worst["low"]

    def reaches(self, enough: float, pessimistic: bool = False) -> bool:
        """Every shape at `enough` or above on both query sets: held-out by its mean, or by its lower
        bound when `pessimistic` (what the carried range's low end, which the choice reads, starts from)."""
        return min(min(v["low"] if pessimistic else v["recall"], v["fresh"]) for v in self.shapes.values()) >= enough

    def row(self) -> dict:
        def r(x: float, digits: int = 2):
            return None if math.isnan(x) else round(x, digits)

        setting = f"{self.search_param}={self.search_value}" + (f", re-rank {self.rerank}" if self.rerank else "")
        if self.iterative is not None:
            setting += f", filtered, iterative_scan={self.iterative}"
        shape = {f"{prefix}{name}": r(self.shapes[name][key], 4) if name in self.shapes else None
                 for name in ("new", "similar") for prefix, key in (("", "recall"), ("fresh ", "fresh"))}
        filtered = r(self.recall, 4) if self.iterative is not None else None  # the owner's searches, mean recall
        return {"index": self.config.label, "setting": setting, **shape, "filtered": filtered,
                "decided by": self.decided_by or None,
                "recall": r(self.recall, 4), "p5": r(self.recall_p5, 3), "fresh": r(self.fresh_recall, 4),
                "p50 ms": r(self.p50_ms), "p95 ms": r(self.p95_ms), "p99 ms": r(self.p99_ms), "qps": r(self.qps, 0),
                "build s": r(self.build_s), "size MB": round(self.size_bytes / 2**20, 1),
                "memory MB": round(self.memory_bytes / 2**20, 1), "kind": self.config.kind_name,
                "index used": self.index_used, "note": self.note}


@dataclass(repr=False)
class SweepResult(Table):
    workload: str
    k: int
    points: list[Point] = field(default_factory=list)
    builds: list[dict] = field(default_factory=list)
    live_rows: int = 0  # the row count "memory MB" is for
    dims: int = 768
    samples: list[int] = field(default_factory=list)  # carried from samples of these sizes (pgvkit.tuning.scale)
    slopes: dict[str, tuple[float, float]] = field(default_factory=dict)  # the fitted fall of recall with size and its standard error, per index / shape
    caption: str | None = None  # a short title, for a second table of the same workload (its columns said once)
    columns = ("index", "setting", "new", "fresh new", "similar", "fresh similar", "filtered", "p5", "p50 ms", "p95 ms", "qps",
               "build s", "size MB", "memory MB", "index used", "note")

    @property
    def workload_short(self) -> str:
        """The workload's first clause (4,800 x 768 vectors (a sample of ...), k = 10, cosine
        distance): its full description is printed once, where it is prepared."""
        return self.workload.split(";")[0]

    @property
    def title(self) -> str:
        if self.caption:
            return self.caption
        if self.samples:
            return (f"Predicted at {self.live_rows:,} rows from sweeps of samples of "
                    + ", ".join(f"{n:,}" for n in self.samples) + f" rows ({self.workload_short}): recall@{self.k} per "
                    "index and setting, for new vectors and similar assets; HNSW recall carried by each index's "
                    "fitted fall with size, IVFFlat lists and probes scaled with the rows")
        return (f"Sweep over {self.workload_short}: recall@{self.k} per index and setting, for new vectors (not in the "
                "index) and similar assets (rows of the index, each left out of its own answer); fresh: the same "
                "shape on a second query set nothing was chosen on; filtered: the mean recall of one owner's "
                "searches; p5: the recall 95 % of searches reach; memory MB: the "
                f"index at {self.live_rows:,} rows")

    def rows(self) -> list[dict]:
        return [p.row() for p in self.points]

    def to_dict(self) -> dict:
        return {"workload": self.workload, "k": self.k, "live_rows": self.live_rows, "points": self.rows(),
                "builds": self.builds, "samples": self.samples, "slopes": self.slopes}

    def __add__(self, other: SweepResult) -> SweepResult:
        """Two sweeps of the same workload (e.g. the IVFFlat one and the HNSW one) as one."""
        return SweepResult(self.workload, self.k, self.points + other.points, self.builds + other.builds,
                           max(self.live_rows, other.live_rows), self.dims)


def default_grid(rows: int, k: int) -> dict:
    """IVFFlat lists at rows/1000 and sqrt(rows) (pgvector's guidance below and above 1M rows)
    with probes from 1 to 64; HNSW at pgvector's defaults and a denser graph, each swept over
    ef_search from 2k upwards; for each kind asked (vector and halfvec with both methods, binary
    quantization with HNSW at pgvector's defaults over re-rank depths from 4k, ef_search = the
    depth)."""
    lists = sorted({max(1, round(rows / 1000)), max(1, round(math.sqrt(rows)))})
    return {
        "ivfflat_lists": lists,
        "probes": [1, 2, 4, 8, 16, 32, 64],
        "hnsw": [(16, 64), (24, 100)],
        # from 2k up: at ef_search = k the search has no slack, and its recall swings between
        # query sets (0.988 held-out, 0.948 fresh in one 20k-row run)
        "ef_search": [2 * k, 4 * k, 8 * k, 16 * k],
        "kinds": ["vector", "halfvec", "binary"],
        "binary_hnsw": [(16, 64)],
        "rerank": [4 * k, 8 * k, 16 * k, 32 * k, 64 * k],
    }


def candidates(grid: dict) -> list[Config]:
    """Every index the grid builds, kind by kind."""
    configs = []
    for kind in grid["kinds"]:
        if kind == "binary":
            configs += [Config("hnsw", (("m", m), ("ef_construction", efc)), kind) for m, efc in grid["binary_hnsw"]]
            continue
        configs += [Config("ivfflat", (("lists", lists),), kind) for lists in grid["ivfflat_lists"]]
        configs += [Config("hnsw", (("m", m), ("ef_construction", efc)), kind) for m, efc in grid["hnsw"]]
    return configs


def settings_of(config: Config, grid: dict) -> list[tuple[int, int]]:
    """(search value, re-rank depth) of every query-time setting a candidate is measured at."""
    if config.kind.reranks:  # ef_search tops out at 1,000; deeper re-ranks rely on the iterative scan
        return [(min(depth, EF_SEARCH_MAX), depth) for depth in grid["rerank"]]
    if config.method == "ivfflat":
        return [(p, 0) for p in grid["probes"] if p <= dict(config.params)["lists"]]
    return [(ef, 0) for ef in grid["ef_search"]]


def sweep(url: str, workload: Workload, *, grid: dict | None = None, truth: GroundTruth | None = None,
          fresh_truth: GroundTruth | None = None, progress: bool = True, echo: Echo | None = None,
          fresh: bool = True, enough: float = SATURATED, pessimistic: bool = False) -> SweepResult:
    """Build each candidate on the scratch table and measure every query-time setting, for each
    query shape of the workload (`truth` / `fresh_truth` may be given for the new-vector one).
    `fresh` False: the fresh query sets are not searched (their figures repeat the held-out ones),
    for a sweep that only says how recall falls with size. `enough`: the recall (every shape, both
    query sets; the held-out set by its lower bound when `pessimistic`) past which a candidate's
    larger search settings are not measured."""
    echo = echo or echo_to()
    grid = {**default_grid(workload.rows, workload.k), **(grid or {})}
    truths = {}
    for shape in workload.shapes:
        queries, own, fresh_queries, fresh_own = workload.shape_sets(shape)
        if not fresh:
            fresh_queries, fresh_own = queries, own
        given = (truth, fresh_truth) if shape == "new" else (None, None)
        truths[shape] = tuple(t or exact_knn(workload.vectors, q, workload.k, ids=workload.ids, exclude=e)
                              for t, q, e in zip(given, (queries, fresh_queries), (own, fresh_own)))
    filtered_truth = workload.filtered_truth() if workload.filter_owner is not None else None
    configs = _buildable(candidates(grid), workload.dims, echo)
    result = SweepResult(workload.describe(), workload.k, live_rows=max(workload.live_rows, workload.rows),
                         dims=workload.dims)
    scale = result.live_rows / workload.rows
    with hold(url), connect(url, autocommit=True, application_name="pgvkit tune", long_steps=True,
                            prepared=True) as conn:
        register_vector(conn)
        # as search_assets runs once a tuning migration bound it (search.INDEX_ONLY): the index, never
        # a sequential scan the planner may prefer at some settings
        conn.execute("SET enable_seqscan = off")
        for config in configs:
            echo(f"building {config.label} on {workload.rows:,} rows ...")
            built = build(url, conn, config, workload.rows, workload.dims, progress=progress)
            result.builds.append(built)
            echo(f"  {built['build_s']:.1f} s, {built['size_bytes'] / 2**20:.1f} MB"
                 f" (maintenance_work_mem {built['maintenance_work_mem']},"
                 f" {built['max_parallel_maintenance_workers']} parallel workers)"
                 + "".join(f"\n  NOTICE: {n}" for n in built["notices"]))
            param = SEARCH_PARAM[config.method]
            values = settings_of(config, grid)
            if config.kind.reranks:  # as search_assets runs: a re-rank deeper than ef_search keeps scanning
                conn.execute("SET hnsw.iterative_scan = relaxed_order")
            for value, depth in values:
                conn.execute(sql.SQL("SET {} = {}").format(sql.SQL(param), sql.Literal(value)))
                point = Point(config, param, value, False, build_s=built["build_s"], size_bytes=built["size_bytes"],
                              rerank=depth, memory_bytes=round(built["size_bytes"] * scale))
                first = workload.shape_sets(workload.shapes[0])
                shape = query_shape(workload.k, first[1] is not None, kind=config.kind, dims=workload.dims, depth=depth)
                used, top = plan_index(conn, shape, {"q": first[0][0]})
                if used != config.index_name:
                    point.note = f"EXPLAIN shows {top}, not the index: the planner costs it higher; not counted"
                    result.points.append(point)
                    continue
                point.index_used = True
                latencies = []
                for shape in workload.shapes:
                    queries, own, fresh_set, fresh_own = workload.shape_sets(shape)
                    ids, dists, lat = measure(conn, workload, queries, own, kind=config.kind, depth=depth)
                    per_query = recall_at_k(truths[shape][0], ids, dists)
                    if fresh:
                        fresh_ids, fresh_d, _ = measure(conn, workload, fresh_set, fresh_own, kind=config.kind,
                                                        depth=depth)
                        point.measured(shape, per_query, recall_at_k(truths[shape][1], fresh_ids, fresh_d))
                    else:
                        point.measured(shape, per_query, per_query)
                    latencies.append(lat)
                lat = np.concatenate(latencies)
                point.p50_ms, point.p95_ms, point.p99_ms = (float(np.percentile(lat, p)) for p in (50, 95, 99))
                point.qps = 1000.0 / float(lat.mean())
                result.points.append(point)
                if point.reaches(enough, pessimistic):
                    break  # every query set near exact (or as near as asked): larger settings only cost more
            if workload.filter_owner is not None and values:
                result.points += _filtered_points(conn, workload, config, param, values[len(values) // 2],
                                                  filtered_truth, built, scale)
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(SCHEMA, config.index_name)))
            conn.execute(sql.SQL("RESET {}").format(sql.SQL(param)))
            conn.execute("RESET hnsw.iterative_scan")
    return result


def _buildable(configs: list[Config], dims: int, echo: Echo) -> list[Config]:
    """The candidates pgvector can build at this many dimensions; a kind it cannot is left out, said why."""
    too_wide = sorted({c.kind.name for c in configs if dims > c.kind.max_dims})
    for name in too_wide:
        echo(f"leaving out {name} indexes: pgvector builds them on at most {KINDS[name].max_dims:,} dimensions, "
             f"the column has {dims:,}")
    kept = [c for c in configs if dims <= c.kind.max_dims]
    if not kept:
        raise PgvkitError(f"no index kind asked for can be built on {dims:,} dimensions; try --candidates "
                          + ",".join(k.name for k in KINDS.values() if dims <= k.max_dims))
    return kept


def _filtered_points(conn, workload: Workload, config: Config, param: str, setting: tuple[int, int],
                     truth: GroundTruth, built: dict, scale: float) -> list[Point]:
    """Filtered queries (WHERE owner_id = ...) through the index, with pgvector 0.8's iterative
    scans off and on: off, the index hands back its usual candidates and the filter leaves
    fewer than k; relaxed_order keeps scanning until k rows pass the filter."""
    points = []
    value, depth = setting
    scan = f"{config.method}.iterative_scan"
    conn.execute(sql.SQL("SET {} = {}").format(sql.SQL(param), sql.Literal(value)))
    for mode in ("off", "relaxed_order"):
        conn.execute(sql.SQL("SET {} = {}").format(sql.SQL(scan), sql.Literal(mode)))
        point = Point(config, param, value, False, build_s=built["build_s"], size_bytes=built["size_bytes"],
                      iterative=mode, rerank=depth, memory_bytes=round(built["size_bytes"] * scale))
        shape = query_shape(workload.k, workload.query_ids is not None, True, kind=config.kind, dims=workload.dims,
                            depth=depth)
        params = {"q": workload.queries[0], "owner": workload.filter_owner}
        used, top = plan_index(conn, shape, params)
        if used != config.index_name:
            point.note = f"EXPLAIN shows {top}, not the index; not counted"
        else:
            point.index_used = True
            ids, dists, lat = measure(conn, workload, workload.queries, workload.query_ids, filtered=True,
                                      kind=config.kind, depth=depth)
            per_query = recall_at_k(truth, ids, dists)
            point.recall, point.recall_p5 = float(per_query.mean()), float(np.percentile(per_query, 5))
            point.p50_ms, point.p95_ms, point.p99_ms = (float(np.percentile(lat, p)) for p in (50, 95, 99))
            point.qps = 1000.0 / float(lat.mean())
            short = sum(len(r) < workload.k for r in ids)
            notes = [f"{short} of {len(ids)} queries got fewer than {workload.k} rows"] if short else []
            point.note = "; ".join(notes)
        points.append(point)
    conn.execute(sql.SQL("RESET {}").format(sql.SQL(scan)))
    return points
