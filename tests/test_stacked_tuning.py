"""Tuning migrations one after another (issue 23, case 5): a tuning migration's down file restores
the index that stood when it was written, so a second one is written only once the first is
applied, and rolling either back restores exactly what stood before it."""

import json
import shutil

import psycopg
import pytest

from pgvkit import Migrator
from pgvkit.data.inserts import load
from pgvkit.search import SIGNATURE

from .conftest import MIGRATIONS, real_embeddings, run_cli


def state(url):
    """The live index, its comment, the function (body and settings) and the database's settings."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT pg_get_indexdef('idx_embedding_cosine'::regclass),"
            " obj_description('idx_embedding_cosine'::regclass, 'pg_class'),"
            " pg_get_functiondef(to_regprocedure(%s)),"
            " (SELECT setconfig FROM pg_db_role_setting WHERE setrole = 0"
            "  AND setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()))",
            [SIGNATURE]).fetchone()


@pytest.fixture
def team(migrated, tmp_path):
    load(migrated, vectors=real_embeddings()[:3000], progress=False)
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations)
    return migrated, migrations, ["--database-url", migrated, "--migrations", str(migrations)]


def tune(where, target, kind="vector"):
    return run_cli("tune", "--rows", "3000", "--queries", "40", "--candidates", kind, "--target-recall", target,
                   "--json", "--write-migration", *where, *(["--allow-query-change"] if kind != "vector" else []),
                   timeout=300)


@pytest.mark.slow
def test_a_second_tuning_migration_waits_for_the_first_and_each_rollback_restores_what_stood_before_it(team):
    url, migrations, where = team
    seed = state(url)
    first = tune(where, "0.9")
    assert first.returncode == 0 and json.loads(first.stdout)["migration"], first.stderr

    stacked = tune(where, "0.97", "halfvec")  # 004 is written, not applied
    assert stacked.returncode == 2 and "Traceback" not in stacked.stderr
    [line] = stacked.stderr.strip().splitlines()
    assert "004_tune_idx_embedding_cosine.sql is not applied yet" in line and "pgvkit migrate" in line
    assert "sweep" not in stacked.stderr and not list(migrations.glob("005_*"))  # refused before any build

    assert run_cli("migrate", *where).returncode == 0
    after_004 = state(url)
    second = tune(where, "0.97", "halfvec")  # another kind: 005 surely changes the index and the function
    assert second.returncode == 0 and json.loads(second.stdout)["migration"], second.stderr
    assert run_cli("migrate", *where).returncode == 0
    assert state(url) != after_004

    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    back = run_cli("rollback", "--to", "4", "--yes", "--confirm-database", name, *where)
    assert back.returncode == 0, back.stderr
    assert state(url) == after_004  # 004's index, comment and settings, as 004 left them
    back = run_cli("rollback", "--to", "3", "--yes", "--confirm-database", name, *where)
    assert back.returncode == 0, back.stderr
    assert state(url) == seed


def test_plan_warns_about_a_tuning_migration_written_before_a_pending_one_that_replaces_the_same_index(team):
    url, migrations, where = team
    first = tune(where, "0.9")
    assert first.returncode == 0, first.stderr
    up, = [p for p in migrations.glob("004_*.sql") if not p.name.endswith(".down.sql")]
    (migrations / "005_tune_again.sql").write_text(up.read_text())  # as a stale copy, or an older pgvkit, wrote it
    (migrations / "005_tune_again.down.sql").write_text((migrations / up.name.replace(".sql", ".down.sql")).read_text())
    notes = Migrator(url, migrations, echo=lambda _: None).plan().notes
    assert any(n.startswith("005_tune_again was written by pgvkit tune before 004_tune_idx_embedding_cosine ran")
               for n in notes), notes
    planned = run_cli("plan", "--json", *where)
    assert any("005_tune_again" in w for w in json.loads(planned.stdout)["warnings"])
