"""Bulk loading of numpy arrays: PostgreSQL's binary COPY format encoded in one numpy pass (no
per-row Python), streamed over several connections at once, committed together.

pgvector-python's loading example writes row by row with ``copy.write_row``; that costs a few
microseconds of Python per row and leaves the server waiting. Here every row has the same
layout (fixed-width text, int8, vector), so the whole batch is one structured array whose bytes
are the COPY stream.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from psycopg import sql

from ..server.db import connect, is_local
from ..server.timeouts import lift

__all__ = ["Column", "encode", "copy_arrays", "default_jobs", "read_vectors", "stream_vectors"]

_HEADER = b"PGCOPY\n\xff\r\n\x00" + (0).to_bytes(4, "big") + (0).to_bytes(4, "big")
_TRAILER = (-1).to_bytes(2, "big", signed=True)


@dataclass(frozen=True)
class Column:
    """One column of the COPY: its name and its values (int64 array, bytes array of one width, or a
    2-D float32 array for vector)."""

    name: str
    values: np.ndarray

    @property
    def kind(self) -> str:
        if self.values.ndim == 2:
            return "vector"
        if self.values.dtype.kind == "S":
            return "text"
        if self.values.dtype.kind in "iu":
            return "int8"
        raise TypeError(f"column {self.name}: unsupported dtype {self.values.dtype}")


def _row_dtype(columns: Sequence[Column]) -> np.dtype:
    fields = [("nfields", ">i2")]
    for i, c in enumerate(columns):
        fields.append((f"len{i}", ">i4"))
        if c.kind == "int8":
            fields.append((f"val{i}", ">i8"))
        elif c.kind == "text":
            fields.append((f"val{i}", f"S{c.values.dtype.itemsize}"))
        else:
            dim = c.values.shape[1]
            fields += [(f"dim{i}", ">i2"), (f"unused{i}", ">i2"), (f"val{i}", ">f4", (dim,))]
    return np.dtype(fields)


def _payload_size(c: Column) -> int:
    return {"int8": 8, "text": c.values.dtype.itemsize}.get(c.kind) or 4 + 4 * c.values.shape[1]


def encode(columns: Sequence[Column], lo: int = 0, hi: int | None = None, *, header: bool = True,
           trailer: bool = True) -> bytes:
    """Rows lo..hi of the columns in binary COPY format, with the stream's header and trailer
    (leave them out for the middle pieces of one stream)."""
    n = (len(columns[0].values) if hi is None else hi) - lo
    rows = np.empty(n, dtype=_row_dtype(columns))
    rows["nfields"] = len(columns)
    for i, c in enumerate(columns):
        rows[f"len{i}"] = _payload_size(c)
        if c.kind == "vector":
            rows[f"dim{i}"] = c.values.shape[1]
            rows[f"unused{i}"] = 0
        rows[f"val{i}"] = c.values[lo:lo + n]
    return (_HEADER if header else b"") + rows.tobytes() + (_TRAILER if trailer else b"")


def default_jobs(url: str) -> int:
    """Connections to load with: every core of a server on this machine, else two."""
    return max(1, os.cpu_count() or 1) if is_local(url) else 2


def copy_arrays(url: str, table: sql.Composable, columns: Sequence[Column], *, jobs: int | None = None,
                batch: int = 2000, progress: Callable[[int], None] | None = None) -> int:
    """COPY the columns into table over `jobs` connections in parallel; all commit, or none does
    (each connection commits only once every one of them has streamed its share)."""
    n = len(columns[0].values)
    jobs = max(1, min(jobs or default_jobs(url), -(-n // batch)))
    query = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT BINARY)").format(
        table, sql.SQL(", ").join(sql.Identifier(c.name) for c in columns))
    conns = [connect(url, application_name="pgvkit load") for _ in range(jobs)]
    for conn in conns:  # each streams in one transaction, then waits for the others: long by design
        lift(conn, local=True)
    errors: list[BaseException] = []
    lock = threading.Lock()
    bounds = np.linspace(0, n, jobs + 1).astype(int)

    def stream(conn, lo: int, hi: int) -> None:
        try:
            with conn.cursor() as cur, cur.copy(query) as copy:
                for start in range(lo, hi, batch):
                    stop = min(start + batch, hi)
                    copy.write(encode(columns, start, stop, header=start == lo, trailer=stop == hi))
                    if progress:
                        with lock:
                            progress(stop - start)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller's thread below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=stream, args=(c, bounds[i], bounds[i + 1]), daemon=True)
                   for i, c in enumerate(conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        for c in conns:
            c.commit()
    finally:
        for c in conns:
            c.close()  # an uncommitted connection rolls back on close
    return n


def stream_vectors(conn, query: sql.Composable, dim: int, chunk_rows: int = 20_000
                   ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(ids, vectors) of a query returning (bigint, vector(dim)) rows, NULL-free, read as one
    binary COPY and decoded a chunk of `chunk_rows` at a time: memory stays bounded whatever
    the table's size."""
    copy_sql = sql.SQL("COPY ({}) TO STDOUT WITH (FORMAT BINARY)").format(query)
    dtype = _row_dtype([Column("id", np.zeros(0, np.int64)), Column("v", np.zeros((0, dim), np.float32))])
    buf, started = bytearray(), False

    def decode(n: int):
        rows = np.frombuffer(bytes(buf[: n * dtype.itemsize]), dtype=dtype)
        del buf[: n * dtype.itemsize]
        return rows["val0"].astype(np.int64), rows["val1"].astype(np.float32)

    with conn.cursor() as cur, cur.copy(copy_sql) as copy:
        for block in copy:
            buf += block
            if not started:
                if len(buf) < len(_HEADER):
                    continue
                start = len(_HEADER) + int.from_bytes(buf[15:19], "big")  # signature, flags, extension area
                if len(buf) < start:
                    continue
                del buf[:start]
                started = True
            if len(buf) >= chunk_rows * dtype.itemsize:
                yield decode(len(buf) // dtype.itemsize)
    n = (len(buf) - len(_TRAILER)) // dtype.itemsize
    if n > 0:
        yield decode(n)


def read_vectors(conn, query: sql.Composable, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids, vectors) of a query returning (bigint, vector(dim)) rows, all at once."""
    chunks = list(stream_vectors(conn, query, dim, chunk_rows=1 << 62))
    if not chunks:
        return np.zeros(0, np.int64), np.zeros((0, dim), np.float32)
    return np.concatenate([c[0] for c in chunks]), np.concatenate([c[1] for c in chunks])
