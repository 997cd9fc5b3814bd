"""Vector input: what cannot go into vector(N) is refused before it reaches the server, saying
what was expected; what is accepted arrives bit for bit."""

import json
import os

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pgvector.psycopg import register_vector
from psycopg import sql

from pgvkit.data.bulk import Column, copy_arrays
from pgvkit.data.inserts import load, smoke, unload
from pgvkit.migrator.scratch import fresh_database
from pgvkit.vectors import BadVector, as_vector, as_vectors, read_vector_file

from .conftest import run_cli

DIM = 4


@pytest.fixture(scope="module")
def vector_table(admin_url):
    """One database for the whole module with a vector(4) table the properties write into."""
    name = f"pgvkit_vectors_{os.getpid()}"
    url = fresh_database(admin_url, name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
        conn.execute(f"CREATE TABLE v (id bigserial, embedding vector({DIM}) NOT NULL)")
    yield url
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.mark.parametrize("value, message", [
    ([0.1, 0.2, 0.3], "embedding has 3 numbers; expected 4 finite numbers for vector(4)"),
    ([], "embedding is empty; expected 4"),
    ("[]", "embedding is empty; expected 4"),
    ([1, float("nan"), 1, 1], "embedding element 1 is NaN; expected 4"),
    ("[1, 2, Infinity, 4]", "embedding element 2 is infinite; expected 4"),
    ([1, 2, 3, 1e39], "embedding element 3 is 1e+39, too large for pgvector's 32-bit floats"),
    ([1, "2", 3, 4], "embedding element 1 is '2' (str), not a number; expected 4"),
    ([1, None, 3, 4], "embedding element 1 is None (NoneType), not a number"),
    ([True, 0, 0, 1], "embedding element 0 is True (bool), not a number"),
    ([1j, 0, 0, 1], "embedding element 0 is 1j (complex), not a number"),
    ([[1, 2], [3, 4]], "embedding must be a flat list of numbers, got shape (2, 2)"),
    (None, "embedding must be a list of numbers, not NoneType"),
    ("0.1 0.2 0.3 0.4", "embedding '0.1 0.2 0.3 0.4' is not a vector literal like [0.1, 0.2, ...]"),
    ([0, 0, 0.0, 0], "embedding is all zeros: its cosine distance to anything is NaN"),
    ([1e-50, 0, 0, 0], "embedding is all zeros"),  # underflows to 0 in float32
])
def test_each_kind_of_bad_vector_is_refused_saying_what_was_expected(value, message):
    with pytest.raises(BadVector) as caught:
        as_vector(value, DIM)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_a_bad_row_among_many_is_named_by_its_row_and_element():
    rows = np.ones((1000, DIM), np.float32)
    rows[617, 2] = np.inf
    with pytest.raises(BadVector, match=r"^embeddings row 617 element 2 is infinite; expected 4"):
        as_vectors(rows, DIM)
    with pytest.raises(BadVector, match=r"^embeddings row 1 has 3 numbers"):
        as_vectors([[1, 2, 3, 4], [1, 2, 3]], DIM)
    with pytest.raises(BadVector, match=r"^embeddings: none given"):
        as_vectors(np.zeros((0, DIM)), DIM)


def test_the_server_would_store_a_zero_vector_that_no_cosine_search_can_rank(vector_table):
    """Why zeros are refused: pgvector accepts them, and their cosine distance is NaN."""
    with psycopg.connect(vector_table) as conn:
        distance = conn.execute("SELECT '[0,0,0,0]'::vector <=> '[1,2,3,4]'::vector").fetchone()[0]
    assert np.isnan(distance)


# -- properties -------------------------------------------------------------------------------

numbers_and_not = st.one_of(
    st.floats(width=64), st.floats(width=32), st.integers(-10**40, 10**40), st.decimals(allow_nan=True),
    st.booleans(), st.none(), st.text(max_size=3), st.lists(st.floats(), max_size=2),
)
as_lists = st.lists(numbers_and_not, max_size=DIM + 2)
as_literals = st.lists(st.floats(width=32) | st.integers(-1000, 1000), max_size=DIM + 2).map(json.dumps)
as_arrays = hnp.arrays(st.sampled_from([np.float32, np.float64, np.int64, np.bool_, np.complex64]),
                       st.sampled_from([(DIM,), (DIM - 1,), (0,), (2, DIM)]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=as_lists | as_literals | as_arrays)
def test_any_input_is_stored_bit_exact_or_refused_before_the_server_sees_it(vector_table, value):
    try:
        vector = as_vector(value, DIM)
    except BadVector as exc:
        assert "expected" in str(exc) and f"{DIM}" in str(exc) and "\n" not in str(exc)
        return
    assert vector.dtype == np.float32 and vector.shape == (DIM,)
    assert np.isfinite(vector).all() and vector.any()
    numbers = json.loads(value) if isinstance(value, str) else value
    assert np.array_equal(vector, np.asarray([float(x) for x in numbers], dtype=np.float32))
    with psycopg.connect(vector_table) as conn:  # accepted means the server takes it, unchanged
        register_vector(conn)
        stored = conn.execute("INSERT INTO v (embedding) VALUES (%s) RETURNING embedding", [vector]).fetchone()[0]
        conn.rollback()
    assert np.array_equal(stored.to_numpy(), vector)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=hnp.arrays(np.float32, st.tuples(st.integers(1, 30), st.just(DIM)),
                       elements=st.floats(width=32, allow_nan=True, allow_infinity=True)))
def test_a_matrix_is_copied_bit_exact_or_refused_whole(vector_table, rows):
    try:
        checked = as_vectors(rows, DIM)
    except BadVector as exc:
        bad_row = int(str(exc).split(" row ")[1].split()[0])
        assert not (np.isfinite(rows[bad_row]).all() and rows[bad_row].any())  # the row named is really bad
        assert all(np.isfinite(r).all() and r.any() for r in rows[:bad_row])  # and it is the first one
        return
    with psycopg.connect(vector_table) as conn:
        register_vector(conn)
        start = conn.execute("SELECT coalesce(max(id), 0) FROM v").fetchone()[0]
    copy_arrays(vector_table, sql.Identifier("v"), [Column("embedding", checked)], jobs=1)
    with psycopg.connect(vector_table) as conn:
        register_vector(conn)
        stored = [r[0].to_numpy() for r in conn.execute("SELECT embedding FROM v WHERE id > %s ORDER BY id", [start])]
    assert np.array_equal(np.stack(stored), rows)


# -- where vectors come in ----------------------------------------------------------------------

def identity_position(url) -> tuple:
    """The table's identity sequence: a COPY that reached the server moves it, even rolled back."""
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT last_value, is_called FROM ip_asset_embeddings_id_seq").fetchone()


def test_a_load_with_one_bad_row_sends_nothing(migrated):
    rows = np.random.default_rng(0).normal(size=(5000, 768)).astype(np.float32)
    rows[4999, 100] = np.nan
    before = identity_position(migrated)
    with pytest.raises(BadVector, match=r"row 4999 element 100 is NaN; expected 768 finite numbers"):
        load(migrated, vectors=rows, progress=False)
    assert identity_position(migrated) == before  # no row reached the server, not even to be rolled back


def test_a_smoke_test_with_a_wrong_vector_sends_nothing_and_with_a_right_one_passes(migrated):
    before = identity_position(migrated)
    with pytest.raises(BadVector, match=r"^embedding has 3 numbers; expected 768"):
        smoke(migrated, embedding="[0.1, 0.2, 0.3]")  # the seed README's test insert
    assert identity_position(migrated) == before
    mine = np.random.default_rng(1).normal(size=768).tolist()
    report = smoke(migrated, embedding=mine)
    assert report.ok and "from your embedding" in report.steps[0].detail


def test_your_vectors_load_from_files_and_unload(migrated, tmp_path):
    rng = np.random.default_rng(2)
    mine = rng.normal(size=(300, 768)).astype(np.float32)
    np.save(tmp_path / "mine.npy", mine)
    (tmp_path / "one.json").write_text(json.dumps(mine[0].tolist()))
    (tmp_path / "lines.txt").write_text("\n".join(json.dumps(v.tolist()) for v in mine[:3]) + "\n\n")
    assert np.array_equal(read_vector_file(tmp_path / "one.json", 768), mine[:1])
    assert np.array_equal(read_vector_file(tmp_path / "lines.txt", 768), mine[:3])
    proc = run_cli("load", "--from", str(tmp_path / "mine.npy"), "--json", "--database-url", migrated,
                   "--confirm-database", psycopg.conninfo.conninfo_to_dict(migrated)["dbname"])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rows"] == 300
    with psycopg.connect(migrated) as conn:
        register_vector(conn)
        stored = conn.execute("SELECT embedding FROM ip_asset_embeddings ORDER BY asset_id LIMIT 1").fetchone()[0]
    assert np.array_equal(stored.to_numpy(), mine[0])
    assert unload(migrated) == 300


@pytest.mark.parametrize("content, message", [
    (b"[" + b",".join([b"0.5"] * 768) + b"]\n\n[" + b",".join([b"0.5"] * 767) + b"]\n",
     "vectors.txt line 3 has 767 numbers; expected 768"),
    (b"\xff\xfe[1]", "cannot read vectors ('utf-8' codec can't decode"),
    (b"[1, 2,", "vectors.txt line 1 '[1, 2,' is not a vector literal"),
])
def test_a_bad_vector_file_is_one_line_naming_the_line_and_nothing_is_loaded(migrated, tmp_path, content, message):
    path = tmp_path / "vectors.txt"
    path.write_bytes(content)
    proc = run_cli("load", "--from", str(path), "--database-url", migrated,
                   "--confirm-database", psycopg.conninfo.conninfo_to_dict(migrated)["dbname"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert identity_position(migrated) == (1, False)
