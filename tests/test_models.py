"""Embedding models: a table of another dimension is verified as it is, and a second model's
column is added, searched and taken back by migrations pgvkit writes (pgvkit model add)."""

import json

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector

from pgvkit.demo import real_embeddings
from pgvkit.verify import verify

from .conftest import MIGRATIONS, psql_file, run_cli

HEALTH = ("ivfflat lists", "zero vectors", "null embeddings", "query plan", "search settings", "search function")


@pytest.fixture
def another_tools_table(db_url, tmp_path):
    """ip_asset_embeddings as another tool made it: the seed's schema with vector(1024) and an HNSW
    index, 3,000 real embeddings lifted to 1,024 dimensions, no pgvkit history."""
    ddl = (MIGRATIONS / "001_init_vector_store.sql").read_text()
    ddl = ddl.replace("vector(768)", "vector(1024)").replace(
        "USING ivfflat (embedding vector_cosine_ops) WITH (lists = 100)", "USING hnsw (embedding vector_cosine_ops)")
    (tmp_path / "theirs.sql").write_text(ddl)
    psql_file(db_url, tmp_path / "theirs.sql")
    vectors = real_embeddings(dims=1024)[:3000]
    with psycopg.connect(db_url) as conn:
        register_vector(conn)
        with conn.cursor().copy("COPY ip_asset_embeddings (asset_id, owner_id, embedding) FROM STDIN"
                                " WITH (FORMAT BINARY)") as copy:
            copy.set_types(["varchar", "varchar", "vector"])
            for i, v in enumerate(vectors):
                copy.write_row([f"s3://assets/{i}.jpg", f"owner {i % 7}", v])
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("ANALYZE ip_asset_embeddings")
    return db_url


def test_verify_checks_a_table_of_1024_dimensions_made_by_another_tool_as_it_is(another_tools_table):
    report = verify(another_tools_table, migrations_dir=MIGRATIONS)
    checks = {c.name: c for c in report.checks}
    assert checks["columns"].status == "pass"
    assert "embedding vector(1024) as declared (no model recorded)" in checks["columns"].detail
    ran = [name for name in HEALTH if name in checks]
    assert ran == list(HEALTH)  # the health checks ran, at 1,024 dimensions
    assert [(n, checks[n].detail) for n in ran if checks[n].status == "fail"] == []
    assert "uses idx_embedding_cosine" in checks["query plan"].detail


def test_verify_asked_for_another_dimension_names_both(another_tools_table):
    report = verify(another_tools_table, dimension=768, migrations_dir=MIGRATIONS)
    columns = next(c for c in report.checks if c.name == "columns")
    assert columns.status == "fail"
    assert "embedding is vector(1024), expected vector(768)" in columns.detail
