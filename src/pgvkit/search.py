"""search_assets: the store's search query, owned by the migrations (002_search_assets.sql,
003_search_assets_by_owner.sql).

The application calls `SELECT * FROM search_assets($1, 10)` (or with an owner) instead of writing
`ORDER BY embedding <=> $1` itself, so a migration can change the index and the query together.
Its query-time settings are bound to the function (`ALTER FUNCTION ... SET`), so every caller
gets them whatever its session's defaults are. This module reads the function (does it exist,
with which settings) and shows the plan of the statement it really runs: PostgreSQL's
auto_explain reports the nested statement's plan, which EXPLAIN of the call cannot see.
"""

from __future__ import annotations

import json

import psycopg

from .checks import Check

__all__ = ["FUNCTION", "SIGNATURE", "INDEX_ONLY", "SEQ_SCAN_FAIL_ROWS", "exists", "settings", "exact_owner_rows", "effective_settings", "call_sql", "KIT_MARK", "nested_plan", "check_search_function", "written_as"]

FUNCTION = "search_assets"
SEQ_SCAN_FAIL_ROWS = 10_000  # below this a sequential scan is as fast as the index, and exact
# Bound to search_assets by every migration pgvkit writes (tune, confirm) beside the search setting:
# the vectors are stored out of line (TOAST), so the heap looks cheap to the planner, which at some
# settings and sizes (seen: hnsw.ef_search = 320 on 200,000 rows, ivfflat.probes = 100 on 12,000)
# then reads the whole table instead of the index: a silent 50x slower search. Off, the index is
# taken whenever one can serve the query (a filter by owner may still take the owner_id btree).
INDEX_ONLY = {"enable_seqscan": "off"}
SIGNATURE = "search_assets(vector, integer, text)"


def exists(conn) -> bool:
    """Whether search_assets(vector, integer, text) is there (on the search_path)."""
    with conn.transaction():
        return conn.execute("SELECT to_regprocedure(%s) IS NOT NULL", [SIGNATURE]).fetchone()[0]


def settings(conn) -> dict[str, str]:
    """The settings bound to the function (its proconfig), e.g. {'hnsw.ef_search': '40'}."""
    row = conn.execute("SELECT proconfig FROM pg_proc WHERE oid = to_regprocedure(%s)", [SIGNATURE]).fetchone()
    return dict(item.split("=", 1) for item in (row[0] or [])) if row else {}


def exact_owner_rows(conn) -> int | None:
    """Up to how many rows an owner's search reads them whole (003_search_assets_by_owner: the
    bound pgvkit.exact_owner_rows, else 10,000); None when search_assets does not route by size."""
    from .kinds import DEFAULT_EXACT_OWNER_ROWS, EXACT_OWNER_ROWS

    row = conn.execute("SELECT prosrc, proconfig FROM pg_proc WHERE oid = to_regprocedure(%s)", [SIGNATURE]).fetchone()
    if not row or EXACT_OWNER_ROWS not in row[0]:
        return None
    bound = dict(item.split("=", 1) for item in (row[1] or []))
    return int(bound.get(EXACT_OWNER_ROWS) or DEFAULT_EXACT_OWNER_ROWS)


def written_as(conn, table: str, kind, dims: int, others=()):
    """How the live search_assets was written, when kinds.function_sql wrote it (003 on): the
    table reference its body names and the owner setting it applies (kinds.OWNER_SETTING; None:
    none), as a pair; None when its body is another (changed by hand, or 003 not applied)."""
    from psycopg import sql

    from .kinds import OWNER_SETTING, function_sql

    live = conn.execute("SELECT prosrc FROM pg_proc WHERE oid = to_regprocedure(%s)", [SIGNATURE]).fetchone()
    found = conn.execute("SELECT relnamespace::regnamespace::text FROM pg_class WHERE oid = to_regclass(%s)",
                         [sql.Identifier(table).as_string(conn)]).fetchone()
    if not live or not found:
        return None
    for ident in (sql.Identifier(table), sql.Identifier(found[0], table)):
        for owner in (None, *OWNER_SETTING):
            create = function_sql(conn, kind, dims, {}, ident, others, owner)
            if create.split("AS $$\n", 1)[1].rsplit("\n$$;", 1)[0].strip("\n") == live[0].strip("\n"):
                return ident, owner
    return None


def effective_settings(conn, names, table: str = "ip_asset_embeddings") -> dict[str, str | None]:
    """What the application's searches run with: the session's values (database and role
    defaults), overridden by those bound to search_assets when the function exists."""
    values = {name: conn.execute("SELECT current_setting(%s, true)", [name]).fetchone()[0] for name in names}
    if table == "ip_asset_embeddings" and exists(conn):
        values.update({k: v for k, v in settings(conn).items() if k in values})
    return values


# in the text of pgvkit's own searches (pg_stat_statements keeps it): pgvkit watch leaves them out
KIT_MARK = "pgvkit_audit"


def call_sql(k: int, owner: bool = False) -> str:
    """How pgvkit's own searches call it: id and distance of the nearest k (parameters %(q)s,
    %(owner)s), marked so that pgvkit watch does not count them as the application's."""
    return (f"SELECT id, distance, true AS {KIT_MARK} FROM {FUNCTION}(%(q)s, {int(k)}"
            f"{', %(owner)s' if owner else ''})")


def _index_scans(plan: dict) -> list[str]:
    found = [plan["Index Name"]] if plan.get("Index Name") else []
    for child in plan.get("Plans", []):
        found += _index_scans(child)
    return found


def _seq_scans(plan: dict) -> list[str]:
    found = [plan.get("Relation Name", "")] if plan.get("Node Type") == "Seq Scan" else []
    for child in plan.get("Plans", []):
        found += _seq_scans(child)
    return found


def nested_plan(conn, query_vector, k: int = 10, owner: str | None = None, *, seqscan: bool = True,
                function: str = FUNCTION) -> dict | None:
    """The plan of the statement search_assets runs for one call, as auto_explain reports it
    (JSON); None when auto_explain cannot be loaded by this role (it needs a superuser, or the
    library in $libdir/plugins, or session_preload_libraries). Runs in a transaction rolled back.
    `function`: another function of the same signature (pgvkit confirm's probe copy)."""
    notes: list[str] = []

    def keep(diag):
        notes.append(diag.message_primary or "")

    try:
        with conn.transaction(force_rollback=True):
            conn.execute("LOAD 'auto_explain'")
            for name, value in (("auto_explain.log_min_duration", "0"), ("auto_explain.log_nested_statements", "on"),
                                ("auto_explain.log_level", "notice"), ("auto_explain.log_format", "json"),
                                ("enable_seqscan", "on" if seqscan else "off")):
                conn.execute("SELECT set_config(%s, %s, true)", [name, value])
            conn.add_notice_handler(keep)
            try:
                conn.execute(f"SELECT *, true AS {KIT_MARK} FROM {function}(%s, %s, %s)",
                             [query_vector, k, owner]).fetchall()
            finally:
                conn.remove_notice_handler(keep)
    except psycopg.Error:
        return None
    found = None
    for note in notes:  # the search is the last statement on the table (003 counts an owner's rows first)
        body = note.split("plan:", 1)[-1]
        try:
            plan = json.loads(body)
        except ValueError:
            continue
        text = plan.get("Query Text", "")
        if "ip_asset_embeddings" in text and FUNCTION not in text and function not in text:
            found = plan
    return found


def _estimated_rows(conn, table: str) -> int:
    """The planner's row estimate of the table (pg_class.reltuples; 0 before any ANALYZE)."""
    with conn.transaction():
        row = conn.execute("SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass(%s)", [table]).fetchone()
    return max(0, row[0]) if row and row[0] is not None else 0


def check_search_function(conn, table: str = "ip_asset_embeddings", dimension: int = 768) -> Check:
    """search_assets exists, and the statement it runs scans the table's vector index (its plan
    read with auto_explain), with the settings bound to it."""
    if not exists(conn):
        return Check("search function", "warn", f"no {SIGNATURE}: the application writes its own ORDER BY "
                     "embedding <=> ..., so no migration can change the index kind without changing every caller",
                     "a migration that changes the index (halfvec, binary quantization) must change the query too",
                     "pgvkit migrate (002_search_assets adds it)")
    bound = ", ".join(f"{k} = {v}" for k, v in settings(conn).items()) or "no settings bound"
    with conn.transaction():
        probe = conn.execute(f"SELECT array_fill(0.1, ARRAY[{int(dimension)}])::vector").fetchone()[0]
    plan = nested_plan(conn, probe)
    if plan is None:
        return Check("search function", "warn", f"{FUNCTION} exists ({bound}); its plan was not read: this role "
                     "cannot load auto_explain", "verify reads the plan of the statement the function runs with "
                     "auto_explain, which needs a superuser", "run pgvkit verify as a superuser to check its plan")
    indexes = _index_scans(plan["Plan"])
    if any(indexes):
        return Check("search function", "pass", f"{FUNCTION} scans {', '.join(indexes)} ({bound})")
    usable = _index_scans((nested_plan(conn, probe, seqscan=False) or {"Plan": {}})["Plan"])
    rows = _estimated_rows(conn, table)
    if usable and rows >= SEQ_SCAN_FAIL_ROWS:  # PostgreSQL's costs chose to read a large table whole
        return Check("search function", "fail", f"{FUNCTION} reads all ~{rows:,} rows of {table} by a sequential scan "
                     f"({bound}) although it can use {', '.join(usable)}: every search is exact and slow",
                     "the vectors are stored out of line (TOAST), so the planner costs the heap as cheap to scan; "
                     "at some settings (seen: hnsw.ef_search = 320 on 200,000 rows) it then prefers the scan",
                     f"ALTER FUNCTION {SIGNATURE} SET enable_seqscan = off; (searches then take the index), "
                     "or pgvkit confirm --write-migration (binds it with the search settings)")
    if usable:  # as the query plan check: a small table is read whole, the index is there for when it grows
        return Check("search function", "pass", f"{FUNCTION} reads the table at this size and can use "
                     f"{', '.join(usable)} (seen with enable_seqscan off) ({bound})")
    scans = _seq_scans(plan["Plan"])
    return Check("search function", "warn", f"{FUNCTION} reads {', '.join(scans) or table} by a sequential scan "
                 f"({bound}), and no index would serve it", "no vector index the statement can use (its operator "
                 "class must match <=>): every search reads every row", "create the index with vector_cosine_ops, "
                 "or pgvkit tune")
