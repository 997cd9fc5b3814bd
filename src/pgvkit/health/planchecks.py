"""The query plans' checks: which vector index the application's direct query uses (EXPLAIN of
ORDER BY embedding <=> $1 LIMIT 10), and one index per operator class. A direct query with no
index is a failure, unless the table's index is a halfvec or binary one that search_assets
searches (a query change pgvkit tune made when allowed): then it is a warning naming the move."""

from __future__ import annotations

from psycopg import sql

from ..checks import Check
from ..errors import PgvkitError
from ..indexes import partition_owners, search_index, vector_indexes
from ..search import exists as search_exists

__all__ = ["planned_vector_index", "check_index_used", "check_vector_indexes"]


def planned_vector_index(conn, table: str, dimension: int = 768) -> tuple[str | None, bool]:
    """The vector index the canonical query ORDER BY embedding <=> $1 LIMIT 10 scans, and
    whether the planner only took it with sequential scans off (None: it cannot use one)."""
    query = sql.SQL("EXPLAIN (FORMAT JSON) SELECT id FROM {} ORDER BY embedding <=> %s::vector LIMIT 10").format(
        sql.Identifier(table))
    probe = "[" + ",".join(["0.1"] * dimension) + "]"
    owners = partition_owners(conn, vector_indexes(conn, table))  # a partition's index counts as its table's

    def scanned() -> str | None:
        plan = conn.execute(query, [probe]).fetchone()[0]
        return next((owners[n] for n in _index_names(plan[0]["Plan"]) if n in owners), None)

    with conn.transaction():
        used = scanned()
        if used:
            return used, False
        conn.execute("SET LOCAL enable_seqscan = off")
        forced = scanned()
    return forced, forced is not None


def check_index_used(conn, table: str, dimension: int = 768) -> Check:
    """EXPLAIN the canonical query: ORDER BY embedding <=> $1 LIMIT k must use the vector index,
    and the one pgvkit tune built its settings for."""
    used, forced = planned_vector_index(conn, table, dimension)
    if used is None:
        searched = _quantized_search_index(conn, table)
        if searched is not None:
            return Check("query plan", "warn", f"ORDER BY embedding <=> $1 cannot use an index: {searched.name} is a "
                         f"{searched.kind.name} index, which only search_assets searches; a direct query reads every row",
                         "pgvkit tune changed the index kind with --allow-query-change: the application must search "
                         "through search_assets",
                         "move every direct ORDER BY embedding <=> ... query to search_assets ("
                         "docs/how-to/smaller-indexes.md: Moving the application), or pgvkit rollback to the vector index")
        return Check("query plan", "fail", "ORDER BY embedding <=> $1 cannot use a vector index",
                     fix="create the index with vector_cosine_ops (the operator class must match <=>)")
    if forced:
        return Check("query plan", "warn",
                     f"the planner prefers a sequential scan at this table size; {used} is usable (chosen with enable_seqscan off)",
                     fix="nothing to do on a small table; on a large one run ANALYZE " + table)
    indexes = {i.name: i for i in vector_indexes(conn, table)}
    if indexes[used].tuned_for:
        return Check("query plan", "pass", f"ORDER BY embedding <=> $1 LIMIT 10 uses {used}, "
                                           f"tuned by pgvkit tune for {indexes[used].tuned_for}")
    tuned = [i for i in indexes.values() if i.tuned_for and i.name != used]
    if tuned:
        return Check("query plan", "warn", f"ORDER BY embedding <=> $1 LIMIT 10 uses {used}, not {tuned[0].name} "
                                           f"that pgvkit tune built for {tuned[0].tuned_for}",
                     fix=f"DROP INDEX CONCURRENTLY {sql.Identifier(indexes[used].schema, used).as_string(conn)}; "
                         "unless the application needs it")
    return Check("query plan", "pass", f"ORDER BY embedding <=> $1 LIMIT 10 uses {used}")


def check_vector_indexes(conn, table: str, dimension: int = 768) -> Check:
    """One vector index per operator class: a second one costs every write and serves no search."""
    indexes = [i for i in vector_indexes(conn, table) if i.valid]
    by_opclass: dict[str, list] = {}
    for i in indexes:
        by_opclass.setdefault(i.opclass, []).append(i)
    for opclass, same in by_opclass.items():
        if len(same) > 1:
            used, _ = planned_vector_index(conn, table, dimension) if opclass == "vector_cosine_ops" else (None, False)
            extra = [i for i in same if i.name != (used or same[0].name)]
            return Check("vector indexes", "warn",
                         f"{len(same)} vector indexes with {opclass} on embedding ({', '.join(i.name for i in same)}): "
                         f"every INSERT and UPDATE writes each, and a search uses one ({used or same[0].name})",
                         fix="; ".join(sql.SQL("DROP INDEX CONCURRENTLY {}").format(i.identifier).as_string(conn)
                                       for i in extra) + ";")
    return Check("vector indexes", "pass", ", ".join(f"{i.name} ({i.method}, {i.opclass})" for i in indexes)
                 or "no vector index")



def _index_names(node: dict) -> list[str]:
    """Every index an EXPLAIN (FORMAT JSON) plan scans."""
    names = [node["Index Name"]] if node.get("Index Name") else []
    for child in node.get("Plans", []):
        names += _index_names(child)
    return names


def _quantized_search_index(conn, table: str):
    """The table's halfvec or binary index when search_assets is there to search it; else None."""
    try:
        found = search_index(conn, table)
    except PgvkitError:  # two of them: check_vector_indexes says so
        return None
    if found is None or found.kind is None or found.kind.direct or not search_exists(conn):
        return None
    return found
