"""Binary COPY of numpy arrays over parallel connections: exact values, all-or-nothing."""

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector
from psycopg import sql

from pgvkit.data.bulk import Column, copy_arrays, encode


@pytest.fixture
def table(db_url):
    with psycopg.connect(db_url) as conn:
        conn.execute("CREATE EXTENSION vector")
        conn.execute("CREATE TABLE items (id bigint PRIMARY KEY, name varchar(20), embedding vector(5))")
    return db_url


def columns(n: int, start: int = 0):
    ids = np.arange(start, start + n, dtype=np.int64)
    names = np.char.add(b"item-", np.char.zfill(ids.astype("S"), 6))
    vectors = np.random.default_rng(start).standard_normal((n, 5), dtype=np.float32)
    return [Column("id", ids), Column("name", names), Column("embedding", vectors)]


def test_rows_arrive_exactly_over_several_connections(table):
    cols = columns(10_001)
    assert copy_arrays(table, sql.Identifier("items"), cols, jobs=3, batch=777) == 10_001
    with psycopg.connect(table) as conn:
        register_vector(conn)
        rows = conn.execute("SELECT id, name, embedding FROM items ORDER BY id").fetchall()
    assert [r[0] for r in rows] == list(range(10_001))
    assert rows[4321][1] == "item-004321"
    assert np.array_equal(np.stack([r[2].to_numpy() for r in rows]), cols[2].values)


def test_a_failure_in_one_connection_commits_nothing_from_any(table):
    with psycopg.connect(table) as conn:
        conn.execute("INSERT INTO items VALUES (9000, 'already here', '[0,0,0,0,1]')")
    with pytest.raises(psycopg.errors.UniqueViolation):
        copy_arrays(table, sql.Identifier("items"), columns(10_000), jobs=4, batch=500)
    with psycopg.connect(table) as conn:
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == 1


def test_the_encoded_stream_is_what_the_server_reads_from_a_file(table):
    """The same bytes through COPY FROM STDIN, checked against psycopg's own row-by-row writer."""
    cols = columns(3)
    with psycopg.connect(table) as conn:
        register_vector(conn)
        with conn.cursor().copy("COPY items FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.write(encode(cols))
        ours = conn.execute("SELECT * FROM items ORDER BY id").fetchall()
        conn.execute("TRUNCATE items")
        with conn.cursor().copy("COPY items FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["int8", "varchar", "vector"])
            for i in range(3):
                copy.write_row([int(cols[0].values[i]), cols[1].values[i].decode(), cols[2].values[i]])
        theirs = conn.execute("SELECT * FROM items ORDER BY id").fetchall()
    assert [(a, b, c.to_list()) for a, b, c in ours] == [(a, b, c.to_list()) for a, b, c in theirs]
