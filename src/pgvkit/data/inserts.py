"""Test inserts: a smoke test that always rolls back, and tagged bulk loads with binary COPY.

The seed's snippet inserts vector(3) into the vector(768) column, which fails on any real server;
here the dimension is read from the catalog.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass, field

import numpy as np
import psycopg
from pgvector.psycopg import register_vector
from psycopg import sql

from .. import search
from ..display import Table, progress_bar
from ..errors import PgvkitError
from ..server.db import connect
from ..vectors import as_vector, as_vectors

__all__ = ["smoke", "SmokeReport", "SmokeFailed", "load", "unload", "LoadResult", "synthetic", "Synthetic",
           "column_dimension", "LOAD_TAG"]

LOAD_TAG = "pgvkit-load-"  # owner_id prefix of every loaded row, so unload removes exactly them


@dataclass(frozen=True)
class Step:
    name: str
    status: str
    detail: str


@dataclass(repr=False)
class SmokeReport(Table):
    database: str
    steps: list[Step] = field(default_factory=list)
    columns = ("name", "status", "detail")
    colour_by = "status"

    @property
    def ok(self) -> bool:
        return all(s.status == "pass" for s in self.steps)

    @property
    def title(self) -> str:
        return f"Smoke test on {self.database}: {'passed' if self.ok else 'FAILED'} (rolled back, no rows left)"

    def rows(self) -> list[dict]:
        return [asdict(s) for s in self.steps]

    def to_dict(self) -> dict:
        return {"database": self.database, "ok": self.ok, "steps": self.rows()}


class SmokeFailed(PgvkitError):
    def __init__(self, report: SmokeReport):
        self.report = report
        bad = next(s for s in report.steps if s.status != "pass")
        super().__init__(f"smoke test failed at '{bad.name}': {bad.detail} (nothing was kept; run pgvkit doctor)")


def column_dimension(conn, table: str = "ip_asset_embeddings", column: str = "embedding") -> int:
    """The declared dimension of a vector column, from the catalog."""
    row = conn.execute(
        "SELECT atttypmod FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attname = %s AND NOT attisdropped",
        [sql.Identifier(table).as_string(conn), column],
    ).fetchone()
    if row is None:
        raise PgvkitError(f"{table}.{column} does not exist; run pgvkit migrate (or pgvkit doctor)")
    if row[0] <= 0:
        raise PgvkitError(f"{table}.{column} has no fixed dimension; declare it as vector(N)")
    return row[0]


def smoke(url: str, *, table: str = "ip_asset_embeddings", embedding=None,
          raise_on_failure: bool = True) -> SmokeReport:
    """Insert test rows, read them back, search by operator and view, fire the trigger; roll back.

    `embedding` (optional): one of your model's vectors to test with (a list, numpy array or
    ``'[...]'`` literal), checked against the column before anything is sent (BadVector if it
    cannot go in); by default a random unit vector."""
    with connect(url) as conn:
        report = SmokeReport(conn.info.dbname)
        tbl = sql.Identifier(table)

        def run(name, fn):
            if not report.ok:
                return
            try:
                detail = fn()
                report.steps.append(Step(name, "pass", detail))
            except (psycopg.Error, PgvkitError, AssertionError) as exc:
                report.steps.append(Step(name, "fail", " ".join(str(exc).split()) or type(exc).__name__))

        try:
            dim = column_dimension(conn, table)
        except PgvkitError as exc:
            report.steps.append(Step("setup", "fail", str(exc)))
        else:
            given = None if embedding is None else as_vector(embedding, dim)  # BadVector: nothing sent
            with conn.transaction():  # always rolled back below: the table keeps its rows
                register_vector(conn)
                tag = f"pgvkit-smoke-{uuid.uuid4().hex[:8]}"
                rng = np.random.default_rng(7)
                if given is None:
                    base = rng.normal(size=dim)
                    base = (base / np.linalg.norm(base)).astype(np.float32)
                else:
                    base = given
                noise = rng.normal(size=dim)
                near = base + noise * (0.01 * np.linalg.norm(base) / np.linalg.norm(noise))
                vectors = [base, near.astype(np.float32), -base]
                ids = [f"{tag}-{i}" for i in range(3)]

                def insert():
                    with conn.cursor() as cur:
                        cur.executemany(
                            sql.SQL("INSERT INTO {} (asset_id, owner_id, embedding, metadata)"
                                    " VALUES (%s, %s, %s, '{{\"smoke\": true}}')").format(tbl),
                            [(i, tag, v) for i, v in zip(ids, vectors)])
                    return f"3 rows of vector({dim}){'' if given is None else ' from your embedding'}"

                def read_back():
                    got = dict(conn.execute(sql.SQL("SELECT asset_id, embedding FROM {} WHERE owner_id = %s").format(tbl),
                                            [tag]).fetchall())
                    assert set(got) == set(ids), f"read back {sorted(got)}"
                    for i, v in zip(ids, vectors):
                        assert np.array_equal(got[i].to_numpy(), v), f"{i} came back different"
                    return "all 3 embeddings identical (float32)"

                def operator():
                    conn.execute("SET LOCAL enable_indexscan = off")  # exact answer, whatever the index
                    rows = conn.execute(sql.SQL("SELECT asset_id, embedding <=> %s AS d FROM {} WHERE owner_id = %s"
                                                " ORDER BY d LIMIT 3").format(tbl), [vectors[0], tag]).fetchall()
                    assert [r[0] for r in rows] == ids, f"order {[r[0] for r in rows]}"
                    assert abs(rows[0][1]) < 1e-6 and abs(rows[2][1] - 2) < 1e-5, f"distances {rows}"
                    return "<=> ranks test rows 0, 1, 2 at cosine distance 0 .. 2"

                def view():
                    rows = conn.execute("SELECT similar_asset_id FROM similar_assets WHERE source_asset_id = %s"
                                        " AND similar_owner_id = %s ORDER BY distance", [ids[0], tag]).fetchall()
                    assert rows and rows[0][0] == ids[1], f"similar_assets gave {rows}"
                    return "similar_assets: nearest to test row 0 is test row 1"

                def search_function():
                    if not search.exists(conn):
                        return f"no {search.SIGNATURE} yet (pgvkit migrate adds it): skipped"
                    rows = conn.execute(f"SELECT asset_id, true AS {search.KIT_MARK} FROM {search.FUNCTION}(%s, 3, %s)",
                                        [vectors[0], tag]).fetchall()
                    assert [r[0] for r in rows] == ids, f"{search.FUNCTION} gave {[r[0] for r in rows]}"
                    top = conn.execute(f"SELECT asset_id, true AS {search.KIT_MARK} FROM {search.FUNCTION}(%s, 1)",
                                       [vectors[0]]).fetchone()
                    assert top is not None, f"{search.FUNCTION} without an owner returned nothing"
                    return f"{search.FUNCTION}(v, 3, owner) ranks test rows 0, 1, 2, as the application calls it"

                def trigger():
                    row = conn.execute(sql.SQL("UPDATE {} SET updated_at = '2000-01-01', metadata = '{{}}'"
                                               " WHERE asset_id = %s RETURNING updated_at = now()").format(tbl),
                                       [ids[0]]).fetchone()
                    assert row == (True,), "updated_at was not reset by the trigger"
                    return "update sets updated_at = now()"

                run("insert", insert)
                run("read back", read_back)
                run("similarity operator", operator)
                run("similar_assets view", view)
                run("search_assets function", search_function)
                run("updated_at trigger", trigger)
                raise psycopg.Rollback()
    if raise_on_failure and not report.ok:
        raise SmokeFailed(report)
    return report


class Synthetic:
    """A source of embeddings shaped like a real image model's: clustered, each cluster spread
    mostly along a few directions of its own (real embeddings have a low intrinsic dimension),
    normalised. Uniform noise would make every point nearly equidistant, and nearest-neighbour
    recall meaningless. Each `draw` gives new points from the same clusters, so queries drawn
    later are "fresh" but near the data."""

    def __init__(self, dim: int = 768, *, clusters: int = 50, spread: float = 0.35, intrinsic: int = 16,
                 seed: int = 0):
        self.dim, self.spread = dim, spread
        self.rng = np.random.default_rng(seed)
        centres = self.rng.standard_normal(size=(clusters, dim), dtype=np.float32)
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
        basis = self.rng.standard_normal(size=(clusters, intrinsic, dim), dtype=np.float32)
        self.basis = basis / np.linalg.norm(basis, axis=2, keepdims=True)

    def draw(self, n: int) -> np.ndarray:
        which = self.rng.integers(0, len(self.centres), size=n)
        x = self.centres[which].copy()
        intrinsic = self.basis.shape[1]
        for c in np.unique(which):
            rows = np.flatnonzero(which == c)
            z = self.rng.standard_normal(size=(len(rows), intrinsic), dtype=np.float32)
            x[rows] += (z @ self.basis[c]) * np.float32(self.spread / np.sqrt(intrinsic))
        # a little isotropic noise on top, as any model has
        x += self.rng.standard_normal(size=x.shape, dtype=np.float32) * np.float32(0.1 * self.spread / np.sqrt(self.dim))
        return x / np.linalg.norm(x, axis=1, keepdims=True)


def synthetic(rows: int, dim: int = 768, *, clusters: int = 50, spread: float = 0.35, queries: int = 0,
              seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`rows` embeddings and `queries` held-out query vectors from one `Synthetic` source."""
    source = Synthetic(dim, clusters=clusters, spread=spread, seed=seed)
    return source.draw(rows), source.draw(queries)


@dataclass
class LoadResult:
    rows: int
    seconds: float
    tag: str

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else float("inf")

    def __str__(self) -> str:
        return f"loaded {self.rows} rows tagged {self.tag}* in {self.seconds:.2f}s ({self.rows_per_second:,.0f} rows/s)"


def load(url: str, rows: int | None = None, *, vectors=None, table: str = "ip_asset_embeddings", seed: int = 0,
         clusters: int = 50, progress: bool = True, jobs: int | None = None) -> LoadResult:
    """Bulk-load `rows` synthetic embeddings, or your own `vectors` (a 2-D array or list of
    vectors, checked against the column before anything is sent), with binary COPY over `jobs`
    connections (default: every core of a local server). Rows are tagged so `unload` removes
    exactly them; all rows commit or none."""
    from .bulk import Column, copy_arrays

    if (rows is None) == (vectors is None):
        raise PgvkitError("load takes either rows (synthetic) or vectors (yours), not both or neither")
    with connect(url) as conn:
        dim = column_dimension(conn, table)
    if vectors is None:
        if rows < 1:
            raise PgvkitError(f"rows must be a positive number of rows, not {rows}; e.g. rows=10000")
        data, _ = synthetic(rows, dim, clusters=clusters, seed=seed)
        tag = f"{LOAD_TAG}{seed}-"
    else:
        data = as_vectors(vectors, dim)
        rows, tag = len(data), f"{LOAD_TAG}own-"
    numbers = np.char.zfill(np.arange(rows).astype("S"), len(str(max(rows - 1, 0))))
    columns = [Column("asset_id", np.char.add(tag.encode(), numbers)),
               Column("owner_id", np.char.add(f"{tag}owner-".encode(), np.char.zfill((np.arange(rows) % 100).astype("S"), 2))),
               Column("embedding", data)]
    start = time.perf_counter()
    with progress_bar(total=rows, unit="rows", desc="COPY", enabled=progress) as bar:
        copy_arrays(url, sql.Identifier(table), columns, jobs=jobs, progress=bar.update)
    return LoadResult(rows, time.perf_counter() - start, tag)


def unload(url: str, *, table: str = "ip_asset_embeddings") -> int:
    """Delete every row a load tagged; returns how many."""
    with connect(url) as conn:
        cur = conn.execute(sql.SQL("DELETE FROM {} WHERE owner_id LIKE %s").format(sql.Identifier(table)),
                           [LOAD_TAG + "%"])
        conn.commit()
        return cur.rowcount
