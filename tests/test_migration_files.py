"""Migration files on disk: names, numbers, down files."""

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgvkit.errors import ConfigError, MigrationFileError
from pgvkit.migrator.files import read_migrations
from pgvkit.migrator.sqlfile import DIRECTIVES, parse_sql


def test_migrations_are_read_in_numeric_order_with_their_down_files(migrations_dir):
    d = migrations_dir({
        "010_later.sql": "SELECT 10;",
        "2_second.sql": "SELECT 2;",
        "001_first.sql": "SELECT 1;",
        "001_first.down.sql": "SELECT -1;",
        "README.md": "not a migration",
    })
    migrations = read_migrations(d)
    assert [m.id for m in migrations] == ["001_first", "2_second", "010_later"]
    assert migrations[0].down is not None and migrations[1].down is None


@pytest.mark.parametrize("name", ["init.sql", "001-init.sql", "001_.sql", "abc_init.sql", "001_init.up.sql"])
def test_a_badly_named_sql_file_is_refused_by_name(migrations_dir, name):
    d = migrations_dir({name: "SELECT 1;"})
    with pytest.raises(MigrationFileError) as info:
        read_migrations(d)
    assert name in str(info.value) and "NNN_name.sql" in str(info.value)


def test_duplicate_numbers_are_refused_naming_both_files(migrations_dir):
    d = migrations_dir({"001_a.sql": "SELECT 1;", "1_b.sql": "SELECT 1;"})
    with pytest.raises(MigrationFileError, match="duplicate migration number") as info:
        read_migrations(d)
    assert "001_a.sql" in str(info.value) and "1_b.sql" in str(info.value)


def test_a_down_file_without_its_up_file_is_refused(migrations_dir):
    d = migrations_dir({"001_a.sql": "SELECT 1;", "002_b.down.sql": "SELECT 1;"})
    with pytest.raises(MigrationFileError, match="002_b.down.sql: down file has no up file"):
        read_migrations(d)


def test_a_file_that_is_not_utf8_is_refused_with_its_line(migrations_dir):
    d = migrations_dir({"001_a.sql": b"SELECT 1;\nSELECT '\xff';\n"})
    with pytest.raises(MigrationFileError, match=r"001_a.sql:2: is not UTF-8"):
        read_migrations(d)


def test_a_missing_directory_says_how_to_point_at_the_right_one(tmp_path):
    with pytest.raises(ConfigError, match="--migrations DIR"):
        read_migrations(tmp_path / "nope")


def test_the_shipped_migrations_parse_and_have_their_rollbacks():
    init, search, by_owner = read_migrations("migrations")
    assert init.id == "001_init_vector_store" and init.transactional
    kinds = [s.kind for s in init.up.statements]
    assert kinds.count("IndexStmt") == 3 and "ViewStmt" in kinds and "CreateTrigStmt" in kinds
    assert [s.kind for s in init.down.statements][-1] == "DropStmt"
    assert search.id == "002_search_assets" and search.transactional
    assert [s.kind for s in search.up.statements] == ["CreateFunctionStmt", "DoStmt", "ViewStmt"]
    assert [s.kind for s in search.down.statements] == ["ViewStmt", "DropStmt"]  # 001's view back, then the function
    assert by_owner.id == "003_search_assets_by_owner" and by_owner.transactional
    assert [s.kind for s in by_owner.up.statements] == [s.kind for s in by_owner.down.statements] == ["DoStmt"]


# -- properties -------------------------------------------------------------------------------

name_chars = st.text(st.sampled_from("0123456789_-.abcXYZ é;'\" "), min_size=1, max_size=24)
# mostly near-misses of NNN_name: a number, a separator, then anything
stems = st.builds(lambda n, sep, rest: n + sep + rest, st.from_regex(r"\d{1,4}", fullmatch=True) | name_chars,
                  st.sampled_from(["_", "-", "", "__"]), name_chars)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stem=stems)
def test_any_file_name_is_either_a_migration_or_refused_with_the_naming_rule(tmp_path_factory, stem):
    directory = tmp_path_factory.mktemp("names")
    name = f"{stem}.sql"
    if "/" in name or name in (".sql",):
        return
    (directory / name).write_text("SELECT 1;\n")
    valid = re.fullmatch(r"(\d+)_([A-Za-z0-9][A-Za-z0-9_-]*)\.sql", name)
    try:
        migrations = read_migrations(directory)
    except MigrationFileError as exc:
        assert not valid or ".down" in name, name
        assert "NNN_name.sql" in str(exc) or "down file" in str(exc)
        return
    assert valid, f"{name} was accepted"
    [m] = migrations
    assert (m.version, m.name) == (int(valid[1]), valid[2])


@settings(max_examples=60, deadline=None)
@given(directive=st.from_regex(r"[a-z][a-z-]{0,20}", fullmatch=True))
def test_an_unknown_directive_is_refused_naming_its_line(directive):
    text = f"-- a comment\n-- pgvkit:{directive}\nCREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (x);\n"
    if directive in DIRECTIVES:
        assert not parse_sql(text, "007_x.sql").transactional
        return
    with pytest.raises(MigrationFileError, match=r"007_x\.sql:2: unknown directive"):
        parse_sql(text, "007_x.sql")


@pytest.mark.parametrize("name, tool, rename", [
    ("V1__init.sql", "Flyway", "pgvkit import --from flyway DIR"),
    ("V2_1__add_owner.sql", "Flyway", "pgvkit import --from flyway DIR"),
    ("R__views.sql", "Flyway", "pgvkit import --from flyway DIR"),
    ("000001_create_assets.up.sql", "golang-migrate", "pgvkit import --from golang-migrate DIR"),
])
def test_another_tools_file_names_are_refused_naming_the_tool_and_the_rename(migrations_dir, name, tool, rename):
    d = migrations_dir({name: "SELECT 1;"})
    with pytest.raises(MigrationFileError) as info:
        read_migrations(d)
    message = str(info.value)
    assert name in message and f"named as {tool} names its migrations" in message and rename in message


def test_what_is_not_a_migration_is_listed_and_a_sqitch_layout_is_named(migrations_dir, db_url):
    from pgvkit import Migrator

    from .conftest import run_cli

    d = migrations_dir({"001_a.sql": "CREATE TABLE a (id int);", "sqitch.plan": "%project=assets\n",
                        "deploy/assets.sql": "CREATE TABLE assets (id int);", "revert/assets.sql": "DROP TABLE assets;",
                        "verify/assets.sql": "SELECT 1 FROM assets;", "notes.txt": "ask Kim"})
    migrator = Migrator(db_url, d, echo=lambda _: None)
    for report in (migrator.status(), migrator.plan()):
        assert any(n.startswith("this looks like a sqitch project") for n in report.notes)
        assert {"deploy/ is a directory: pgvkit does not look inside it",
                "notes.txt is not a migration (pgvkit runs NNN_name.sql files only)"} <= set(report.notes)
        assert "warning: this looks like a sqitch project" in str(report) and "warning:" in report._repr_html_()
    status = run_cli("status", "--database-url", db_url, "--migrations", str(d))
    assert "warning: revert/ is a directory" in status.stdout and status.returncode == 1  # 001 pending


def test_a_directory_of_migrations_only_has_nothing_to_warn_about(db_url):
    from pgvkit import Migrator

    from .conftest import MIGRATIONS

    assert Migrator(db_url, MIGRATIONS, echo=lambda _: None).status().notes == []
