"""Size against memory: the table and its vector index beside what the server has to cache them.

An approximate search is fast only while its index is in memory: at 768 dimensions a vector
takes about 3 KB, and pgvector fits two of them on an 8 KB page, so an index needs about 4 KB
a row. `memory()` measures the table and its vector index, reads `shared_buffers` and
`effective_cache_size` (and the machine's memory where the server will say it), and projects
the sizes at `growth` times the rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from .display import Table
from .display.extras import need
from .errors import PgvkitError
from .indexes import search_index
from .server.db import connect

__all__ = ["Memory", "memory", "plot_memory", "index_bytes_per_row", "Budget", "budget", "parse_size", "size_text",
           "check_cache", "short_budget", "rewarm"]

PAGE = 8192

# a relation and, when it is partitioned, every partition (a partitioned table or index has no
# storage of its own: pg_table_size says 0 bytes for a table of millions of rows)
# (pg_partition_tree lists nothing for a plain table or index: then the relation's own size)
TREE_SIZE = ("SELECT coalesce((SELECT sum({size}(relid)) FROM pg_partition_tree(r)), {size}(r))::bigint"
             " FROM (SELECT %s::regclass AS r) AS given")


def index_bytes_per_row(dims: int) -> float:
    """What a vector index costs a row before any is measured: whole vectors per 8 KB page (an
    index tuple is the vector, 4 bytes a dimension plus 8 of header, with ~24 bytes of tuple and
    line pointer; pgvector never splits one across pages)."""
    per_page = max(1, (PAGE - 24) // (4 * dims + 8 + 24))
    return PAGE / per_page


def size_text(n: float | None) -> str:
    """Bytes for people: "781.3 MB", "not reported" for None."""
    return _size(n)


def _size(n: float | None) -> str:
    if n is None:
        return "not reported"
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return ""  # pragma: no cover


@dataclass(repr=False)
class Memory(Table):
    database: str
    table: str
    rows_now: int
    table_bytes: int
    index: str | None  # "idx_embedding_cosine (ivfflat)"
    index_bytes: int
    per_row: float  # index bytes a row
    per_row_measured: bool
    shared_buffers: int
    effective_cache_size: int
    machine: int | None  # MemTotal, when the server reports it
    growth: int = 10

    @property
    def columns(self) -> tuple[str, ...]:
        return ("what", "now", self._later)

    @property
    def _later(self) -> str:
        return f"at {self.growth}x rows" if self.rows_now else "at 100,000 rows"

    @property
    def title(self) -> str:
        return f"Size against memory on {self.database}: {self.verdict}"

    @property
    def projected_index(self) -> float:
        return self.per_row * self.rows_now * self.growth if self.rows_now else self.per_row * 100_000

    @property
    def verdict(self) -> str:
        def where(n: float) -> str:
            if n <= self.shared_buffers:
                return "fits shared_buffers"
            if n <= self.effective_cache_size:
                return "fits the cache the planner assumes (effective_cache_size), not shared_buffers"
            return "exceeds effective_cache_size: searches will read from disk"
        if self.index is None:
            return "no vector index on the table"
        grown = f"at {self.growth}x the rows ({self.rows_now * self.growth:,})" if self.rows_now else "at 100,000 rows"
        return f"the vector index {where(self.index_bytes)}; {grown} it {where(self.projected_index)}"

    def rows(self) -> list[dict]:
        later = self._later
        grow = (lambda n: n * self.growth) if self.rows_now else (lambda n: None)
        basis = "measured" if self.per_row_measured else "estimated: too few rows to measure"
        return [
            {"what": "rows", "now": f"{self.rows_now:,}", later: f"{self.rows_now * self.growth or 100_000:,}"},
            {"what": f"table {self.table} (heap + TOAST)", "now": _size(self.table_bytes),
             later: _size(grow(self.table_bytes))},
            {"what": f"vector index {self.index or '(none)'}, {self.per_row:,.0f} bytes a row ({basis})",
             "now": _size(self.index_bytes), later: _size(self.projected_index)},
            {"what": "shared_buffers (PostgreSQL's own cache)", "now": _size(self.shared_buffers), later: ""},
            {"what": "effective_cache_size (what the planner assumes is cached)",
             "now": _size(self.effective_cache_size), later: ""},
            {"what": "machine memory (MemTotal, as the server reads it)", "now": _size(self.machine), later: ""},
        ]


def _machine_memory(conn) -> int | None:
    """MemTotal from the server's /proc/meminfo: needs superuser or pg_read_server_files, and a
    Linux server; None otherwise."""
    try:
        with conn.transaction():
            text = conn.execute("SELECT pg_read_file('/proc/meminfo', 0, 4096)").fetchone()[0]
    except psycopg.Error:
        return None
    for line in text.splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def _gb_up(n: float) -> str:
    """A size for a setting, rounded up: whole GB from 1 GB on, else MB."""
    return f"{-(-int(n) // 2**30)}GB" if n >= 2**30 else f"{-(-int(n) // 2**20)}MB"


def check_cache(conn, table: str = "ip_asset_embeddings"):
    """The live vector index against what the server caches, for verify: far more than
    effective_cache_size (the planner and pgvkit's memory budget then count it as read from disk),
    or more than shared_buffers (every search reads its pages through the operating system), with
    the setting to change."""
    from .checks import Check
    from .indexes import vector_indexes

    found = [(conn.execute(TREE_SIZE.format(size="pg_relation_size"), [i.identifier.as_string(conn)]).fetchone()[0], i)
             for i in vector_indexes(conn, table) if i.valid]  # two of them: the check of that name says so
    if not found:
        return Check("cache", "pass", "no vector index to cache")
    size, live = max(found, key=lambda f: f[0])
    shared, cache = (conn.execute("SELECT pg_size_bytes(current_setting(%s))", [n]).fetchone()[0]
                     for n in ("shared_buffers", "effective_cache_size"))
    machine = _machine_memory(conn)
    said = f"{live.name} takes {_size(size)}"
    if size > cache:
        want = max(size * 1.5, cache) if machine is None else min(max(size * 1.5, cache), machine * 3 // 4)
        return Check("cache", "warn", f"{said}, more than effective_cache_size ({_size(cache)}): the planner and "
                     "pgvkit's memory budget count it as read from disk", "effective_cache_size says how much the "
                     "server and the operating system cache together",
                     f"ALTER SYSTEM SET effective_cache_size = '{_gb_up(want)}'; SELECT pg_reload_conf();")
    if size > shared:
        want = size * 1.3 if machine is None else min(size * 1.3, machine * 2 // 5)
        return Check("cache", "warn", f"{said}, more than shared_buffers ({_size(shared)}): every search reads its "
                     "pages through the operating system's cache", "shared_buffers is PostgreSQL's own cache",
                     f"ALTER SYSTEM SET shared_buffers = '{_gb_up(want)}'; then restart the server (embedded: "
                     "pgvkit db stop && pgvkit db start)")
    return Check("cache", "pass", f"{live.name} fits within shared_buffers ({_size(shared)})")


def memory(url: str, table: str = "ip_asset_embeddings", *, growth: int = 10) -> Memory:
    """The table and its live vector index against shared_buffers, effective_cache_size and the
    machine's memory, now and at `growth` times the rows."""
    with connect(url) as conn:
        ident = sql.Identifier(table)
        rows = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(ident)).fetchone()[0]
        table_bytes = conn.execute(TREE_SIZE.format(size="pg_table_size"), [ident.as_string(conn)]).fetchone()[0]
        dims = conn.execute(
            "SELECT atttypmod FROM pg_attribute WHERE attrelid = %s::regclass AND attname = 'embedding'",
            [ident.as_string(conn)]).fetchone()
        dims = dims[0] if dims and dims[0] > 0 else 768
        live = search_index(conn, table)
        index_bytes = 0
        if live is not None:
            index_bytes = conn.execute(TREE_SIZE.format(size="pg_relation_size"),
                                       [sql.Identifier(live.schema, live.name).as_string(conn)]).fetchone()[0]
        settings = dict(conn.execute(
            "SELECT name, setting::bigint * pg_size_bytes(coalesce(nullif(unit, ''), '1')) FROM pg_settings"
            " WHERE name IN ('shared_buffers', 'effective_cache_size')").fetchall())
        machine = _machine_memory(conn)
        database = conn.info.dbname
    measured = live is not None and rows >= 1000
    per_row = index_bytes / rows if measured else index_bytes_per_row(dims)
    kind = f", {live.kind.name}" if live and live.kind and live.kind.name != "vector" else ""
    return Memory(database, table, rows, table_bytes, f"{live.name} ({live.method}{kind})" if live else None,
                  index_bytes, per_row, measured, settings["shared_buffers"], settings["effective_cache_size"],
                  machine, growth)


def plot_memory(report: Memory):
    """Bars: the vector index now and at 10x the rows, beside shared_buffers, effective_cache_size
    and the machine's memory (log scale: they differ by orders of magnitude)."""
    plt = need("matplotlib.pyplot", "the memory plot")
    names = ["index now", f"index {report._later}", "shared_buffers", "effective_cache_size"]
    values = [report.index_bytes, report.projected_index, report.shared_buffers, report.effective_cache_size]
    colours = ["#4c72b0", "#8fa8d8", "#55a868", "#c0d9a8"]
    if report.machine:
        names.append("machine memory")
        values.append(report.machine)
        colours.append("#999999")
    fig, ax = plt.subplots(figsize=(8, 3.2))
    ax.barh(names[::-1], [max(v, 1) / 2**20 for v in values[::-1]], color=colours[::-1])
    ax.set_xscale("log")
    from .display.figures import plain_ticks

    plain_ticks(ax.xaxis)
    ax.set_xlabel("MB (log scale)")
    ax.set_ylabel("what must fit / what there is")
    for y, v in enumerate(values[::-1]):
        ax.text(max(v, 1) / 2**20, y, " " + _size(v), va="center", fontsize=8)
    ax.set_title(f"{report.table}: vector index against memory", fontsize=10)
    fig.tight_layout()
    return fig


_UNITS = {"": 1, "b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def parse_size(text: str) -> int:
    """A size as PostgreSQL writes one ("512MB", "2GB", "1.5 GB", "800kB"; MiB/GiB too; plain
    bytes) into bytes; one line naming the form on anything else."""
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise PgvkitError(f"cannot read the size {text!r}: write a number and a unit as PostgreSQL does, e.g. 512MB, "
                          "2GB or 800kB")
    return int(float(m.group(1)) * _UNITS[m.group(2).lower()])


@dataclass(frozen=True)
class Budget:
    """Memory the search index may take, and how that figure was reached."""

    bytes: int
    how: str

    def __str__(self) -> str:
        return f"{_size(self.bytes)} ({self.how})"


def short_budget(url: str, budget: Budget, need: float, what: str) -> str | None:
    """One line when `budget` cannot hold the smallest index (`need` bytes, `what` in words): by how
    much to raise effective_cache_size, and the statement (None: it can)."""
    if budget.bytes >= need:
        return None
    if budget.how == "given":
        return (f"the memory budget {_size(budget.bytes)} cannot hold {what} (~{_size(need)}): every candidate would be "
                f"over it; pass --memory-budget {_gb_up(need * 1.2)} or more (or none)")
    with connect(url) as conn:
        cache = conn.execute("SELECT pg_size_bytes(current_setting('effective_cache_size'))").fetchone()[0]
    more = need - budget.bytes
    return (f"the memory budget {_size(budget.bytes)} cannot hold {what} (~{_size(need)}): every candidate would be "
            f"over it; raise effective_cache_size by {_size(more)}: ALTER SYSTEM SET effective_cache_size = "
            f"'{_gb_up(cache + more)}'; SELECT pg_reload_conf(); (or pass --memory-budget none)")


def budget(url: str, table: str = "ip_asset_embeddings") -> Budget:
    """What the server's cache leaves for the search index: effective_cache_size (PostgreSQL's
    figure for shared_buffers plus the operating system's cache; capped by the machine's memory
    when the server reports it) less what searches read besides the index: the table's rows
    without their vectors (a search returns k of them; the vectors stay in TOAST, unread), its
    other indexes, and the vectors of the largest owner search_assets reads whole (the exact
    route of 003_search_assets_by_owner); with the vectors stored inline (pgvkit storage) the
    rows with them, the owners' vectors among them."""
    from .search import exact_owner_rows

    with connect(url) as conn:
        ident = sql.Identifier(table).as_string(conn)
        settings = dict(conn.execute(
            "SELECT name, setting::bigint * pg_size_bytes(coalesce(nullif(unit, ''), '1')) FROM pg_settings"
            " WHERE name IN ('shared_buffers', 'effective_cache_size')").fetchall())
        machine = _machine_memory(conn)
        heap = conn.execute(TREE_SIZE.format(size="pg_relation_size"), [ident]).fetchone()[0]
        few = exact_owner_rows(conn)
        owner_rows = conn.execute(sql.SQL(
            "SELECT coalesce(max(n), 0), coalesce(avg(pg_column_size(embedding)), 0) FROM (SELECT count(*) AS n"
            " FROM {} GROUP BY owner_id HAVING count(*) <= %s) o, (SELECT embedding FROM {} LIMIT 100) v").format(
            sql.Identifier(table), sql.Identifier(table)), [few]).fetchone() if few else (0, 0)
        # vectors stored inline (pgvkit storage): the heap holds them, the owners' ones among them
        inline = conn.execute("SELECT attstorage IN ('m', 'p') FROM pg_attribute WHERE attrelid = %s::regclass"
                              " AND attname = 'embedding'", [ident]).fetchone()
        inline = bool(inline and inline[0])
        owner_bytes = 0 if inline else int(owner_rows[0] * float(owner_rows[1]))
        other = conn.execute(
            "SELECT coalesce(sum(coalesce((SELECT sum(pg_relation_size(t.relid)) FROM pg_partition_tree(i.indexrelid) t),"
            " pg_relation_size(i.indexrelid))), 0)::bigint FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_am am ON am.oid = c.relam WHERE i.indrelid = %s::regclass AND am.amname NOT IN ('ivfflat', 'hnsw')",
            [ident]).fetchone()[0]
    cache = max(settings["effective_cache_size"], settings["shared_buffers"])
    capped = machine is not None and machine < cache
    cache = min(cache, machine) if capped else cache
    left = max(0, cache - heap - int(other) - owner_bytes)
    source = "machine memory" if capped else "effective_cache_size"
    owner = f", and the largest owner searches read whole {_size(owner_bytes)}" if owner_bytes else ""
    rows = "the rows with their vectors inline" if inline else "the rows without their vectors"
    return Budget(left, f"{source} {_size(cache)} less what searches read besides the index: {rows} "
                        f"{_size(heap)}, the other indexes {_size(int(other))}{owner}")


def rewarm(conn, table: str = "ip_asset_embeddings", column: str = "embedding") -> str:
    """After pgvkit streamed the whole table (recall, confirm: every vector's TOAST pages pass
    through shared_buffers and push the vector index out; measured at 1,000,000 rows: p95 of the
    application's searches 13 ms afterwards), read the live vector index back in with pg_prewarm
    when the database has it and the index fits shared_buffers. One line to say; "" when there is
    nothing to do."""
    from .indexes import searched_index

    live = searched_index(conn, table, column=column)
    if live is None:
        return ""
    name = live.identifier.as_string(conn)
    size, streamed, buffers = conn.execute(
        "SELECT pg_relation_size(%s::regclass), pg_table_size(%s::regclass), current_setting('shared_buffers')",
        [name, live.table_identifier.as_string(conn)]).fetchone()
    room = parse_size(buffers)
    if size > 0.9 * room or size + streamed <= 0.9 * room:
        return ""  # it could not stay there anyway, or the stream and the index both fit: nothing was pushed out
    if not conn.execute("SELECT to_regproc('pg_prewarm') IS NOT NULL").fetchone()[0]:
        return (f"NOTE: the stream read {table}'s vectors through shared_buffers, so searches read {live.name} from "
                "the operating system's cache until their own use brings it back; with the pg_prewarm extension "
                "(CREATE EXTENSION pg_prewarm) pgvkit reads it back in after streaming")
    try:
        with conn.transaction():
            # three passes: in a pool the stream filled, the first pass evicts some of its own pages as it
            # goes (the clock sweep); the next bring them back and raise every page's usage count (an index
            # of 73 % of shared_buffers: 56 % of it there after one pass, 88 % after two, all after three)
            for _ in range(3):
                conn.execute("SELECT pg_prewarm(%s::regclass)", [name])
    except psycopg.errors.InsufficientPrivilege:
        return f"NOTE: only the owner of {live.name} may read it back into shared_buffers (pg_prewarm) after the stream"
    return f"read {live.name} back into shared_buffers after the stream ({size_text(size)}, pg_prewarm)"
