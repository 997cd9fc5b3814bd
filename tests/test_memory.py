"""Size against memory (02_verify): measured on a real table and index, projected from what a
row costs, against the server's own settings."""

import psycopg

from pgvkit.data.inserts import load
from pgvkit.memory import index_bytes_per_row, memory

from .conftest import as_role


def test_an_empty_table_is_projected_from_what_a_768_dimension_row_costs(migrated):
    report = memory(migrated)
    assert report.rows_now == 0 and not report.per_row_measured
    assert report.per_row == index_bytes_per_row(768) == 4096  # two 768-d vectors per 8 KB page
    assert report.projected_index == 4096 * 100_000
    assert report.columns == ("what", "now", "at 100,000 rows")


def test_a_loaded_table_is_measured_and_projected_at_ten_times_its_rows(migrated):
    load(migrated, 2000, progress=False)
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("REINDEX INDEX idx_embedding_cosine")
        index = conn.execute("SELECT pg_relation_size('idx_embedding_cosine')").fetchone()[0]
        shared = conn.execute("SELECT pg_size_bytes(current_setting('shared_buffers'))").fetchone()[0]
    report = memory(migrated)
    assert report.per_row_measured and report.index_bytes == index
    assert report.projected_index == index / 2000 * 2000 * 10
    assert 3000 < report.per_row < 6000  # about 4 KB a row at 768 dimensions
    assert report.shared_buffers == shared
    assert report.index == "idx_embedding_cosine (ivfflat)"
    assert "the vector index fits shared_buffers" in report.title
    assert report.machine and report.machine > report.index_bytes  # a superuser may read MemTotal


def test_a_role_that_may_not_read_server_files_gets_no_machine_memory_and_no_error(migrated, make_role):
    role = make_role("pw-x")
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute(f'GRANT SELECT ON ip_asset_embeddings TO "{role}"')
    report = memory(as_role(migrated, role, "pw-x"))
    assert report.machine is None
    assert any(r["now"] == "not reported" for r in report.rows())
