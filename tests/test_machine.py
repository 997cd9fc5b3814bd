"""The embedded server sized for its machine (pgtune's rules), each setting with its reason in
pgvkit.conf, never over the user's own; verify says when the live index outgrows the cache."""

import psycopg
import pytest
from psycopg import sql

from pgvkit.data.inserts import load
from pgvkit.health.verify import verify
from pgvkit.server.embedded import EmbeddedServer
from pgvkit.server.machine import Machine, sized

from .conftest import MIGRATIONS, run_cli

GB = 1 << 30


@pytest.mark.parametrize("memory, cores, shared, cache, maintenance, workers", [
    (24 * GB, 2, "6GB", "18GB", "1536MB", "1"),
    (8 * GB, 4, "2048MB", "6GB", "512MB", "3"),
    (2 * GB, 1, "512MB", "1536MB", "128MB", "1"),
    (256 * GB, 64, "64GB", "192GB", "2048MB", "4"),
])
def test_settings_follow_the_machine_as_pgtune_sizes_them(memory, cores, shared, cache, maintenance, workers):
    found = {s.name: s.value for s in sized(Machine(memory, cores))}
    assert (found["shared_buffers"], found["effective_cache_size"], found["maintenance_work_mem"],
            found["max_parallel_maintenance_workers"]) == (shared, cache, maintenance, workers)
    assert all(s.reason for s in sized(Machine(memory, cores)))


def test_the_server_runs_with_them_and_keeps_what_the_user_set(tmp_path):
    server = EmbeddedServer(tmp_path / "home").start()
    try:
        want = {s.name: s.value for s in sized(Machine.here())}
        with psycopg.connect(server.url()) as conn:
            running = {n: conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(n))).fetchone()[0] for n in want}
        assert running == want
        conf = (server.pgdata / "pgvkit.conf").read_text()
        assert all(f"{n} = '{v}'  # " in conf for n, v in want.items())  # each with its reason
        with (server.pgdata / "postgresql.conf").open("a") as f:  # the user's own, in their file
            f.write("\nshared_buffers = 256MB\n")
        with psycopg.connect(server.url(), autocommit=True) as conn:
            conn.execute("ALTER SYSTEM SET effective_cache_size = '3GB'")
        server.stop()
        server.start()
        with psycopg.connect(server.url()) as conn:
            assert conn.execute("SHOW shared_buffers").fetchone() == ("256MB",)
            assert conn.execute("SHOW effective_cache_size").fetchone() == ("3GB",)
            assert conn.execute("SHOW max_wal_size").fetchone() == (want["max_wal_size"],)
        status = run_cli("db", "status", env={"PGVKIT_HOME": str(server.home)})
        assert "shared_buffers = yours (postgresql.conf)" in status.stdout
        assert "effective_cache_size = yours (ALTER SYSTEM)" in status.stdout
        assert f"maintenance_work_mem = {want['maintenance_work_mem']}" in status.stdout
    finally:
        server.destroy()


def test_verify_says_when_the_index_outgrows_the_cache_with_the_line_to_change(migrated):
    load(migrated, 3000, progress=False)
    assert verify(migrated, migrations_dir=MIGRATIONS)["cache"].status == "pass"
    with psycopg.connect(migrated, autocommit=True) as conn:  # a server sized for another machine
        database = conn.info.dbname
        conn.execute(sql.SQL("ALTER DATABASE {} SET effective_cache_size = '1MB'").format(sql.Identifier(database)))
    check = verify(migrated, migrations_dir=MIGRATIONS)["cache"]
    assert check.status == "warn" and "more than effective_cache_size (1.0 MB)" in check.detail, check
    assert check.fix.startswith("ALTER SYSTEM SET effective_cache_size = '") and "pg_reload_conf()" in check.fix


def test_the_budget_counts_what_searches_read_and_one_no_index_fits_is_said_before_any_build(migrated):
    from pgvkit.memory import Budget, budget, short_budget
    from pgvkit.tuning import tune

    from .test_tuning import SMALL_GRID

    load(migrated, 3000, progress=False)
    with psycopg.connect(migrated) as conn:
        heap, toast = conn.execute("SELECT pg_relation_size('ip_asset_embeddings'), pg_table_size("
                                   "'ip_asset_embeddings') - pg_relation_size('ip_asset_embeddings')").fetchone()
    assert toast > 10 * heap  # the vectors: a search returns k rows and reads none of them
    found = budget(migrated)
    assert "the rows without their vectors" in found.how and "largest owner searches read whole" in found.how
    said = []  # a budget given too small for any index of the table
    tune(migrated, target=0.5, rows=3000, queries=20, grid=SMALL_GRID, memory_budget=2**20, progress=False,
         echo=said.append)
    [warning] = [i for i, line in enumerate(said) if line.startswith("WARNING: the memory budget 1.0 MB cannot hold")]
    assert warning < min(i for i, line in enumerate(said) if line.startswith("building "))
    assert said[warning].endswith("or more (or none)") and "pass --memory-budget " in said[warning]
    with psycopg.connect(migrated) as conn:
        cache = conn.execute("SELECT pg_size_bytes(current_setting('effective_cache_size'))").fetchone()[0]
    short = short_budget(migrated, Budget(2**30, "effective_cache_size ..."), 3 * 2**30, "an index")
    assert f"raise effective_cache_size by 2.0 GB: ALTER SYSTEM SET effective_cache_size = " \
           f"'{-(-(cache + 2 * 2**30) // 2**30)}GB'; SELECT pg_reload_conf();" in short, short


def test_after_streaming_the_table_the_audit_reads_the_index_back_into_shared_buffers(tmp_path):
    """A server whose shared_buffers (16MB, the user's) hold the HNSW index of 3,000 real rows but
    not the table's vectors too: pgvkit recall streams every vector through shared_buffers, then
    reads the index back in with pg_prewarm (which the embedded server creates), every page of it
    there afterwards; without pg_prewarm it says how to get it."""
    from pgvkit import Migrator
    from pgvkit.audit.recall import audit

    from .conftest import real_embeddings

    server = EmbeddedServer(tmp_path / "home").start()
    try:
        with (server.pgdata / "postgresql.conf").open("a") as f:
            f.write("\nshared_buffers = 16MB\n")
        server.stop()
        server.start()
        url = server.url()
        Migrator(url, MIGRATIONS, echo=lambda _: None).migrate()
        load(url, vectors=real_embeddings()[:3000], progress=False)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP INDEX idx_embedding_cosine")
            conn.execute("CREATE INDEX idx_embedding_cosine ON ip_asset_embeddings USING hnsw (embedding vector_cosine_ops)")
            conn.execute("CREATE EXTENSION pg_buffercache")
            index, table = conn.execute("SELECT pg_relation_size('idx_embedding_cosine') / 8192,"
                                        " pg_table_size('ip_asset_embeddings') / 8192").fetchone()
        assert index < 0.9 * 2048 < index + table  # 16MB is 2,048 pages: the index fits, not with the vectors

        def cached() -> int:
            with psycopg.connect(url) as conn:
                return conn.execute("SELECT count(*) FROM pg_buffercache WHERE relfilenode = pg_relation_filenode("
                                    "'idx_embedding_cosine') AND reldatabase = (SELECT oid FROM pg_database"
                                    " WHERE datname = current_database())").fetchone()[0]

        said = []
        audit(url, sample=200, queries=real_embeddings()[-200:], progress=False, record=False, echo=said.append)
        assert any(line.startswith("read idx_embedding_cosine back into shared_buffers after the stream") for line in said)
        assert cached() == index
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("DROP EXTENSION pg_prewarm")
        said.clear()
        audit(url, sample=200, queries=real_embeddings()[-200:], progress=False, record=False, echo=said.append)
        assert any("CREATE EXTENSION pg_prewarm" in line for line in said if line.startswith("NOTE:"))
        assert cached() < index  # what the stream leaves without it
    finally:
        server.destroy()
