"""Backfilling a new model's column from a file of embeddings keyed by asset_id or id, while the
application reads and writes the table.

The file is staged once in an unlogged table (`pgvkit.backfill_<column>`, binary COPY, indexed
by key). Then the table is walked in id order, a batch at a time: each batch fills the rows that
still have no embedding in the column, and records where it stopped (`pgvkit.backfills`) in the
same transaction, so a run killed at any moment resumes at the first batch not committed, and
the result is the one an uninterrupted run gives. A batch waits at most `lock_timeout` for a row
the application holds (then it is retried); batches are sized to take about `batch_seconds`, and
the run pauses between them so that it works `duty` of the time (the application's searches and
writes get the rest). Rows the application inserts meanwhile are walked too (ids grow); rows it
deletes are simply not there; a row is never filled twice (only where the column IS NULL). One
backfill per column at a time (an advisory lock). At the end: a pass for rows the walk could not
see, the staging dropped, VACUUM (ANALYZE) for the dead row versions the updates left.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from pgvector import HalfVector
from pgvector.psycopg import register_vector
from psycopg import sql

from ..display import Echo, echo_to, progress_bar
from ..errors import PgvkitError
from ..schema.models import ModelColumn, models
from ..server.db import connect, mask_url, scrub
from .keyed import read_keyed

__all__ = ["backfill", "Backfill", "BackfillRunning", "PROGRESS_DDL"]

PROGRESS_DDL = """CREATE TABLE IF NOT EXISTS pgvkit.backfills (
    table_name  text NOT NULL,
    column_name text NOT NULL,
    source      text NOT NULL,
    checksum    text NOT NULL,
    staged      bigint NOT NULL,
    next_id     bigint NOT NULL DEFAULT 0,
    filled      bigint NOT NULL DEFAULT 0,
    started_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    PRIMARY KEY (table_name, column_name)
)"""


class BackfillRunning(PgvkitError):
    """Another backfill of the same column holds its lock."""


@dataclass
class Backfill:
    """What a run did: rows filled (this run and in all), rows walked, rows still without one."""

    column: str
    model: str
    filled: int
    filled_total: int
    walked: int
    missing: int  # rows of the table still without an embedding in the column
    seconds: float
    resumed_at: int | None  # the id a killed run had reached, when this one resumed it
    duplicates: int = 0  # keys given more than once in the file (the last one is used)

    def __str__(self) -> str:
        resumed = f" (resumed at id {self.resumed_at:,})" if self.resumed_at else ""
        dup = f"; {self.duplicates:,} keys appeared more than once in the file, the last one was used" \
            if self.duplicates else ""
        left = (f"; {self.missing:,} rows have no {self.model} embedding (their keys are not in the file)"
                if self.missing else "; every row has one")
        return (f"{self.column}: filled {self.filled:,} rows in {self.seconds:.1f} s{resumed} ({self.filled_total:,} "
                f"by this backfill in all){left}{dup}")


def _column(conn, table: str, name: str) -> ModelColumn:
    found = [m for m in models(conn, table) if name in (m.column, m.model) and m.state != "retired"]
    if not found or found[0].column == "embedding":
        raise PgvkitError(f"no second model {name!r} on {table}: pgvkit model list shows them; add one with "
                          "pgvkit model add NAME --dimensions D, then pgvkit migrate")
    return found[0]


def _checksum(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _stage(conn, staging: sql.Identifier, model: ModelColumn, key: str, keys: list, vectors) -> int:
    """(Re)create the staging table from the file; the last vector given for a key wins."""
    last = {k: i for i, k in enumerate(keys)}
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(staging))
    conn.execute(sql.SQL("CREATE UNLOGGED TABLE {} (key {} PRIMARY KEY, embedding {})").format(
        staging, sql.SQL("bigint" if key == "id" else "text"), sql.SQL(model.type_name)))
    with conn.cursor().copy(sql.SQL("COPY {} (key, embedding) FROM STDIN WITH (FORMAT BINARY)").format(staging)) as cp:
        cp.set_types(["int8" if key == "id" else "text", model.kind])
        wrap = HalfVector if model.kind == "halfvec" else (lambda v: v)  # numpy arrays dump as vector only
        for k, i in last.items():
            cp.write_row([k, wrap(vectors[i])])
    conn.execute(sql.SQL("ANALYZE {}").format(staging))
    return len(last)


NOTHING_LEFT = 2**63 - 1  # a walk from here finds no row: every row the file names has its embedding


def backfill(url: str, name: str, path, **options) -> Backfill:
    """Fill the column of the model `name` (its name or its column's) from `path` (see
    pgvkit.keyed), resuming a run that was stopped; see the module's doc for how. A connection
    lost on the way (a server restarted or killed) is one line: the same command resumes it."""
    from ..server.pooler import require_session

    require_session(url, mask_url(url), "pgvkit model backfill")  # its advisory lock is a session's
    try:
        return _backfill(url, name, path, **options)
    except psycopg.OperationalError as exc:
        said = " ".join(str(exc.diag.message_primary or exc).split()) or "the connection was closed"
        raise PgvkitError(f"lost the connection to the server during the backfill ({scrub(said, url)}); once the server "
                          "is back, run the same command again: it resumes where it stopped") from None


def _backfill(url: str, name: str, path, *, table: str = "ip_asset_embeddings", batch_rows: int = 500,
              batch_seconds: float = 0.25, duty: float = 0.5, lock_timeout: str = "2s", vacuum: bool = True,
              restart: bool = False, progress: bool = True, echo: Echo | None = None) -> Backfill:
    echo = echo or echo_to()
    if not 0 < duty <= 1:
        raise PgvkitError(f"--duty {duty}: the share of time the backfill works, above 0 and at most 1 (e.g. 0.5)")
    path = Path(path)
    start = time.perf_counter()
    with connect(url, autocommit=True, application_name="pgvkit backfill", long_steps=True) as conn:
        register_vector(conn)
        model = _column(conn, table, name)
        lock = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [f"pgvkit backfill {table}.{model.column}"])
        if not lock.fetchone()[0]:
            raise BackfillRunning(f"another backfill of {model.column} is running (pg_stat_activity: application_name "
                                  "'pgvkit backfill'); wait for it, or stop it: it resumes where it stopped")
        key, keys, vectors = read_keyed(path, model.dimensions)
        checksum = _checksum(path)
        conn.execute(PROGRESS_DDL)
        staging = sql.Identifier("pgvkit", f"backfill_{model.column}"[:63])
        row = conn.execute("SELECT checksum, source, next_id, finished_at IS NOT NULL, staged,"
                           " (SELECT count(*) FROM pg_class WHERE oid = to_regclass(%s)) FROM pgvkit.backfills"
                           " WHERE table_name = %s AND column_name = %s",
                           [staging.as_string(conn), table, model.column]).fetchone()
        resumed_at = None
        if row and not row[3] and row[0] != checksum and not restart:
            raise PgvkitError(f"a backfill of {model.column} from {row[1]} stopped at id {row[2]:,}: run it again with "
                              "that file to resume, or pass --restart to start over from this one")
        if row and not row[3] and row[0] == checksum:
            resumed_at = row[2]
            staged = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(staging)).fetchone()[0] if row[5] else -1
            if staged != row[4]:  # gone, or emptied by a crash (an unlogged table): stage it again
                staged = _stage(conn, staging, model, key, keys, vectors)
            echo(f"resuming the backfill of {model.column} at id {resumed_at:,}")
        else:
            staged = _stage(conn, staging, model, key, keys, vectors)
            conn.execute("INSERT INTO pgvkit.backfills (table_name, column_name, source, checksum, staged)"
                         " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (table_name, column_name) DO UPDATE SET"
                         " source = excluded.source, checksum = excluded.checksum, staged = excluded.staged, next_id = 0,"
                         " filled = 0, started_at = now(), updated_at = now(), finished_at = NULL",
                         [table, model.column, path.name, checksum, staged])
        names = dict(t=sql.Identifier(table), col=sql.Identifier(model.column), key=sql.Identifier(key),
                     staging=staging)
        next_id = resumed_at
        if next_id is None:  # from the first row the file has an embedding for and the column lacks: a second
            # file (the rows an old application version inserted meanwhile) skips the rows filled before
            first = conn.execute(sql.SQL("SELECT min(t.id) FROM {t} AS t JOIN {staging} AS s ON s.key = t.{key}"
                                         " WHERE t.{col} IS NULL").format(**names)).fetchone()[0]
            next_id = first if first is not None else NOTHING_LEFT
        walk = sql.SQL("SELECT id FROM {t} WHERE id >= %(next)s ORDER BY id LIMIT %(n)s").format(**names)
        filled, walked = _walk(conn, names, walk, table, model.column, next_id, batch_rows, batch_seconds, duty,
                               lock_timeout, progress)
        # rows the walk passed before they existed (an id given by hand below it): one more pass
        late = sql.SQL("SELECT t.id FROM {t} AS t JOIN {staging} AS s ON s.key = t.{key} WHERE t.{col} IS NULL"
                       " AND t.id >= %(next)s ORDER BY t.id LIMIT %(n)s").format(**names)
        more, _ = _walk(conn, names, late, table, model.column, 0, batch_rows, batch_seconds, duty, lock_timeout,
                        False, record=False)
        total = conn.execute("UPDATE pgvkit.backfills SET finished_at = now(), updated_at = now(), filled = filled + %s"
                             " WHERE table_name = %s AND column_name = %s RETURNING filled",
                             [more, table, model.column]).fetchone()[0]
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(staging))
        missing = conn.execute(sql.SQL("SELECT count(*) FROM {t} WHERE {col} IS NULL").format(**names)).fetchone()[0]
        if vacuum:
            echo(f"VACUUM (ANALYZE) {table}: the updates left a dead row version each")
            conn.execute(sql.SQL("VACUUM (ANALYZE) {}").format(names["t"]))
    return Backfill(model.column, model.model, filled + more, total, walked, missing, time.perf_counter() - start,
                    resumed_at, len(keys) - staged)


def _walk(conn, names: dict, ids: sql.Composed, table: str, column: str, next_id: int, batch_rows: int,
          batch_seconds: float, duty: float, lock_timeout: str, progress: bool, *, record: bool = True):
    """Fill batch after batch of the ids `ids` yields from next_id on; returns (filled, walked)."""
    fill = sql.SQL("WITH ids AS ({ids}), done AS (UPDATE {t} AS t SET {col} = s.embedding FROM ids, {staging} AS s"
                   " WHERE t.id = ids.id AND s.key = t.{key} AND t.{col} IS NULL RETURNING t.id)"
                   " SELECT (SELECT max(id) FROM ids), (SELECT count(*) FROM ids), (SELECT count(*) FROM done)").format(
        ids=ids, **names)
    todo = conn.execute(sql.SQL("SELECT count(*) FROM {t} WHERE id >= %s").format(**names), [next_id]).fetchone()[0]
    bar = progress_bar(total=todo, desc=f"backfill {column}", unit="row", enabled=progress)
    filled = walked = 0
    n = batch_rows
    try:
        while True:
            began = time.perf_counter()
            try:
                with conn.transaction():
                    conn.execute(sql.SQL("SET LOCAL lock_timeout = {}").format(sql.Literal(lock_timeout)))
                    last, seen, done = conn.execute(fill, {"next": next_id, "n": n}).fetchone()
                    if last is not None and record:
                        conn.execute("UPDATE pgvkit.backfills SET next_id = %s, filled = filled + %s, updated_at = now()"
                                     " WHERE table_name = %s AND column_name = %s", [last + 1, done, table, column])
            except psycopg.errors.LockNotAvailable:  # a row the application holds: the same batch, smaller
                n = max(10, n // 2)
                continue
            if last is None:
                return filled, walked
            next_id, filled, walked = last + 1, filled + done, walked + seen
            bar.update(seen)
            took = time.perf_counter() - began
            n = int(min(10_000, max(10, n * min(2.0, batch_seconds / max(took, 1e-3)))))
            if duty < 1:
                time.sleep(took * (1 - duty) / duty)  # the application's share of the time
    finally:
        bar.close()
