"""Migrations written for other tools: refused before anything runs when pgvkit would run them
wrongly, and brought in (files and history) by pgvkit import / pgvkit baseline --from.

The files follow each tool's documented format (goose's annotations, dbmate's migrate:up/down,
golang-migrate's N_name.up.sql / .down.sql pairs, Flyway's V<version>__<description>.sql)."""

import subprocess
import textwrap

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgvkit import Migrator
from pgvkit.errors import MigrationFileError
from pgvkit.migrator.importing import plan_import
from pgvkit.migrator.sqlfile import parse_sql
from pgvkit.server.embedded import bin_path

from .conftest import MIGRATIONS, psql_file, run_cli

GOOSE = {  # a goose project as `goose create` lays it out, pgvector's shape
    "20240101120000_vector_records.sql": """\
        -- +goose Up
        CREATE EXTENSION IF NOT EXISTS vector;
        CREATE TABLE vector_records (
            id bigserial PRIMARY KEY,
            label text NOT NULL,
            embedding vector(3) NOT NULL
        );

        -- +goose StatementBegin
        CREATE OR REPLACE FUNCTION vector_records_label() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.label := lower(NEW.label);
            RETURN NEW;
        END;
        $$;
        -- +goose StatementEnd
        CREATE TRIGGER vector_records_label BEFORE INSERT ON vector_records
            FOR EACH ROW EXECUTE FUNCTION vector_records_label();

        -- +goose Down
        DROP TABLE IF EXISTS vector_records;
        DROP FUNCTION IF EXISTS vector_records_label();
        """,
    "20240102090000_vector_records_hnsw.sql": """\
        -- +goose NO TRANSACTION
        -- +goose Up
        CREATE INDEX CONCURRENTLY IF NOT EXISTS vector_records_embedding_idx
            ON vector_records USING hnsw (embedding vector_cosine_ops);

        -- +goose Down
        DROP INDEX CONCURRENTLY IF EXISTS vector_records_embedding_idx;
        """,
}
GOOSE_BY_HAND = """\
    CREATE EXTENSION IF NOT EXISTS vector;
    CREATE TABLE vector_records (id bigserial PRIMARY KEY, label text NOT NULL, embedding vector(3) NOT NULL);
    CREATE OR REPLACE FUNCTION vector_records_label() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        NEW.label := lower(NEW.label);
        RETURN NEW;
    END;
    $$;
    CREATE TRIGGER vector_records_label BEFORE INSERT ON vector_records
        FOR EACH ROW EXECUTE FUNCTION vector_records_label();
    CREATE INDEX CONCURRENTLY IF NOT EXISTS vector_records_embedding_idx
        ON vector_records USING hnsw (embedding vector_cosine_ops);
    """
DBMATE = {
    "20231201101500_create_items.sql": """\
        -- migrate:up
        create extension if not exists vector;
        create table items (id bigserial primary key, owner text not null, embedding vector(3));

        -- migrate:down
        drop table items;
        """,
    "20231202080000_items_owner_idx.sql": """\
        -- migrate:up transaction:false
        create index concurrently if not exists items_owner_idx on items (owner);

        -- migrate:down transaction:false
        drop index concurrently if exists items_owner_idx;
        """,
}
DBMATE_BY_HAND = """\
    create extension if not exists vector;
    create table items (id bigserial primary key, owner text not null, embedding vector(3));
    create index concurrently if not exists items_owner_idx on items (owner);
    """
GOLANG_MIGRATE = {
    "000001_create_docs.up.sql": "CREATE TABLE docs (id serial PRIMARY KEY, body text NOT NULL);\n",
    "000001_create_docs.down.sql": "DROP TABLE IF EXISTS docs;\n",
    "000002_docs_body_idx.up.sql": "CREATE INDEX docs_body_idx ON docs (body);\n",
    "000002_docs_body_idx.down.sql": "DROP INDEX IF EXISTS docs_body_idx;\n",
}
GOLANG_MIGRATE_BY_HAND = """\
    CREATE TABLE docs (id serial PRIMARY KEY, body text NOT NULL);
    CREATE INDEX docs_body_idx ON docs (body);
    """
FLYWAY = {
    "V1__init.sql": "CREATE TABLE fw_items (id int PRIMARY KEY);\n",
    "V1_1__add_name.sql": "ALTER TABLE fw_items ADD COLUMN name text;\n",
    "V2__fw_more.sql": "CREATE TABLE fw_more (id int REFERENCES fw_items);\n",
}
FLYWAY_BY_HAND = """\
    CREATE TABLE fw_items (id int PRIMARY KEY);
    ALTER TABLE fw_items ADD COLUMN name text;
    CREATE TABLE fw_more (id int REFERENCES fw_items);
    """
PROJECTS = {"goose": (GOOSE, GOOSE_BY_HAND), "dbmate": (DBMATE, DBMATE_BY_HAND),
            "golang-migrate": (GOLANG_MIGRATE, GOLANG_MIGRATE_BY_HAND), "flyway": (FLYWAY, FLYWAY_BY_HAND)}


def lay_out(directory, files: dict):
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(textwrap.dedent(text))
    return directory


def schema(url: str) -> str:
    """The catalog as pg_dump --schema-only prints it, without pgvkit's own schema."""
    out = subprocess.run([str(bin_path() / "pg_dump"), "--schema-only", "--no-owner", "--exclude-schema=pgvkit",
                          "--restrict-key=pgvkit", url], capture_output=True, text=True, check=True).stdout
    return "\n".join(line for line in out.splitlines() if line and not line.startswith("--"))


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


# -- refusals -------------------------------------------------------------------------------------

@pytest.mark.parametrize("tool, text, line", [
    ("goose", GOOSE["20240101120000_vector_records.sql"], 1),
    ("dbmate", DBMATE["20231201101500_create_items.sql"], 1),
])
def test_a_file_with_another_tools_up_and_down_markers_is_refused_and_nothing_runs(db_url, migrations_dir, tool,
                                                                                     text, line):
    """Measured before this: plan showed it, migrate said done, status said applied, and the table
    did not exist (its own down section ran right after its up section)."""
    directory = migrations_dir({"001_init_vector_store.sql": (MIGRATIONS / "001_init_vector_store.sql").read_text(),
                                "003_vector_records.sql": text})
    for command in ("plan", "migrate"):
        out = run_cli(command, "--database-url", db_url, "--migrations", str(directory))
        assert out.returncode == 2 and "Traceback" not in out.stderr
        assert f"003_vector_records.sql:{line}: holds {tool}'s marker" in out.stderr
        assert f"pgvkit import --from {tool} DIR" in out.stderr
    assert tables(db_url) == set()  # not even 001 ran: files are refused before anything runs
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT to_regclass('pgvkit.schema_migrations')").fetchone()[0] is None


@pytest.mark.parametrize("text, line, words", [
    ("CREATE TABLE a (id int);\n\\i 002_more.sql\n", 2, "psql meta-command \\i"),
    ("\\set ON_ERROR_STOP on\nCREATE TABLE a (id int);\n", 1, "psql meta-command \\set"),
    ("CREATE TABLE a (id int);\n\\connect jarvis\nCREATE TABLE b (id int);\n", 2, "psql meta-command \\connect"),
    ("CREATE TABLE a (id int, v text);\n\nCOPY a (id, v) FROM stdin;\n1\tone\n2\t\\N\n\\.\n", 3, "COPY ... FROM stdin"),
    ("-- +migrate Up\nCREATE TABLE a (id int);\n-- +migrate Down\nDROP TABLE a;\n", 1, "sql-migrate's marker"),
    ("CREATE TABLE a (id int);\n---- create above / drop below ----\nDROP TABLE a;\n", 2, "tern's marker"),
    ("--liquibase formatted sql\n\n--changeset alice:1\nCREATE TABLE a (id int);\n", 1, "Liquibase's marker"),
])
def test_what_only_psql_or_another_tool_understands_is_refused_with_its_line(text, line, words):
    with pytest.raises(MigrationFileError) as err:
        parse_sql(text, "002_x.sql")
    assert str(err.value).startswith(f"002_x.sql:{line}: holds") and words in str(err.value)


def test_marker_words_inside_strings_function_bodies_and_ordinary_comments_are_sql():
    parse_sql("CREATE FUNCTION f() RETURNS text LANGUAGE sql AS $$ SELECT '-- +goose Down' $$;\n"
              "-- rollback: drop f by hand if needed\nSELECT E'\\\\i not a command', 'migrate:down';\n"
              "COPY (SELECT 1) TO STDOUT;\n", "002_ok.sql")


@settings(max_examples=60, deadline=None)
@given(before=st.lists(st.sampled_from(["CREATE TABLE t (id int);", "SELECT $$-- +goose Up$$;", "-- a note",
                                        "CREATE INDEX i ON t (id);", ""]), max_size=6),
       marker=st.sampled_from(["-- +goose Down", "-- +goose StatementBegin", "-- migrate:down", "-- +migrate Down",
                               "-- +goose NO TRANSACTION", "--  migrate:up transaction:false"]))
def test_a_marker_anywhere_is_found_on_its_own_line(before, marker):
    text = "\n".join(before + [marker, "DROP TABLE IF EXISTS t;"]) + "\n"
    with pytest.raises(MigrationFileError) as err:
        parse_sql(text, "f.sql")
    assert str(err.value).startswith(f"f.sql:{len(before) + 1}: holds ")


# -- import ---------------------------------------------------------------------------------------

def test_a_goose_project_is_imported_migrated_and_rolled_back(db_url, tmp_path):
    source = lay_out(tmp_path / "db" / "migrations", GOOSE)
    target = lay_out(tmp_path / "migrations", {})
    dry = run_cli("import", "--from", "goose", str(source), cwd=tmp_path)  # migrations/ of the working directory
    assert dry.returncode == 0 and "dry run: nothing written" in dry.stdout
    assert "001_vector_records.sql" in dry.stdout and list(target.iterdir()) == []
    wrote = run_cli("import", "--from", "goose", str(source), "--migrations", str(target), "--write")
    assert wrote.returncode == 0, wrote.stderr
    assert sorted(p.name for p in target.iterdir()) == [
        "001_vector_records.down.sql", "001_vector_records.sql",
        "002_vector_records_hnsw.down.sql", "002_vector_records_hnsw.sql"]
    assert (target / "002_vector_records_hnsw.sql").read_text().startswith("-- pgvkit:no-transaction\n")
    assert "+goose" not in "".join(p.read_text() for p in target.iterdir())
    env = {"DATABASE_URL": db_url, "PGVKIT_MIGRATIONS": str(target)}
    assert run_cli("migrate", env=env).returncode == 0
    assert tables(db_url) == {"vector_records"}
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO vector_records (label, embedding) VALUES ('Logo', '[1,2,3]')")
        assert conn.execute("SELECT label FROM vector_records").fetchone() == ("logo",)  # the trigger came across
    again = run_cli("import", "--from", "goose", str(source), "--migrations", str(target))
    assert "0 migration(s), 2 imported before" in again.stdout  # a re-run imports only what is new
    name = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    rolled = run_cli("rollback", "--to", "0", "--yes", "--confirm-database", name, env=env)
    assert rolled.returncode == 0, rolled.stderr
    assert tables(db_url) == set()


@pytest.mark.parametrize("tool", list(PROJECTS))
def test_import_then_migrate_builds_the_schema_the_old_tools_up_sections_build(tool, make_database, tmp_path):
    files, by_hand = PROJECTS[tool]
    target = lay_out(tmp_path / "migrations", {})
    plan_import(tool, lay_out(tmp_path / tool, files), target).write()
    imported, manual = make_database(), make_database()
    Migrator(imported, target, echo=lambda _: None).migrate()
    (tmp_path / "by_hand.sql").write_text(textwrap.dedent(by_hand))
    psql_file(manual, tmp_path / "by_hand.sql")
    assert schema(imported) == schema(manual)


@pytest.mark.parametrize("tool, files, words", [
    ("goose", {"00001_x.sql": "-- +goose ENVSUB ON\n-- +goose Up\nCREATE TABLE x (v text DEFAULT '${V}');\n"},
     "00001_x.sql:1: -- +goose ENVSUB"),
    ("goose", {"00001_x.sql": "-- +goose NO TRANSACTION\n-- +goose Up\nCREATE INDEX CONCURRENTLY i ON t (id);\n"
                              "INSERT INTO t VALUES (1);\n"}, "00001_x.sql:3: CREATE INDEX CONCURRENTLY i"),
    ("goose", {"00001_x.sql": "CREATE TABLE t (id int);\n-- +goose Up\nSELECT 1;\n"}, "00001_x.sql:1: SQL before"),
    ("goose", {"00002_seed.go": "package migrations\n"}, "a Go migration"),
    ("flyway", {"V1__init.sql": "CREATE TABLE ${prefix}_items (id int);\n"}, "V1__init.sql:1: Flyway placeholder"),
    ("flyway", {"V1__init.sql": "CREATE TABLE t (id int);\n", "R__views.sql": "CREATE VIEW v AS SELECT 1;\n"},
     "R__views.sql: a Flyway repeatable migration"),
    ("golang-migrate", {"1_a.down.sql": "DROP TABLE a;\n"}, "1_a.down.sql: a down migration without its up"),
    ("dbmate", {"20240101000000_bad.sql": "-- migrate:up\nCREATE TABLE (;\n"}, "20240101000000_bad.sql:2: SQL syntax"),
])
def test_what_cannot_be_translated_is_refused_with_file_and_line_and_nothing_is_written(tmp_path, tool, files, words):
    source = lay_out(tmp_path / "old", files)
    target = lay_out(tmp_path / "migrations", {})
    out = run_cli("import", "--from", tool, str(source), "--migrations", str(target), "--write")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert words in out.stderr, out.stderr
    assert list(target.iterdir()) == []


# -- history --------------------------------------------------------------------------------------

def imported_project(tmp_path, tool) -> tuple:
    target = lay_out(tmp_path / "migrations", {})
    plan_import(tool, lay_out(tmp_path / tool, PROJECTS[tool][0]), target).write()
    return target


def test_baseline_from_flyway_records_its_versions_and_migrate_applies_only_what_is_newer(db_url, tmp_path):
    target = imported_project(tmp_path, "flyway")
    with psycopg.connect(db_url, autocommit=True) as conn:  # what Flyway left: V1 and V1.1 ran
        conn.execute("CREATE TABLE fw_items (id int PRIMARY KEY, name text)")
        conn.execute("""CREATE TABLE flyway_schema_history (installed_rank int PRIMARY KEY, version varchar(50),
            description varchar(200) NOT NULL, type varchar(20) NOT NULL, script varchar(1000) NOT NULL, checksum int,
            installed_by varchar(100) NOT NULL, installed_on timestamp NOT NULL DEFAULT now(),
            execution_time int NOT NULL, success boolean NOT NULL)""")
        conn.execute("""INSERT INTO flyway_schema_history VALUES
            (1, '1', 'init', 'SQL', 'V1__init.sql', 1043547, 'jarvis', now(), 12, true),
            (2, '1.1', 'add name', 'SQL', 'V1_1__add_name.sql', -80, 'jarvis', now(), 4, true)""")
    env = {"DATABASE_URL": db_url, "PGVKIT_MIGRATIONS": str(target)}
    out = run_cli("baseline", "--from", "flyway", env=env)
    assert out.returncode == 0, out.stderr
    assert "001_init, 002_add_name" in out.stdout
    migrate = run_cli("--json", "migrate", env=env)
    assert migrate.returncode == 0, migrate.stderr
    assert '"003_fw_more"' in migrate.stdout and "001_init" not in migrate.stdout
    assert tables(db_url) >= {"fw_items", "fw_more"}


@pytest.mark.parametrize("tool, history, expected", [
    ("goose", ["CREATE TABLE goose_db_version (id serial PRIMARY KEY, version_id bigint NOT NULL,"
               " is_applied boolean NOT NULL, tstamp timestamp DEFAULT now())",
               "INSERT INTO goose_db_version (version_id, is_applied) VALUES (0, true), (20240101120000, true),"
               " (20240102090000, true), (20240102090000, false)"],  # the index was rolled back with goose down
     ["001_vector_records"]),
    ("dbmate", ["CREATE TABLE schema_migrations (version varchar(128) PRIMARY KEY)",
                "INSERT INTO schema_migrations VALUES ('20231201101500'), ('20231202080000')"],
     ["001_create_items", "002_items_owner_idx"]),
    ("golang-migrate", ["CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)",
                        "INSERT INTO schema_migrations VALUES (1, false)"], ["001_create_docs"]),
])
def test_baseline_from_each_tools_history_table(db_url, tmp_path, tool, history, expected):
    target = imported_project(tmp_path, tool)
    with psycopg.connect(db_url, autocommit=True) as conn:
        for statement in history:
            conn.execute(statement)
    assert Migrator(db_url, target, echo=lambda _: None).baseline_from(tool) == expected
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT event FROM pgvkit.migration_events").fetchall() == [("baseline",)] * len(expected)


@pytest.mark.parametrize("tool, history, words", [
    ("golang-migrate", ["CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)",
                        "INSERT INTO schema_migrations VALUES (2, true)"], "dirty at version 2"),
    ("flyway", ["CREATE TABLE flyway_schema_history (installed_rank int, version varchar(50), type varchar(20),"
                " script varchar(1000), success boolean)",
                "INSERT INTO flyway_schema_history VALUES (1, '1', 'SQL', 'V1__init.sql', true),"
                " (2, '1.1', 'SQL', 'V1_1__add_name.sql', false)"], "failed migration (V1_1__add_name.sql"),
    ("dbmate", ["CREATE TABLE schema_migrations (version bigint NOT NULL PRIMARY KEY, dirty boolean NOT NULL)"],
     "that is golang-migrate's history"),
    ("goose", [], "no goose_db_version table"),
])
def test_a_dirty_failed_or_missing_old_history_stops_baseline_with_one_line(db_url, tmp_path, tool, history, words):
    target = imported_project(tmp_path, tool)
    with psycopg.connect(db_url, autocommit=True) as conn:
        for statement in history:
            conn.execute(statement)
    out = run_cli("baseline", "--from", tool, env={"DATABASE_URL": db_url, "PGVKIT_MIGRATIONS": str(target)})
    assert out.returncode == 2 and words in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT to_regclass('pgvkit.migration_events')").fetchone()[0] is None or \
            conn.execute("SELECT count(*) FROM pgvkit.migration_events").fetchone()[0] == 0


# -- an empty down is the tool's "nothing to undo" (issue 23, case 8) ---------------------------------

EMPTY_DOWNS = {
    "goose": {"00001_enable_vector.sql": "-- +goose Up\nCREATE EXTENSION IF NOT EXISTS vector;\n\n-- +goose Down\n",
              "00002_items.sql": "-- +goose Up\nCREATE TABLE items (id int, embedding vector(3));\n\n"
                                 "-- +goose Down\nDROP TABLE items;\n"},
    "dbmate": {"20240101000000_enable_vector.sql": "-- migrate:up\ncreate extension if not exists vector;\n\n"
                                                   "-- migrate:down\n-- nothing: other schemas use it\n",
               "20240102000000_items.sql": "-- migrate:up\ncreate table items (id int, embedding vector(3));\n\n"
                                           "-- migrate:down\ndrop table items;\n"},
    "golang-migrate": {"1_enable_vector.up.sql": "CREATE EXTENSION IF NOT EXISTS vector;\n",
                       "1_enable_vector.down.sql": "",
                       "2_items.up.sql": "CREATE TABLE items (id int, embedding vector(3));\n",
                       "2_items.down.sql": "DROP TABLE items;\n"},
}


@pytest.mark.parametrize("tool", list(EMPTY_DOWNS))
def test_an_empty_down_section_becomes_a_down_file_that_undoes_nothing_and_rollback_passes_through_it(
        tool, db_url, tmp_path):
    target = lay_out(tmp_path / "migrations", {})
    plan = plan_import(tool, lay_out(tmp_path / tool, EMPTY_DOWNS[tool]), target)
    assert [r["down"] for r in plan.rows()] == ["nothing to undo", "yes"]
    plan.write()
    down = (target / "001_enable_vector.down.sql").read_text()
    assert "nothing to undo" in down and f"as `{tool} down` would" in down
    env = {"DATABASE_URL": db_url, "PGVKIT_MIGRATIONS": str(target)}
    assert run_cli("migrate", env=env).returncode == 0
    name = psycopg.conninfo.conninfo_to_dict(db_url)["dbname"]
    rolled = run_cli("rollback", "--to", "0", "--yes", "--confirm-database", name, env=env)
    assert rolled.returncode == 0, rolled.stderr
    assert tables(db_url) == set()
    with psycopg.connect(db_url) as conn:  # as the tool's own down: the extension stays
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'vector'").fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM pgvkit.schema_migrations WHERE status = 'applied'").fetchone()[0] == 0


def test_goose_files_copied_beside_pgvkits_own_are_named_as_goose_before_their_numbers(migrations_dir):
    directory = migrations_dir({"001_init_vector_store.sql": (MIGRATIONS / "001_init_vector_store.sql").read_text(),
                                "00001_init.sql": GOOSE["20240101120000_vector_records.sql"],
                                "00002_hnsw.sql": GOOSE["20240102090000_vector_records_hnsw.sql"]})
    with pytest.raises(MigrationFileError) as refused:
        Migrator("postgresql:///unused", directory, echo=lambda _: None).read()
    assert "00001_init.sql:1: holds goose's marker `-- +goose Up`" in str(refused.value)
    assert "pgvkit import --from goose DIR" in str(refused.value) and "duplicate" not in str(refused.value)
