"""The table by its schema-qualified name: a search_path without the table's schema gets one
line with the fix (not "run pgvkit migrate", which says up to date), and a second table of the
same name first on the search_path is reported, never silently used."""

import psycopg
from psycopg import sql

from pgvkit import Migrator
from pgvkit.health.verify import verify

from .conftest import MIGRATIONS, as_role, run_cli


def with_path(url: str, path: str) -> str:
    return psycopg.conninfo.make_conninfo(url, options=f"-c search_path={path}")


def test_a_search_path_without_the_tables_schema_is_one_line_with_the_fix_that_works(db_url, make_role):
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")  # in public, as most servers have it
        conn.execute("CREATE SCHEMA app")
    Migrator(with_path(db_url, "app,public"), MIGRATIONS, echo=lambda _: None).migrate()  # the table lands in app
    role = make_role()
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA app, pgvkit TO {0}; GRANT SELECT ON ALL TABLES IN SCHEMA app, "
                             "pgvkit TO {0}").format(sql.Identifier(role)))
    url = as_role(db_url, role)  # its search_path: "$user", public
    [table] = [c for c in verify(url, migrations_dir=MIGRATIONS).checks if c.name == "table"]
    assert table.status == "fail" and table.detail == (
        f'ip_asset_embeddings is in schema app, which is not on "{role}"\'s search_path ("$user", public)'), table
    assert table.fix == (f'ALTER ROLE "{role}" SET search_path = "$user", public, app; (or for pgvkit alone: '
                         "PGOPTIONS='-c search_path=\"$user\",public,app')")
    status = run_cli("status", "--database-url", url)
    assert status.returncode == 0 and "up to date" in status.stdout  # the history agrees: only the path is wrong
    recall = run_cli("recall", "--database-url", url)  # not "does not exist: run pgvkit migrate"
    assert recall.returncode == 2 and "ip_asset_embeddings is in schema app, which is not on" in recall.stderr
    doctor = run_cli("doctor", "--database-url", url)
    assert f"FAIL  table: ip_asset_embeddings is in schema app, which is not on \"{role}\"'s" in doctor.stdout
    fixed = run_cli("verify", "--database-url", url, env={"PGOPTIONS": '-c search_path="$user",public,app'})
    assert "app.ip_asset_embeddings exists, 0 rows" in fixed.stdout, fixed.stdout


def test_a_second_table_first_on_the_search_path_is_reported_and_named(migrated, make_role):
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA shadow")
        conn.execute("CREATE TABLE shadow.ip_asset_embeddings (LIKE public.ip_asset_embeddings INCLUDING ALL)")
    url = with_path(migrated, "shadow,public")
    report = verify(url, migrations_dir=MIGRATIONS)
    assert report.title.startswith("Verification of shadow.ip_asset_embeddings on ")
    [table] = [c for c in report.checks if c.name == "table"]
    assert table.status == "warn" and table.detail.startswith("shadow.ip_asset_embeddings exists, 0 rows; another "
                                                              "table named ip_asset_embeddings is in schema public")
    plain = verify(migrated, migrations_dir=MIGRATIONS)
    with psycopg.connect(migrated) as conn:
        user = sql.Identifier(conn.info.user).as_string(conn)
    assert plain.title.startswith("Verification of public.ip_asset_embeddings on ")
    assert [c.detail for c in plain.checks if c.name == "table"] == [
        "public.ip_asset_embeddings exists, 0 rows; another table named ip_asset_embeddings is in schema shadow: "
        f"pgvkit and every unqualified query use public.ip_asset_embeddings, first on {user}'s search_path "
        "(\"$user\", public)"]
