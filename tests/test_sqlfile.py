"""Reading migration SQL with PostgreSQL's own grammar."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgvkit.errors import MigrationFileError, MigrationSQLError
from pgvkit.migrator.sqlfile import checksum, parse_sql, split_statements

FUNCTION = """\
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at = now(); -- a semicolon inside the body
    RETURN NEW;
END;
$$;
"""


def test_dollar_quoted_bodies_and_do_blocks_stay_whole():
    text = FUNCTION + "DO $x$ BEGIN PERFORM 1; PERFORM 2; END $x$;\nSELECT 'a;b' /* ; */;\n"
    statements = split_statements(text)
    assert [s.kind for s in statements] == ["CreateFunctionStmt", "DoStmt", "SelectStmt"]
    assert statements[0].sql.endswith("$$")
    assert "PERFORM 2;" in statements[1].sql
    assert statements[2].sql == "SELECT 'a;b' /* ; */"


def test_statements_know_the_line_they_start_on():
    text = "-- header\n\nSELECT 1;\nSELECT\n  2;\n\nSELECT 'é';"
    assert [s.line for s in split_statements(text)] == [3, 4, 7]


def test_non_ascii_text_does_not_shift_statement_boundaries():
    text = "SELECT 'ééé';\nSELECT 'ü', 'ß';\nSELECT 3;"
    assert [s.sql for s in split_statements(text)] == ["SELECT 'ééé'", "SELECT 'ü', 'ß'", "SELECT 3"]


def test_a_syntax_error_names_the_file_and_line():
    with pytest.raises(MigrationSQLError) as info:
        parse_sql("SELECT 1;\n\nCREAT TABLE t (id int);\n", "002_bad.sql")
    assert info.value.line == 3
    assert "002_bad.sql:3" in str(info.value)
    assert "syntax error" in str(info.value)


def test_psql_meta_commands_are_refused_naming_the_command_not_as_a_syntax_error():
    with pytest.raises(MigrationFileError, match=r"003_meta\.sql:1: holds the psql meta-command \\i,"):
        parse_sql("\\i other.sql\n", "003_meta.sql")


def test_concurrent_index_in_a_transactional_file_is_refused_with_the_fix():
    with pytest.raises(MigrationFileError, match="pgvkit:no-transaction"):
        parse_sql("CREATE INDEX CONCURRENTLY i ON t (x);", "004_idx.sql")


def test_no_transaction_directive_allows_concurrent_index():
    f = parse_sql("-- pgvkit:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (x);", "004_idx.sql")
    assert not f.transactional
    assert f.statements[0].needs_autocommit


def test_directives_count_only_in_the_header():
    f = parse_sql("SELECT 1;\n-- pgvkit:no-transaction\n", "005.sql")
    assert f.transactional


def test_unknown_directive_is_refused():
    with pytest.raises(MigrationFileError, match="unknown directive pgvkit:no-transactoin"):
        parse_sql("-- pgvkit:no-transactoin\nSELECT 1;", "006.sql")


@pytest.mark.parametrize("command", ["BEGIN", "COMMIT", "ROLLBACK", "START TRANSACTION"])
def test_transaction_commands_are_refused(command):
    with pytest.raises(MigrationFileError, match="transaction command"):
        parse_sql(f"{command};\nCREATE TABLE t (id int);", "007.sql")


def test_a_file_with_only_comments_is_refused():
    with pytest.raises(MigrationFileError, match="no SQL statement"):
        parse_sql("-- nothing yet\n\n", "008_empty.sql")


def test_line_endings_and_bom_do_not_change_the_checksum():
    lf = "SELECT 1;\nSELECT 2;\n"
    assert checksum(lf) == checksum(lf.replace("\n", "\r\n")) == checksum("\ufeff" + lf)
    assert checksum(lf) != checksum(lf.replace("2", "3"))


literals = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(literals, st.sampled_from(["", "-- c;\n", "/* ; */ "])), min_size=1, max_size=6))
def test_split_then_join_preserves_every_statement(parts):
    statements = [
        f"{comment}SELECT '{value.replace(chr(39), chr(39) * 2)}' AS v, $q${value.replace('$', '')}$q$ AS w"
        for value, comment in parts
    ]
    text = ";\n".join(statements) + ";"
    split = split_statements(text)
    assert len(split) == len(statements)
    again = split_statements(";\n".join(s.sql for s in split))
    assert [s.sql for s in again] == [s.sql for s in split]
    for original, got in zip(statements, split):
        assert original.endswith(got.sql)  # only leading comments may be left off


@pytest.mark.parametrize("statement, needle", [
    ("INSERT INTO t VALUES (1);", "changes data"),
    ("UPDATE t SET x = 1;", "changes data"),
    ("CREATE TABLE t2 (id int);", "add IF NOT EXISTS"),
    ("DROP INDEX CONCURRENTLY i;", "add IF EXISTS"),
    ("CREATE INDEX CONCURRENTLY i2 ON t (x);", "add IF NOT EXISTS"),
])
def test_a_no_transaction_file_must_be_safe_to_resume_from_its_top(statement, needle):
    text = f"-- pgvkit:no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (x);\n{statement}\n"
    with pytest.raises(MigrationFileError, match=needle) as err:
        parse_sql(text, "005_mixed.sql")
    assert "005_mixed.sql:3" in str(err.value)


def test_a_no_transaction_file_that_needs_no_autocommit_is_refused():
    with pytest.raises(MigrationFileError, match="remove the directive"):
        parse_sql("-- pgvkit:no-transaction\nCREATE TABLE IF NOT EXISTS t (id int);\n", "006_plain.sql")


def test_a_no_transaction_file_must_need_it_and_validating_a_constraint_does():
    """A file marked no-transaction runs statement by statement, without all-or-nothing: refused
    when nothing in it needs that, accepted when it validates a constraint (in the transaction of
    the ADD ... NOT VALID before it, the validating scan would hold ACCESS EXCLUSIVE)."""
    with pytest.raises(MigrationFileError, match="nothing in it needs that"):
        parse_sql("-- pgvkit:no-transaction\nALTER TABLE items ADD COLUMN x int;\n", "005_x.sql")
    checked = parse_sql("-- pgvkit:no-transaction\n"
                        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_constraint WHERE conname = 'x_set') THEN\n"
                        "ALTER TABLE items ADD CONSTRAINT x_set CHECK (x IS NOT NULL) NOT VALID; END IF; END $$;\n"
                        "ALTER TABLE items VALIDATE CONSTRAINT x_set;\n", "006_x_set.sql")
    assert not checked.transactional and [s.validates for s in checked.statements] == [False, True]
