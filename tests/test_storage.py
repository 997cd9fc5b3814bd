"""pgvkit storage: where the vectors live, and the migration that moves them into the table's
pages, each owner's rows side by side (a small owner read whole by search_assets then reads a few
pages instead of a TOAST lookup a row). It is written for the table as the team named it, applies
through pgvkit migrate (plan names what the rewrite locks), and its rollback puts back the storage
and the clustered index that stood before."""

import json
import shutil

import psycopg
import pytest
from psycopg import sql

from pgvkit import Migrator
from pgvkit.memory import budget

from .conftest import MIGRATIONS, run_cli
from .teamdata import load_team_rows, partitioned_database

OUT_OF_LINE = "SELECT count(*) FILTER (WHERE pg_column_toast_chunk_id(embedding) IS NOT NULL) FROM ip_asset_embeddings"  # PostgreSQL 17+
# rows whose owner sorts before the row stored just ahead of it, partition by partition: 0 once clustered by owner
UNORDERED = ("SELECT count(*) FROM (SELECT owner_id, lag(owner_id) OVER (PARTITION BY tableoid ORDER BY ctid) AS ahead"
             " FROM ip_asset_embeddings) s WHERE owner_id < ahead")
STATE = ("SELECT a.attstorage::text, (SELECT i.relname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
         " WHERE x.indrelid = a.attrelid AND x.indisclustered), (SELECT bool_and(indisvalid) FROM pg_index"
         " WHERE indrelid = a.attrelid) FROM pg_attribute a WHERE a.attrelid = 'ip_asset_embeddings'::regclass"
         " AND a.attname = 'embedding'")


def state(url):
    with psycopg.connect(url) as conn:
        return (*conn.execute(STATE).fetchone(), conn.execute(OUT_OF_LINE).fetchone()[0],
                conn.execute(UNORDERED).fetchone()[0])


def roll_back_to_3(url, where):
    return run_cli("rollback", "--to", "3", "--yes", *where,
                   "--confirm-database", psycopg.conninfo.conninfo_to_dict(url)["dbname"])


def own_copy(url, tmp_path):
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations)
    return migrations, ("--database-url", url, "--migrations", str(migrations))


def test_the_vectors_move_inline_clustered_by_owner_under_a_warned_rewrite_and_the_rollback_restores_the_storage(
        migrated, tmp_path):
    load_team_rows(migrated, 2_000)
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("DROP INDEX idx_embedding_cosine")
        conn.execute("CREATE INDEX idx_embedding_cosine ON ip_asset_embeddings USING hnsw (embedding vector_cosine_ops)")
        owner = conn.execute("SELECT owner_id FROM ip_asset_embeddings GROUP BY 1 ORDER BY count(*), 1 LIMIT 1"
                             ).fetchone()[0]
        q = conn.execute("SELECT embedding FROM ip_asset_embeddings ORDER BY id LIMIT 1").fetchone()[0]
        search = ("SELECT array_agg(id ORDER BY distance, id) FROM search_assets(%s::vector, 10, %s)", [q, owner])
        found_before = conn.execute(*search).fetchone()[0]
    migrations, where = own_copy(migrated, tmp_path)
    assert state(migrated)[0] == "e" and state(migrated)[3] == 2_000 and state(migrated)[4] > 0  # pgvector's default

    told = run_cli("storage", *where)
    assert told.returncode == 0 and "storage EXTERNAL, 2,000 rows" in told.stdout, told.stdout
    assert "the vectors are out of line (TOAST); not clustered; owner index idx_owner_id" in told.stdout
    assert not list(migrations.glob("004_*"))  # without --write-migration nothing is written
    wrote = run_cli("storage", "--write-migration", *where)
    assert wrote.returncode == 0, wrote.stderr
    up, down = migrations / "004_inline_vectors.sql", migrations / "004_inline_vectors.down.sql"
    assert 'CLUSTER "public"."ip_asset_embeddings" USING "idx_owner_id";' in up.read_text()
    assert "idx_embedding_cosine (hnsw," in up.read_text()  # the header names every index the rewrite rebuilds

    planned = run_cli("plan", "--json", *where)
    warnings = [w for w in json.loads(planned.stdout)["warnings"] if "rewrites" in w]
    assert len(warnings) == 1 and warnings[0].startswith("004_inline_vectors:"), warnings
    assert "CLUSTER rewrites ip_asset_embeddings (" in warnings[0] and "ACCESS EXCLUSIVE" in warnings[0]
    assert "2,000 rows" in warnings[0] and "idx_embedding_cosine (hnsw" in warnings[0]
    applied = run_cli("migrate", *where)
    assert applied.returncode == 0, applied.stderr
    assert state(migrated) == ("m", "idx_owner_id", True, 0, 0)  # inline, ordered by owner, every index rebuilt
    how = budget(migrated).how  # the memory budget counts the heap as what it now is, the owners' vectors in it
    assert "the rows with their vectors inline" in how and "largest owner" not in how, how
    with psycopg.connect(migrated) as conn:
        assert conn.execute(*search).fetchone()[0] == found_before  # the same answers from the rewritten table
    again = run_cli("storage", "--write-migration", *where)
    assert again.returncode == 0 and "nothing to write" in again.stdout and not list(migrations.glob("005_*"))

    back = roll_back_to_3(migrated, where)
    assert back.returncode == 0, back.stderr
    assert state(migrated)[:3] == ("e", None, True)  # the storage and the clustered index as they were
    with psycopg.connect(migrated, autocommit=True) as conn:  # a row written now goes out of line again
        conn.execute("INSERT INTO ip_asset_embeddings (asset_id, owner_id, embedding) SELECT 'after',"
                     " owner_id, embedding FROM ip_asset_embeddings ORDER BY id LIMIT 1")
        assert conn.execute("SELECT pg_column_toast_chunk_id(embedding) IS NOT NULL FROM ip_asset_embeddings"
                            " WHERE asset_id = 'after'").fetchone()[0]


def test_the_teams_own_names_and_the_clustered_index_it_had_come_back_on_rollback(db_url, tmp_path):
    schema = "Vector Store"
    escaped = schema.replace(" ", "\\ ")  # libpq's options: a space in a value escaped by a backslash
    url = psycopg.conninfo.make_conninfo(db_url, options=f'-c search_path="{escaped}",public')
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    Migrator(url, MIGRATIONS, echo=lambda _: None).migrate()
    load_team_rows(url, 300)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute('ALTER INDEX idx_owner_id RENAME TO "Owner Lookup"')
        conn.execute("ALTER TABLE ip_asset_embeddings CLUSTER ON ip_asset_embeddings_pkey")
    migrations, where = own_copy(url, tmp_path)
    assert run_cli("storage", "--write-migration", *where).returncode == 0
    assert 'CLUSTER "Vector Store"."ip_asset_embeddings" USING "Owner Lookup";' in (
        migrations / "004_inline_vectors.sql").read_text()
    assert run_cli("migrate", *where).returncode == 0
    assert state(url) == ("m", "Owner Lookup", True, 0, 0)
    back = roll_back_to_3(url, where)
    assert back.returncode == 0, back.stderr
    assert state(url)[:3] == ("e", "ip_asset_embeddings_pkey", True)


def test_without_an_owner_index_it_says_how_to_make_one_and_no_cluster_rewrites_in_no_order(migrated, tmp_path):
    load_team_rows(migrated, 300)
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("DROP INDEX idx_owner_id")
    migrations, where = own_copy(migrated, tmp_path)
    refused = run_cli("storage", "--write-migration", *where)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert ("no btree index led by owner_id for CLUSTER to order the rows by: create one (CREATE INDEX ON "
            '"public"."ip_asset_embeddings" (owner_id))') in refused.stderr and "--no-cluster" in refused.stderr
    assert run_cli("storage", "--write-migration", "--no-cluster", *where).returncode == 0
    up = (migrations / "004_inline_vectors.sql").read_text()
    assert up.startswith("-- pgvkit:no-transaction\n") and 'VACUUM (FULL) "public"."ip_asset_embeddings";' in up
    assert run_cli("migrate", *where).returncode == 0
    assert state(migrated)[:4] == ("m", None, True, 0)


def test_a_partitioned_table_is_rewritten_partition_by_partition_outside_a_transaction(make_database, tmp_path):
    url = partitioned_database(make_database(), 1_000)
    migrations, where = own_copy(url, tmp_path)
    assert run_cli("baseline", *where).returncode == 0 and run_cli("migrate", *where).returncode == 0
    assert state(url)[3] == 1_000
    wrote = run_cli("storage", "--write-migration", *where)
    assert wrote.returncode == 0, wrote.stderr
    up = (migrations / "004_inline_vectors.sql").read_text()
    assert up.startswith("-- pgvkit:no-transaction\n")  # CLUSTER of a partitioned table cannot run in one
    applied = run_cli("migrate", *where)
    assert applied.returncode == 0, applied.stderr
    assert state(url)[0] == "m" and state(url)[2:] == (True, 0, 0)  # every partition inline and ordered by owner
    assert roll_back_to_3(url, where).returncode == 0
    assert state(url)[0] == "e"


@pytest.mark.parametrize("storage, said", [("MAIN", "storage MAIN"), ("EXTERNAL", "storage EXTERNAL")])
def test_the_report_says_the_columns_storage_as_set(migrated, storage, said):
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE ip_asset_embeddings ALTER COLUMN embedding SET STORAGE {storage}")
    told = run_cli("storage", "--json", "--database-url", migrated)
    assert told.returncode == 0 and json.loads(told.stdout)["storage"] == storage[0].lower()
    assert said in run_cli("storage", "--database-url", migrated).stdout
