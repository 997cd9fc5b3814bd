"""The three kinds of vector index a cosine search can use, and the query each one needs.

- vector:  (embedding vector_cosine_ops), ORDER BY embedding <=> q. The application's direct
           queries use it.
- halfvec: ((embedding::halfvec(D)) halfvec_cosine_ops), about half the size; only a query that
           orders by embedding::halfvec(D) <=> q::halfvec(D) uses it.
- binary:  ((binary_quantize(embedding)::bit(D)) bit_hamming_ops), tens of times smaller; the
           nearest N by Hamming distance, re-ordered by exact cosine distance (pgvector's README
           query). N, the re-rank depth, is the setting `pgvkit.rerank_depth`.

Every kind returns the exact cosine distance of what it found, so recall and similarity mean the
same whichever index answered. `nearest()` writes the query for the tuner (on its scratch table)
and for `search_assets` (`function_sql()`), so what is measured is what the application runs.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

__all__ = ["Kind", "KINDS", "RERANK_DEPTH", "kind_named", "kind_of", "nearest", "function_sql", "EXACT_OWNER_ROWS",
           "DEFAULT_EXACT_OWNER_ROWS", "FUNCTION_HEAD", "OWNER_ROUTE_DECLARE", "OWNER_SETTING", "parse_candidates"]

RERANK_DEPTH = "pgvkit.rerank_depth"  # binary: how many Hamming neighbours are re-ranked by cosine


@dataclass(frozen=True)
class Kind:
    name: str  # vector / halfvec / binary
    opclass: str
    bytes_per_dim: float  # what one dimension costs in the index
    methods: tuple[str, ...]  # the access methods the tuner tries for it
    max_dims: int  # the most dimensions pgvector's IVFFlat / HNSW index pages take for it

    @property
    def direct(self) -> bool:
        """Whether the application's own ORDER BY embedding <=> q can use an index of this kind."""
        return self.name == "vector"

    @property
    def reranks(self) -> bool:
        return self.name == "binary"

    def key(self, dims: int, column: str = "embedding") -> sql.Composable:
        """The index key: the column, or the expression the index is built on."""
        col = sql.Identifier(column)
        if self.name == "vector":
            return col
        if self.name == "halfvec":
            return sql.SQL("({}::halfvec({}))").format(col, sql.Literal(dims))
        return sql.SQL("(binary_quantize({})::bit({}))").format(col, sql.Literal(dims))

    def index_key(self, dims: int, column: str = "embedding") -> sql.Composable:
        """`key opclass`, as CREATE INDEX ... USING method (...) takes it."""
        return sql.SQL("{} {}").format(self.key(dims, column), sql.SQL(self.opclass))

    def order(self, dims: int, column: sql.Composable, query: sql.Composable) -> sql.Composable:
        """The ORDER BY expression that matches the index key (else the planner cannot use it)."""
        if self.name == "vector":
            return sql.SQL("{} <=> {}").format(column, query)
        if self.name == "halfvec":
            return sql.SQL("{}::halfvec({}) <=> {}::halfvec({})").format(column, sql.Literal(dims), query,
                                                                         sql.Literal(dims))
        return sql.SQL("binary_quantize({})::bit({}) <~> binary_quantize({})").format(column, sql.Literal(dims), query)

    def embedding_dims(self, dims: int) -> float:
        """Dimensions of float4 one indexed vector weighs (for sizing builds and memory)."""
        return dims * self.bytes_per_dim / 4


KINDS = {
    "vector": Kind("vector", "vector_cosine_ops", 4, ("ivfflat", "hnsw"), 2_000),
    "halfvec": Kind("halfvec", "halfvec_cosine_ops", 2, ("ivfflat", "hnsw"), 4_000),
    "binary": Kind("binary", "bit_hamming_ops", 1 / 8, ("hnsw",), 64_000),
}


def kind_named(name: str) -> Kind:
    return KINDS[name]


def kind_of(opclass: str | None) -> Kind | None:
    """The kind of an index from its operator class (None: not one a cosine search uses)."""
    return next((k for k in KINDS.values() if k.opclass == opclass), None)


def parse_candidates(text: str) -> tuple[str, ...]:
    """--candidates vector,halfvec,binary -> the kinds, in that order; one line on a wrong name."""
    from .errors import PgvkitError

    names = tuple(dict.fromkeys(n.strip().lower() for n in text.split(",") if n.strip()))
    wrong = [n for n in names if n not in KINDS]
    if wrong or not names:
        raise PgvkitError(f"--candidates takes index kinds from {', '.join(KINDS)} (got {text!r}); "
                          "e.g. --candidates vector,halfvec,binary")
    return names


def nearest(kind: Kind, dims: int, table: sql.Composable, query: sql.Composable, limit: sql.Composable, *,
            columns: tuple[str, ...] = ("id",), owner: sql.Composable | None = None,
            depth: sql.Composable | None = None, route: str | None = None, column: str = "embedding",
            present: bool = False) -> sql.Composed:
    """The nearest `limit` rows to `query`: the given columns and the exact cosine `distance`,
    nearest first, filtered by owner_id when `owner` is given. For binary, the nearest
    greatest(limit, depth) by Hamming distance are re-ranked by cosine distance.

    `route` fixes the way a filtered search takes (else the planner chooses): "few" reads the
    owner's rows whole (the owner_id index) and sorts them, exact; "many" walks the vector index,
    the owner_id index kept out of it (iterative scans go on until `limit` rows pass).
    `column`: the embedding column searched (a second model's); `present`: only rows that have
    one (a column being backfilled is NULL in the others)."""
    cols = sql.SQL(", ").join(sql.SQL("e.{}").format(sql.Identifier(c)) for c in columns)
    emb = sql.SQL("e.{}").format(sql.Identifier(column) if column != "embedding" else sql.SQL(column))  # 003's text
    has = sql.SQL(" AND {} IS NOT NULL").format(emb) if present else sql.SQL("")
    if owner is not None and route == "few":  # + 0: sorted, never an index order
        return sql.SQL("SELECT {cols}, {emb} <=> {q} AS distance FROM {table} AS e WHERE e.owner_id = {owner}{has}"
                       " ORDER BY ({emb} <=> {q}) + 0 LIMIT {limit}").format(
            cols=cols, emb=emb, q=query, table=table, owner=owner, has=has, limit=limit)
    where = sql.SQL("") if owner is None else sql.SQL(" WHERE e.owner_id {}= {}").format(
        sql.SQL("|| '' " if route == "many" else ""), owner)
    if present:
        where = sql.SQL("{} {} IS NOT NULL").format(where + sql.SQL(" AND") if owner is not None else sql.SQL(" WHERE"),
                                                    emb)
    if not kind.reranks:
        return sql.SQL("SELECT {cols}, {emb} <=> {q} AS distance FROM {table} AS e{where} ORDER BY {order} LIMIT {limit}"
                       ).format(cols=cols, emb=emb, q=query, table=table, where=where,
                                order=kind.order(dims, emb, query), limit=limit)
    outer = sql.SQL(", ").join(sql.SQL("c.{}").format(sql.Identifier(c)) for c in columns)
    kept = sql.SQL("c.{}").format(sql.Identifier(column) if column != "embedding" else sql.SQL(column))
    return sql.SQL(
        "SELECT {outer}, {kept} <=> {q} AS distance FROM (SELECT {cols}, {emb} FROM {table} AS e{where}"
        " ORDER BY {order} LIMIT greatest({limit}, {depth})) AS c ORDER BY {kept} <=> {q} LIMIT {limit}"
    ).format(outer=outer, kept=kept, q=query, cols=cols, emb=emb, table=table, where=where,
             order=kind.order(dims, emb, query), limit=limit, depth=depth if depth is not None else limit)


# A search for one owner: up to this many rows (pgvkit.exact_owner_rows, bound to search_assets or
# 10,000) they are read whole and sorted, exact; above it the vector index is walked with the
# owner's filter (iterative scan). Left to the planner, a search for an owner of 40 % of 198,000
# rows sorted all 79,000 of their vectors (p95 763 ms, about 10 us a row).
EXACT_OWNER_ROWS = "pgvkit.exact_owner_rows"
DEFAULT_EXACT_OWNER_ROWS = 10_000
OWNER_ROUTE_DECLARE = (f"DECLARE\n    few integer := coalesce(nullif(current_setting('{EXACT_OWNER_ROWS}', true), '')"
                       f"::integer, {DEFAULT_EXACT_OWNER_ROWS});\n")

# An owner with many rows walks the vector index with its filter, and only its share of the
# candidates a search visits passes: at 1,000,000 rows an owner of 40 % needed hnsw.ef_search 400
# where unfiltered searches met the target at 200. pgvkit confirm binds what that walk needs to its
# own setting, which search_assets (written with owner_setting) applies in that branch alone; the
# function's SET clauses scope it to the call.
OWNER_SETTING = {"hnsw.ef_search": "pgvkit.owner_ef_search", "ivfflat.probes": "pgvkit.owner_probes"}

FUNCTION_HEAD = """CREATE OR REPLACE FUNCTION search_assets(query vector, k integer DEFAULT 10, owner text DEFAULT NULL)
RETURNS TABLE (id bigint, asset_id varchar, owner_id varchar, distance double precision,
               similarity double precision)
LANGUAGE plpgsql STABLE
"""


def function_sql(conn, kind: Kind, dims: int, settings: dict[str, str],
                 table: sql.Composable = sql.Identifier("ip_asset_embeddings"), models=(),
                 owner_setting: str | None = None) -> str:
    """search_assets (as 003_search_assets_by_owner defines it) searching through an index of `kind`, with
    `settings` bound to it (SET clauses: the function's whole configuration). `models`: the
    other embedding columns being served (pgvkit model add: ModelColumn, each of its own
    dimension), a query of a model's dimension searching that model's column, among the rows
    that have one. `owner_setting` (hnsw.ef_search or ivfflat.probes): an owner searched through
    the index gets the value bound as OWNER_SETTING[owner_setting], when one is."""
    depth = sql.SQL("coalesce(current_setting({}, true)::integer, k)").format(sql.Literal(RERANK_DEPTH))
    cols = ("id", "asset_id", "owner_id")

    def body(owner, route=None, kind=kind, dims=dims, column="embedding", query=sql.SQL("query"), present=False):
        inner = nearest(kind, dims, table, query, sql.SQL("k"), columns=cols, owner=owner, depth=depth,
                        route=route, column=column, present=present)
        return sql.SQL("WITH nearest AS MATERIALIZED ({}) SELECT n.id, n.asset_id, n.owner_id, n.distance, "
                       "1 - n.distance FROM nearest AS n ORDER BY n.distance").format(inner).as_string(conn)

    def routed(indent: str, own: str = "", **where) -> str:
        return (f"{indent}IF owner IS NULL THEN\n{indent}    RETURN QUERY " + body(None, **where) + ";\n"
                f"{indent}ELSIF ({few}) <= few THEN\n"
                f"{indent}    -- an owner with few rows: all of them, sorted (exact)\n"
                f"{indent}    RETURN QUERY " + body(sql.SQL("owner"), "few", **where) + ";\n"
                f"{indent}ELSE\n{indent}    -- an owner with many: the vector index, until k of theirs pass\n" + own
                + f"{indent}    RETURN QUERY " + body(sql.SQL("owner"), "many", **where) + f";\n{indent}END IF;\n")

    own = ""
    if owner_setting is not None:
        name, bound_as = sql.Literal(owner_setting).as_string(conn), sql.Literal(OWNER_SETTING[owner_setting]).as_string(conn)
        own = (f"        -- at {OWNER_SETTING[owner_setting]} when it is bound (only its share of the walk passes)\n"
               f"        PERFORM set_config({name}, current_setting({bound_as}), true) "
               f"WHERE current_setting({bound_as}, true) <> '';\n")

    bound = "".join(sql.SQL("SET {} = {}\n").format(sql.SQL(name), sql.Literal(str(value))).as_string(conn)
                    for name, value in settings.items())
    few = sql.SQL("SELECT count(*) FROM (SELECT FROM {} AS e WHERE e.owner_id = owner LIMIT few + 1) AS o").format(
        table).as_string(conn)
    others = ""
    for m in models:
        query = sql.SQL("query::halfvec({})").format(sql.Literal(m.dimensions)) if m.kind == "halfvec" else sql.SQL(
            "query")
        others += (f"    IF vector_dims(query) = {int(m.dimensions)} THEN\n"
                   f"        -- model {''.join(c if c.isprintable() and c != '$' else ' ' for c in m.model)} ({m.type_name} in "
                   f"{m.column}): the rows that have "
                   "its embedding\n"
                   + routed("        ", kind=KINDS["vector"], dims=m.dimensions, column=m.column, query=query,
                            present=True)
                   + "        RETURN;\n    END IF;\n")
    return (FUNCTION_HEAD + bound + "AS $$\n#variable_conflict use_column\n" + OWNER_ROUTE_DECLARE + "BEGIN\n"
            + others + f"    -- searches through a {kind.name} index ({kind.opclass})"
            + (f", the nearest {RERANK_DEPTH} by Hamming distance re-ranked by cosine" if kind.reranks else "") + "\n"
            + routed("    ", own) + "END;\n$$;\n")
