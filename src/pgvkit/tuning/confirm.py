"""Step 8, after the migration built the index at full size: confirm. The search-time settings
(hnsw.ef_search or ivfflat.probes; for searches filtered by owner, hnsw.max_scan_tuples with
hnsw.scan_mem_multiplier, or ivfflat.max_probes) chosen on the live index, against exact
neighbours streamed from the whole table: they need no rebuild, and a sample cannot tell them
(at fixed settings recall falls as a table grows).

Every measurement searches through search_assets as the application calls it: a copy of it (body,
bound settings) in this session's pg_temp with the setting under test, so the live function is
never touched and the plan is the application's. settings_migration.write_settings_migration() binds the
choice (and search.INDEX_ONLY) as the next migration; its down file puts back what was bound.
"""

from __future__ import annotations

import math
import re

import numpy as np
from pgvector.psycopg import register_vector
from psycopg import sql

from .. import search
from ..audit.truth import GroundTruth, recall_at_k
from ..data.bulk import read_vectors
from ..display import Echo, echo_to
from ..errors import PgvkitError
from ..indexes import searched_index
from ..kinds import OWNER_SETTING
from ..memory import rewarm
from ..server.db import connect, mask_url
from ..vectors import as_vectors
from .build import SEARCH_PARAM
from .confirmation import Confirmation, Measurement, for_owners
from .owner_route import choose_threshold, measure_routes, pick_owners
from .probe import PROBE, probe_function, probe_plan, search_probe
from .storage_migration import INLINE_HINT, vector_storage

__all__ = ["confirm", "SEARCH_GRID", "FILTER_GRID", "CONFIRM_WRITTEN", "probe_function"]

CONFIRM_WRITTEN = "-- Written by pgvkit confirm on "  # the second line of every migration confirm writes

# The values tried, smallest first: the first whose recall clears the target (with the tuner's
# margin) is chosen, so a search does no more work than the target asks.
SEARCH_GRID = {
    "hnsw.ef_search": [10, 20, 30, 40, 50, 60, 80, 100, 120, 160, 200, 240, 320, 400, 500, 640, 800, 1000],
    "ivfflat.probes": [1, 2, 3, 4, 6, 8, 10, 12, 16, 20, 24, 32, 40, 48, 64, 80, 96, 128, 160, 200, 256, 320, 400,
                       512, 640, 800, 1000, 1280, 1600, 2000],
}
# A filtered search's iterative scan stops at max_scan_tuples (pgvector's default 20,000) or when
# its memory passes work_mem x scan_mem_multiplier: at 1M rows a 1 % owner needs ~10x the default
# (published: recall 0.77-0.80 at the default, ~0.93 at 200,000), so both grow together.
FILTER_GRID = {
    "hnsw": [{"hnsw.max_scan_tuples": str(t), "hnsw.scan_mem_multiplier": str(m)}
             for t, m in ((20_000, 1), (50_000, 2), (100_000, 4), (200_000, 8), (400_000, 16), (1_000_000, 40))],
    "ivfflat": [{"ivfflat.max_probes": str(p)} for p in (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 32768)],
}
FILTERED_QUERIES = 200  # a deep iterative scan costs ~100x a plain search: fewer queries, same margin rule


def confirm(url: str, *, table: str = "ip_asset_embeddings", k: int = 10, target: float = 0.95,
            sample: int | None = None, queries=None, owners="auto", seed: int = 0, statement_timeout: str = "2h", progress: bool = True,
            echo: Echo | None = None, column: str = "embedding") -> Confirmation:
    """Measure the live index through search_assets at every search setting of the grid, smallest
    first, until the similar-assets shape (`sample` rows of the table, each left out of its own
    answer) and the new-vector shape (`queries`, vectors not in the table, when given) clear
    `target` with the tuner's margin; then, at that setting, the filtered searches of `owners`
    ("auto": see owner_route.pick_owners; None: none) over the filter grid until they return every row that exists
    at the target, raising the search setting instead where a deeper scan changes nothing.
    Nothing is changed in the database. `column`: a second model's column during a model change
    (pgvkit model add), its index confirmed before the switch (its rows that have an embedding,
    searched through search_assets by their dimension; no filtered searches)."""
    from ..audit.recall import exact_truths, table_facts, sample_size

    from ..schema.models import models, searched_beside
    from ..server.pooler import require_session

    echo = echo or echo_to()
    if k < 1 or (sample is not None and sample < 2) or not 0 < target <= 1:
        raise PgvkitError("--k must be positive, --sample at least 2 and --target-recall between 0 and 1")
    require_session(url, mask_url(url), "pgvkit confirm")  # its settings and prepared searches are a session's
    with connect(url, application_name="pgvkit confirm", prepared=True) as conn:
        register_vector(conn)
        dims, rows, nonzero = table_facts(conn, table, column)
        if column != "embedding":
            owners = None  # a second model's branch of search_assets: its unfiltered searches
        if not search.exists(conn):
            raise PgvkitError(f"no {search.SIGNATURE} here: confirm binds its settings to the function the application "
                              "searches through; run pgvkit migrate (002_search_assets adds it)")
        role, database, temp = conn.execute("SELECT current_user, current_database(), has_database_privilege("
                                            "current_database(), 'TEMPORARY')").fetchone()
        if not temp:  # the probe copy of search_assets lives in this session's pg_temp
            raise PgvkitError(
                f"role {role} may not create temporary objects in database {database}, and confirm measures through a "
                "private copy of search_assets in its session's pg_temp (the live function is never touched): "
                + sql.SQL("GRANT TEMPORARY ON DATABASE {} TO {};").format(sql.Identifier(database),
                                                                          sql.Identifier(role)).as_string(conn)
                + " (or run pgvkit confirm as the table's owner)")
        live = searched_index(conn, table, column=column)
        if live is None:
            raise PgvkitError(f"{table} has no valid vector index to confirm; run pgvkit tune --write-migration, then "
                              "pgvkit migrate")
        if live.kind is not None and live.kind.reranks:
            raise PgvkitError(f"{live.name} is a binary-quantization index: its search setting is the re-rank depth, "
                              "which pgvkit tune measures; measure it at full size with pgvkit recall")
        conn.commit()
        sample = sample_size(sample, rows, k, table)
        new = as_vectors(queries, dims, what="query vectors") if queries is not None else None
        param = SEARCH_PARAM[live.method]
        bound = search.settings(conn)
        # owners' searches may get a setting of their own only in a body pgvkit writes (its migration rewrites it)
        apart = column == "embedding" and live.kind is not None and search.written_as(
            conn, table, live.kind, dims, searched_beside(models(conn, table))) is not None
        named = table if column == "embedding" else f"{table}.{column}"
        result = Confirmation(conn.info.dbname, named, rows, live.definition, (live.schema, live.name), live.comment,
                              live.method, k, target, bound, predicted=live.predicted, schema=live.table_schema,
                              kind=live.kind.name if live.kind else "vector", dims=dims)
        conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(statement_timeout)))
        conn.execute("SELECT setseed(%s)", [(seed % 1000) / 1000.0])
        own_ids, own = read_vectors(conn, sql.SQL(
            "SELECT id, {c}::vector FROM {t} WHERE id IN (SELECT id FROM {t} WHERE {nonzero}"
            " ORDER BY random() LIMIT {n}) ORDER BY id").format(t=sql.Identifier(table), n=sql.Literal(sample),
                                                             c=sql.Identifier(column), nonzero=nonzero), dims)
        picked = pick_owners(conn, table, rows, k, owners)
        conn.commit()
        shapes = {"similar assets": (own, own_ids)} | ({"new vectors": (new, None)} if new is not None else {})
        echo(f"exact neighbours: streaming {rows:,} rows of {named} ...")
        truths = exact_truths(conn, table, dims, shapes, k, rows, progress, column=column, nonzero=nonzero)
        conn.commit()
        filtered_q, filtered_ex = (new, None) if new is not None else (own, own_ids)
        filtered_q = filtered_q[:FILTERED_QUERIES]
        filtered_ex = filtered_ex[:FILTERED_QUERIES] if filtered_ex is not None else None
        owner_truth = {}
        for owner, owned in picked:
            owner_truth[owner] = exact_truths(conn, table, dims, {"f": (filtered_q, filtered_ex)}, k, owned, False,
                                        where=sql.SQL("owner_id = {}").format(sql.Literal(owner)))["f"]
            conn.commit()
        said = rewarm(conn, table, column)  # the stream pushed the index out of shared_buffers: measure it warm
        if said:
            echo(said)
        conn.commit()
        conn.autocommit = True
        grid = [v for v in SEARCH_GRID[param] if v >= k] if param == "hnsw.ef_search" else list(SEARCH_GRID[param])
        if live.method == "ivfflat":
            lists = int(re.search(r"lists\s*=\s*'?(\d+)", live.definition).group(1))
            grid = [p for p in grid if p < lists] + [lists]
        tuned = bound.get(param)
        if column != "embedding":  # a second model's index: what pgvkit tune --model chose for it (its comment)
            chose = re.match(rf"{re.escape(param)}\s*=\s*(\d+)", live.tuned_for or "")
            tuned = chose.group(1) if chose else None
        chosen = _smallest_meeting(conn, result, param, grid, shapes, truths, echo,
                                   int(tuned) if tuned is not None else None)
        if tuned is not None and not any(m.settings == {param: tuned} for m in result.measurements):  # what tune bound, measured too: its prediction, checked
            probe_function(conn, {param: tuned, **search.INDEX_ONLY})
            for name, (q, exclude) in shapes.items():
                result.measurements.append(_measure(conn, name, {param: tuned}, q, exclude, k, truths[name], None))
            result.measurements.sort(key=lambda m: (m.shape.startswith("owner"), int(m.settings[param])))
        if tuned is not None:
            result.at_tuned = {m.shape: round(m.recall, 4) for m in result.measurements
                               if m.settings == {param: tuned}}
            result.at_tuned["setting"] = f"{param} = {tuned}"
        if chosen is None:
            best = max((m for m in result.measurements if m.settings == {param: str(grid[-1])}),
                       key=lambda m: -m.low, default=None)  # the shape furthest below, at the largest setting
            said = f" (at {grid[-1]}: {best.shape} {best.recall:.3f}, lower bound {best.low:.3f})" if best else ""
            result.message = (f"no {param} up to {grid[-1]} (as far as pgvector allows) reaches recall@{k} >= {target} "
                              f"on the live index{said}; build a denser index: {_next_build(live)}")
            return result
        result.chosen = dict(chosen)
        raised_for, needs = [], {}
        for owner, owned in picked:
            label = f"owner {owner} ({owned / rows:.1%})"
            found, previous, raising = None, None, False
            queue = [{}] + _deeper(conn, FILTER_GRID[live.method], bound)
            while queue:
                step = queue.pop(0)
                setting = {**chosen, **step}
                probe_function(conn, {**setting, **search.INDEX_ONLY})
                m = _measure(conn, label, setting, filtered_q, filtered_ex, k, owner_truth[owner], owner)
                result.measurements.append(m)
                shown = ", ".join(f"{a} = {b}" for a, b in step.items()) or "as bound now"
                echo(f"  {label}, {shown}: recall@{k} {m.recall:.4f}, {m.short} of {len(m.per_query)} short "
                     f"(p95 {m.p95_ms:.1f} ms, {m.plan})")
                if m.meets(target):
                    found = step
                    break
                if (not raising and previous is not None and m.short == previous.short == 0
                        and abs(m.recall - previous.recall) < 0.002):
                    # a deeper scan changed nothing, none came back short: the search setting ends these
                    # searches (1M rows: a 20 % owner at 0.7685 from max_scan_tuples 20,000 to 1M)
                    raising = True
                    queue = [{param: str(v)} for v in grid if v > int(chosen[param])]
                previous = m
            if found is None:
                result.message = (f"filtered searches for {label} stay below recall@{k} {target} at every setting "
                                  f"tried (the scan's reach, then {param} up to {grid[-1]}): give that owner its "
                                  "own partial index, or a lower target")
                return result
            if param in found:
                raised_for.append(f"{param} = {found[param]} for {label}")
            needs.update({n: v for n, v in found.items() if n not in needs or _reach(v) > _reach(needs[n])})
        if apart and param in needs:  # owners walk the index at their own setting; unfiltered searches keep theirs
            result.chosen[OWNER_SETTING[param]] = needs.pop(param)
        result.chosen.update(needs)  # the deepest any owner needs (each deeper than the unfiltered choice)
        if raised_for and not apart:  # an owner raised the search setting: what the unfiltered searches get with it
            probe_function(conn, {**result.chosen, **search.INDEX_ONLY})
            result.measurements += [_measure(conn, name, {param: result.chosen[param]}, q, ex, k, truths[name], None)
                                    for name, (q, ex) in shapes.items()]
        threshold = search.exact_owner_rows(conn)
        if threshold is not None and picked:  # search_assets reads small owners whole: up to which size, measured

            def measure(owner: str, owned: int, route: dict, exact: bool) -> tuple[float, bool]:
                setting = {**for_owners(result.chosen), **route}
                probe_function(conn, {**setting, **search.INDEX_ONLY})
                m = _measure(conn, f"owner {owner} ({owned / rows:.1%}), {'read whole' if exact else 'by the index'}",
                             setting, filtered_q, filtered_ex, k, owner_truth[owner], owner)
                result.measurements.append(m)
                echo(f"  {m.shape}: recall@{k} {m.recall:.4f}, p95 {m.p95_ms:.1f} ms")
                return m.p95_ms, m.meets(target)

            routes = measure_routes(picked, threshold, measure, [{}] + _deeper(conn, FILTER_GRID[live.method], bound))
            route = choose_threshold(routes, threshold, rows)
            if any(r.exact_p95 is not None for r in routes):  # owners read whole: from TOAST, one lookup a row?
                stored = vector_storage(conn, table, column)
                if stored.out_of_line and not stored.inline:
                    route.said += f"; {INLINE_HINT}"
            echo(route.said)
            result.route = route.said
            if route.threshold != threshold:
                result.chosen.update(route.setting())
                if route.threshold < threshold:  # the filter setting the owner that proved the index needed
                    step = min((r for r in routes if r.index_meets), key=lambda r: r.rows).index_step
                    result.chosen.update({n: v for n, v in step.items()
                                          if n not in result.chosen or _reach(v) > _reach(result.chosen[n])})
        conn.execute(f"DROP FUNCTION IF EXISTS {PROBE}(vector, integer, text)")
    at = result.chosen_measurements()
    result.met = True
    result.message = (", ".join(f"{a} = {b}" for a, b in result.chosen.items()) + ": "
                      + "; ".join(f"{m.shape} {m.recall:.3f}" for m in at if m.settings.keys() <= set(result.chosen))
                      + f" (recall@{k}, target {target})"
                      + (f"; owners searched through the index get {', '.join(raised_for)} (bound as "
                         f"{OWNER_SETTING[param]}; unfiltered searches keep {param} = {result.chosen[param]})"
                         if raised_for and apart else
                         f"; raised to {', '.join(raised_for)}: unfiltered searches get it too, and meet the target "
                         "at least as well" if raised_for else "")
                      + (f"; {result.route}" if result.route else "")
                      + "; bind it with pgvkit confirm --write-migration")
    return result


def _next_build(live) -> str:
    """The command that builds the next denser index than the live one."""
    found = dict(re.findall(r"(m|ef_construction)\s*=\s*'?(\d+)", live.definition))
    m, efc = int(found.get("m", 16)), int(found.get("ef_construction", 64))
    if live.method != "hnsw" or m < 32:
        return "pgvkit tune --hnsw 32:200 --write-migration"
    return f"pgvkit tune --hnsw {min(100, m * 2)}:{min(1000, max(efc * 2, m * 4))} --write-migration"


def _smallest_meeting(conn, result: Confirmation, param: str, grid: list[int], shapes: dict, truths: dict,
                      echo: Echo, start: int | None) -> dict | None:
    """The smallest grid value at which every shape meets the target (recall grows with it): from
    the value bound now (tune's) up by doubling steps until one meets, then bisection below it."""

    def meets(i: int) -> bool:
        value = grid[i]
        setting = {param: str(value)}
        probe_function(conn, {**setting, **search.INDEX_ONLY})
        ok = True
        for name, (q, exclude) in shapes.items():
            m = _measure(conn, name, setting, q, exclude, result.k, truths[name], None)
            result.measurements.append(m)
            echo(f"  {param} = {value}: {name} recall@{result.k} {m.recall:.4f} (p95 {m.p95_ms:.1f} ms, {m.plan})")
            ok = ok and m.meets(result.target)
        return ok

    i = min(range(len(grid)), key=lambda j: abs(grid[j] - start)) if start else len(grid) // 2
    lo, step = 0, 1
    while not meets(i):  # gallop up
        if i == len(grid) - 1:
            return None
        lo = i + 1
        i = min(len(grid) - 1, i + step)
        step *= 2
    hi = i
    while lo < hi:  # the smallest that meets, in [lo, hi]
        mid = (lo + hi) // 2
        if meets(mid):
            hi = mid
        else:
            lo = mid + 1
    result.measurements.sort(key=lambda m: int(m.settings[param]))
    return {param: str(grid[hi])}


def _reach(value: str) -> float:  # how far a filter setting lets a scan go (-1, ivfflat.max_probes: every list)
    return math.inf if float(value) < 0 else float(value)


def _deeper(conn, steps: list[dict], bound: dict) -> list[dict]:
    """The filter steps that reach further than what searches get now (bound, else the default)."""
    conn.execute("SELECT '[1]'::vector")  # loads pgvector: its settings exist
    now = {name: bound.get(name) or conn.execute("SELECT current_setting(%s)", [name]).fetchone()[0]
           for name in steps[0]}
    first = next(iter(steps[0]))  # max_scan_tuples / max_probes: what a step is ordered by
    return [{n: v if _reach(v) >= _reach(now[n]) else now[n] for n, v in step.items()}  # never lower one
            for step in steps if _reach(step[first]) > _reach(now[first])]


def _measure(conn, shape: str, setting: dict, queries, exclude, k: int, truth: GroundTruth,
             owner: str | None) -> Measurement:
    ids, distances, latency = search_probe(conn, queries, exclude, k, owner)
    per_query = recall_at_k(truth, ids, distances)
    exists = np.isfinite(truth.distances).sum(axis=1)
    short = int(sum(len(found) < want for found, want in zip(ids, exists)))
    return Measurement(shape, dict(setting), per_query, float(np.percentile(latency, 50)),
                       float(np.percentile(latency, 95)), short,
                       probe_plan(conn, queries[0], k + 1 if exclude is not None else k, owner))
