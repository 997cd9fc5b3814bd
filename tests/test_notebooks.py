"""The notebooks run headless through papermill with their parameters, as a scheduled job
would: the parameters cell drives them, and a wrong state fails the run."""

import shutil
from pathlib import Path

import papermill
import psycopg
import pytest

from .conftest import MIGRATIONS, ROOT

NOTEBOOKS = ROOT / "notebooks"


def run(name: str, tmp_path: Path, **parameters) -> Path:
    out = tmp_path / name
    papermill.execute_notebook(str(NOTEBOOKS / name), str(out), parameters=parameters, cwd=str(NOTEBOOKS),
                               progress_bar=False, kernel_name="python3")
    return out


def rows(url: str) -> int:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM ip_asset_embeddings").fetchone()[0]


def test_every_notebook_has_a_parameters_cell_naming_the_database():
    import nbformat

    for path in sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        first_code = next(c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code")
        assert "parameters" in first_code.metadata.get("tags", []), path.name
        assert "database_url = None" in first_code.source, path.name


def test_migrate_verify_and_inserts_run_in_sequence_on_the_database_given_as_a_parameter(db_url, tmp_path,
                                                                                          pgvkit_home):
    run("01_migrate.ipynb", tmp_path, database_url=db_url, take_backup=False)
    run("02_verify.ipynb", tmp_path, database_url=db_url)
    name = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    run("03_test_inserts.ipynb", tmp_path, database_url=db_url, load_rows=300)
    assert rows(db_url) == 0  # by default the bulk load goes to a scratch database, dropped after
    assert not scratch_databases(db_url)
    run("03_test_inserts.ipynb", tmp_path, database_url=db_url, load_rows=300, cleanup=False, use_scratch=False,
        confirm_database=name)
    assert rows(db_url) == 300  # the parameters took effect
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO ip_asset_embeddings (asset_id, owner_id, embedding)"
                     " VALUES ('real-1', 'team', array_fill(0.1, ARRAY[768])::vector)")
    run("03_test_inserts.ipynb", tmp_path, database_url=db_url, load_rows=100, cleanup=True, use_scratch=False,
        confirm_database=name)
    assert rows(db_url) == 1  # cleanup removed every loaded row and nothing else


def test_the_inserts_notebook_will_not_load_into_a_live_table_without_its_name_typed_back(migrated, tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as err:
        run("03_test_inserts.ipynb", tmp_path, database_url=migrated, load_rows=100, use_scratch=False,
            confirm_database="jarvis")  # a name, but not this database's
    assert "type its name back" in str(err.value)
    assert rows(migrated) == 0


def scratch_databases(url: str) -> list:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'pgvkit_scratch_%'").fetchall()


def test_the_verify_notebook_fails_on_a_database_that_was_never_migrated(db_url, tmp_path):
    with pytest.raises(papermill.PapermillExecutionError) as err:
        run("02_verify.ipynb", tmp_path, database_url=db_url)
    assert "ip_asset_embeddings" in str(err.value)


def test_the_plan_only_run_of_the_migrate_notebook_changes_nothing(db_url, tmp_path, pgvkit_home):
    run("01_migrate.ipynb", tmp_path, database_url=db_url, take_backup=False, apply=False)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT to_regclass('ip_asset_embeddings')").fetchone()[0] is None


def test_the_troubleshooting_notebook_diagnoses_without_scratch_databases(migrated, tmp_path):
    out = run("05_troubleshooting.ipynb", tmp_path, database_url=migrated, scratch=False)
    assert "nothing is listening where the URL points" in out.read_text()


def test_the_tuning_notebook_writes_applies_and_verifies_its_migration(migrated, tmp_path):
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations)
    run("04_index_tuning.ipynb", tmp_path, database_url=migrated, rows=3000, queries=50, ivfflat_lists=[55],
        probes=[1, 4], hnsw=[[16, 64]], ef_search=[20, 40], migrations_dir=str(migrations),
        write_migration=True, apply_migration=True)
    written = sorted(p.name for p in migrations.glob("004_*"))
    assert written == ["004_tune_idx_embedding_cosine.down.sql", "004_tune_idx_embedding_cosine.sql"]
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT status FROM pgvkit.schema_migrations WHERE version = 4").fetchone() == ("applied",)
        assert conn.execute("SELECT to_regclass('pgvkit.tune_workload')").fetchone()[0] is None


def test_the_recall_notebook_audits_the_live_table_and_fails_below_the_target_when_asked(migrated, tmp_path):
    import numpy as np

    from pgvkit.data.inserts import load

    from .conftest import real_embeddings

    vectors = real_embeddings()
    load(migrated, vectors=vectors[:5000], progress=False)
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("ANALYZE ip_asset_embeddings")  # as a loaded production table is
    queries = tmp_path / "new.npy"
    np.save(queries, vectors[29_000:29_300])
    out = run("07_recall_audit.ipynb", tmp_path, database_url=migrated, query_file=str(queries), sample=300)
    text = out.read_text()
    assert "the live table: 5,000 rows" in text and "new_vectors" in text and "MISSES the target" in text
    with pytest.raises(papermill.PapermillExecutionError, match="recall below 0.95"):
        run("07_recall_audit.ipynb", tmp_path, database_url=migrated, query_file=str(queries), sample=300,
            fail_below_target=True)
    with psycopg.connect(migrated) as conn:  # both runs recorded both shapes, and a watch each (its sample too)
        assert conn.execute("SELECT count(*) FROM pgvkit.recall_audits WHERE queries = 300").fetchone()[0] == 4
        assert conn.execute("SELECT count(*) FROM pgvkit.watch_snapshots").fetchone()[0] == 2


def test_a_notebook_that_needs_01_says_so_in_one_line_without_a_traceback(db_url, tmp_path):
    from .conftest import psql_file

    with pytest.raises(papermill.PapermillExecutionError):
        run("03_test_inserts.ipynb", tmp_path, database_url=db_url)
    error = next(o for c in nbformat_read(tmp_path / "03_test_inserts.ipynb").cells
                 for o in c.get("outputs", []) if o.output_type == "error")
    assert error.ename == "NotReady" and len(error.traceback) == 1  # the message, not a stack
    assert "ip_asset_embeddings does not exist" in error.traceback[0] and "run 01_migrate first" in error.traceback[0]
    psql_file(db_url, MIGRATIONS / "001_init_vector_store.sql")  # the docker init's schema, no history
    with pytest.raises(papermill.PapermillExecutionError, match="no pgvkit history: run 01_migrate first"):
        run("07_recall_audit.ipynb", tmp_path, database_url=db_url)


def test_a_database_url_parameter_holding_a_password_is_refused_before_connecting(tmp_path):
    from pgvkit.errors import ConfigError
    from pgvkit.notebooks.preamble import open_target

    url = "postgresql://jarvis:Pw#d0nt?l3ak&9f:2c@127.0.0.1:1/jarvis"  # nothing listens there: no attempt made
    with pytest.raises(ConfigError, match="holds a password") as err:
        open_target(url)
    assert "l3ak" not in str(err.value) and "DATABASE_URL" in str(err.value)


def nbformat_read(path):
    import nbformat

    return nbformat.read(path, as_version=4)
