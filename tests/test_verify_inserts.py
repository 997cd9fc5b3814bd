"""Verification, smoke test and test loads against a real database, each failure reproduced."""

import signal
import subprocess
import sys

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector
from psycopg import sql

from pgvkit.data.inserts import LOAD_TAG, SmokeFailed, load, smoke, synthetic, unload
from pgvkit.health.verify import VerificationFailed, verify

from .conftest import MIGRATIONS, as_role, leave_invalid_index, run_cli


def count(url, where="true"):
    with psycopg.connect(url) as conn:
        query = sql.SQL("SELECT count(*) FROM ip_asset_embeddings WHERE ") + sql.SQL(where)
        return conn.execute(query).fetchone()[0]


def test_a_fresh_migration_verifies_with_only_health_warnings(migrated):
    report = verify(migrated)
    assert report.ok and report.exit_code == 0
    assert report["index idx_embedding_cosine"].detail.startswith("ivfflat on embedding vector_cosine_ops, lists=100")
    assert report["columns"].status == "pass" and "vector(768)" in report["columns"].detail
    assert report["search settings"].status == "warn" and "ALTER DATABASE" in report["search settings"].fix
    assert report["ivfflat lists"].status == "warn"
    assert "<table>" in report._repr_html_() and "index idx_asset_id" in str(report)


def test_a_dropped_index_fails_verification_with_the_fix(migrated):
    with psycopg.connect(migrated) as conn:
        conn.execute("DROP INDEX idx_owner_id")
    report = verify(migrated)
    assert report["index idx_owner_id"].status == "fail" and report.exit_code == 2
    with pytest.raises(VerificationFailed, match="index idx_owner_id: missing"):
        report.raise_for_failures()


def test_an_index_with_the_wrong_operator_class_is_caught(migrated):
    with psycopg.connect(migrated) as conn:
        conn.execute("DROP INDEX idx_embedding_cosine")
        conn.execute("CREATE INDEX idx_embedding_cosine ON ip_asset_embeddings USING ivfflat (embedding vector_l2_ops)"
                     " WITH (lists = 1)")
    report = verify(migrated)
    assert report["index idx_embedding_cosine"].status == "fail"
    assert "vector_l2_ops" in report["index idx_embedding_cosine"].detail
    assert report["query plan"].status == "fail"


def test_an_invalid_index_is_reported(migrated):
    leave_invalid_index(migrated, "idx_dup")
    report = verify(migrated)
    assert report["invalid indexes"].status == "fail" and "idx_dup" in report["invalid indexes"].detail


def test_a_revoked_grant_and_zero_vectors_are_caught(migrated, make_role):
    with psycopg.connect(migrated) as conn:
        conn.execute("INSERT INTO ip_asset_embeddings (asset_id, owner_id, embedding)"
                     " VALUES ('z', 'o', array_fill(0, ARRAY[768])::vector)")
    report = verify(migrated)
    assert report["zero vectors"].status == "warn" and "1 zero vectors" in report["zero vectors"].detail
    from pgvkit.health.verify import check_grants

    role = make_role()
    with psycopg.connect(migrated) as conn:
        conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE ON ip_asset_embeddings TO {}").format(sql.Identifier(role)))
        check = check_grants(conn, "ip_asset_embeddings", role)
    assert check.status == "fail" and "lacks DELETE" in check.detail and "GRANT" in check.fix


def test_verify_on_an_empty_database_fails_and_says_migrate(db_url):
    proc = run_cli("verify", "--database-url", db_url)
    assert proc.returncode == 2
    assert "ip_asset_embeddings does not exist" in proc.stdout and "pgvkit migrate" in proc.stdout


def test_smoke_passes_and_leaves_exactly_the_rows_that_were_there(migrated):
    load(migrated, 20, progress=False)
    before = count(migrated)
    report = smoke(migrated)
    assert report.ok and [s.name for s in report.steps][-1] == "updated_at trigger"
    assert count(migrated) == before == 20


def test_smoke_failing_leaves_no_rows_and_names_the_step(migrated):
    with psycopg.connect(migrated) as conn:
        conn.execute("ALTER TABLE ip_asset_embeddings DISABLE TRIGGER update_ip_asset_embeddings_updated_at")
    with pytest.raises(SmokeFailed, match="updated_at trigger"):
        smoke(migrated)
    assert count(migrated) == 0
    assert run_cli("smoke", "--database-url", migrated).returncode == 2


def test_smoke_killed_mid_run_leaves_no_rows(migrated):
    """SIGKILL while the smoke rows are inserted but not yet rolled back: the server drops them."""
    code = (
        "import os, signal, psycopg, pgvkit.data.inserts as i\n"
        "orig = psycopg.Connection.execute\n"
        "def execute(self, q, *a, **k):\n"
        "    if 'similar_assets' in str(q):\n"
        "        print('inserted', flush=True); os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return orig(self, q, *a, **k)\n"
        "psycopg.Connection.execute = execute\n"
        f"i.smoke({migrated!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL and "inserted" in proc.stdout
    assert count(migrated) == 0  # never committed: the killed session's rows die with it


def test_load_then_unload_removes_exactly_the_loaded_rows(migrated):
    with psycopg.connect(migrated) as conn:
        conn.execute("INSERT INTO ip_asset_embeddings (asset_id, owner_id, embedding)"
                     " VALUES ('real', 'team', array_fill(0.1, ARRAY[768])::vector)")
    result = load(migrated, 1234, progress=False, jobs=3)
    assert result.rows == 1234 and result.rows_per_second > 0
    expected, _ = synthetic(1234, 768)
    with psycopg.connect(migrated) as conn:
        register_vector(conn)
        stored = conn.execute("SELECT embedding FROM ip_asset_embeddings WHERE asset_id = %s",
                              [f"{LOAD_TAG}0-0777"]).fetchone()[0]
    assert np.array_equal(stored.to_numpy(), expected[777])  # bit-exact through the binary COPY
    assert count(migrated, f"owner_id LIKE '{LOAD_TAG}%'") == 1234
    assert unload(migrated) == 1234
    assert count(migrated) == 1 and count(migrated, "asset_id = 'real'") == 1


def test_load_and_unload_from_the_cli(migrated):
    name = psycopg.conninfo.conninfo_to_dict(migrated)["dbname"]
    refused = run_cli("load", "--rows", "300", "--database-url", migrated)
    assert refused.returncode == 2 and "--confirm-database " + name in refused.stderr
    assert count(migrated) == 0  # a live table gets test rows only with its name typed back
    proc = run_cli("load", "--rows", "300", "--json", "--database-url", migrated, "--confirm-database", name)
    assert proc.returncode == 0, proc.stderr
    assert count(migrated) == 300
    assert run_cli("unload", "--yes", "--database-url", migrated, "--confirm-database", name).returncode == 0
    assert count(migrated) == 0


def test_synthetic_embeddings_are_clustered_and_normalised():
    data, queries = synthetic(2000, 64, clusters=10, queries=50, seed=1)
    assert data.shape == (2000, 64) and queries.shape == (50, 64) and data.dtype == np.float32
    assert np.allclose(np.linalg.norm(data, axis=1), 1, atol=1e-5)
    sims = data @ data.T
    nearest = np.sort(sims, axis=1)[:, -2]  # best other row
    uniform = np.random.default_rng(1).normal(size=(2000, 64))
    uniform /= np.linalg.norm(uniform, axis=1, keepdims=True)
    assert nearest.mean() > 0.8 > np.sort(uniform @ uniform.T, axis=1)[:, -2].mean()


def test_reports_become_dataframes_coloured_by_status(migrated):
    report = verify(migrated)
    frame = report.to_frame()
    assert list(frame.columns) == ["name", "status", "detail", "fix"] and len(frame) == len(report.checks)
    assert set(frame["status"]) <= {"pass", "warn", "fail"}
    html = report.styled().to_html()
    assert "#fff3cd" in html and "#d4edda" in html  # warn and pass rows keep their colours


def loaded_with_probes(url: str, rows: int, probes: int) -> None:
    """rows loaded, the IVFFlat index rebuilt on them, search_assets bound to `probes`."""
    load(url, rows, progress=False)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("REINDEX INDEX idx_embedding_cosine")
        conn.execute("ANALYZE ip_asset_embeddings")
        conn.execute(sql.SQL("ALTER FUNCTION search_assets(vector, integer, text) SET ivfflat.probes = {}").format(
            sql.Literal(probes)))


def test_verify_reads_the_plan_of_the_statement_search_assets_runs(migrated):
    loaded_with_probes(migrated, 2000, 7)
    check = verify(migrated, migrations_dir=MIGRATIONS)["search function"]
    assert check.status == "pass" and check.detail.startswith("search_assets")
    assert "idx_embedding_cosine" in check.detail and "ivfflat.probes = 7" in check.detail
    settings = verify(migrated, migrations_dir=MIGRATIONS)["search settings"]
    assert settings.detail == "ivfflat.probes = 7"  # what the function's callers get, not the database default
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("DROP INDEX idx_embedding_cosine")
    gone = verify(migrated, migrations_dir=MIGRATIONS)["search function"]
    assert gone.status == "warn" and "sequential scan" in gone.detail and "vector_cosine_ops" in gone.fix


def test_a_large_table_that_search_assets_reads_whole_fails_verify_with_the_binding_that_fixes_it(migrated):
    """At some settings PostgreSQL prefers a sequential scan over a usable vector index (the
    vectors are TOASTed: the heap looks cheap). On 12,000 rows, probing all 100 lists makes the
    IVFFlat scan cost more than the table: every search is then exact and slow. verify fails on
    it (issue 27: never a silent sequential scan), and its fix, bound to the function, brings the
    index back."""
    loaded_with_probes(migrated, 12_000, 100)
    report = verify(migrated, migrations_dir=MIGRATIONS)
    check = report["search function"]
    assert check.status == "fail" and "by a sequential scan" in check.detail and "~12,000 rows" in check.detail
    assert report.exit_code != 0
    assert check.fix.startswith("ALTER FUNCTION search_assets(vector, integer, text) SET enable_seqscan = off;")
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute(check.fix.split(";")[0])
    fixed = verify(migrated, migrations_dir=MIGRATIONS)["search function"]
    assert fixed.status == "pass" and "search_assets scans idx_embedding_cosine" in fixed.detail


def test_without_search_assets_verify_says_how_to_add_it_and_smoke_skips_it(migrated):
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("DROP FUNCTION search_assets(vector, integer, text) CASCADE")  # the view goes with it
    check = verify(migrated, migrations_dir=MIGRATIONS)["search function"]
    assert check.status == "warn" and check.fix.startswith("pgvkit migrate")


def test_the_smoke_test_searches_through_search_assets_as_the_application_does(migrated):
    report = smoke(migrated)
    step = next(s for s in report.steps if s.name == "search_assets function")
    assert step.status == "pass" and "ranks test rows 0, 1, 2" in step.detail


def test_a_role_that_cannot_load_auto_explain_gets_a_warning_not_an_error(migrated, make_role):
    role = make_role("pw-v")
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute(f'GRANT SELECT ON ip_asset_embeddings, similar_assets TO "{role}"')
    check = verify(as_role(migrated, role, "pw-v"), migrations_dir=MIGRATIONS)["search function"]
    assert check.status == "warn" and "cannot load auto_explain" in check.detail
