"""pgvkit doctor: each troubleshooting case of the seed README reproduced on a real server,
diagnosed, and (where the fix is SQL) fixed by running exactly the fix it prints."""

import json
import re
from pathlib import Path

import numpy as np
import psycopg
import pytest
from psycopg import sql

from pgvkit.data.inserts import load
from pgvkit.health.doctor import doctor, explain, hnsw_build_bytes, ivfflat_build_bytes
from pgvkit.health.verify import verify
from pgvkit.migrator.sqlfile import read_sql_file

from .conftest import MIGRATIONS, PASSWORD, as_role, free_port, leave_invalid_index, psql_file, run_cli


def run_fix(url: str, fix: str) -> None:
    """Run the SQL statements of a printed fix, as the admin a fix addresses would."""
    statements = fix.split("; (")[0].removeprefix("as a superuser: ").removeprefix("as the schema owner: ")
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements.rstrip(";").split("; "):
            conn.execute(statement)


def test_a_fresh_database_says_the_migrations_did_not_run_and_to_migrate(db_url):
    report = doctor(db_url, migrations_dir=MIGRATIONS)
    assert not report.ok and report.exit_code == 2
    assert report["extension"].status == "fail" and report["extension"].fix.startswith("pgvkit migrate")
    assert "migrations didn't run" in report["migrations"].what
    assert "empty data directory" in report["migrations"].why
    assert report["migrations"].fix == "pgvkit migrate"


def test_a_migrated_database_has_no_problems(migrated):
    report = doctor(migrated, migrations_dir=MIGRATIONS)
    assert report.ok, str(report)
    assert report["migrations"].status == "pass" and report["search_path"].status == "pass"
    # the seed builds its IVFFlat index on an empty table: a warning, not a failure
    assert [f.area for f in report.problems] == ["ivfflat data"]
    assert "0 rows" in report["ivfflat data"].what


def test_objects_without_history_are_told_to_baseline_and_baseline_clears_it(db_url):
    psql_file(db_url, MIGRATIONS / "001_init_vector_store.sql")  # what the docker init did
    report = doctor(db_url, migrations_dir=MIGRATIONS)
    assert report["migrations"].status == "fail" and report["migrations"].fix == "pgvkit baseline 001"
    assert run_cli("baseline", "001", "--database-url", db_url).returncode == 0
    assert run_cli("migrate", "--database-url", db_url).returncode == 0  # 002, newer than the docker init
    assert doctor(db_url, migrations_dir=MIGRATIONS)["migrations"].status == "pass"


def test_a_schema_made_part_way_by_hand_is_named_and_migrate_completes_it(db_url):
    with psycopg.connect(db_url) as conn:
        conn.execute("CREATE EXTENSION vector")
        conn.execute("CREATE TABLE ip_asset_embeddings (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
                     " asset_id varchar(255) NOT NULL UNIQUE, owner_id varchar(255) NOT NULL,"
                     " embedding vector(768) NOT NULL, metadata jsonb DEFAULT '{}'::jsonb,"
                     " created_at timestamptz DEFAULT now(), updated_at timestamptz DEFAULT now())")
    finding = doctor(db_url, migrations_dir=MIGRATIONS)["migrations"]
    assert "ran part-way" in finding.what and "idx_embedding_cosine" in finding.what
    assert run_cli("migrate", "--database-url", db_url).returncode == 0
    assert doctor(db_url, migrations_dir=MIGRATIONS)["migrations"].status == "pass"


def test_a_role_that_may_not_create_the_extension_is_told_what_a_superuser_must_run(make_database, make_role):
    role = make_role(PASSWORD)
    url = make_database(owner=role)
    report = doctor(as_role(url, role, PASSWORD), migrations_dir=MIGRATIONS)
    finding = report["extension"]
    assert finding.status == "fail" and "may not create it" in finding.what
    with psycopg.connect(as_role(url, role, PASSWORD)) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("CREATE EXTENSION vector")  # the diagnosis is true
    with psycopg.connect(url, autocommit=True) as conn:  # the superuser runs the printed fix
        conn.execute(re.search(r'-c "(.*?)"', finding.fix).group(1))
    assert doctor(as_role(url, role, PASSWORD), migrations_dir=MIGRATIONS)["extension"].status == "pass"


def test_type_vector_does_not_exist_because_of_the_search_path_is_found_and_fixed(make_database, make_role):
    role = make_role(PASSWORD)
    url = make_database(owner=role)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA extensions")
        conn.execute("CREATE EXTENSION vector SCHEMA extensions")
    app = as_role(url, role, PASSWORD)
    with psycopg.connect(app) as conn, pytest.raises(psycopg.errors.UndefinedObject, match='type "vector" does not exist'):
        conn.execute("SELECT '[1,2,3]'::vector")
    finding = doctor(app, migrations_dir=MIGRATIONS)["search_path"]
    assert finding.status == "fail" and "schema extensions" in finding.what and "lacks USAGE" in finding.what
    run_fix(url, finding.fix)
    with psycopg.connect(app) as conn:
        assert conn.execute("SELECT '[1,2,3]'::vector <=> '[1,2,4]'::vector").fetchone()[0] > 0
    assert doctor(app, migrations_dir=MIGRATIONS)["search_path"].status == "pass"


def test_no_create_on_schema_public_is_named_with_the_grant_that_fixes_it(db_url, make_role):
    role = make_role(PASSWORD)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
        conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
            sql.Identifier(conn.info.dbname), sql.Identifier(role)))
    app = as_role(db_url, role, PASSWORD)
    report = doctor(app, migrations_dir=MIGRATIONS)
    finding = report["privileges"]
    assert finding.status == "fail" and "schema public" in finding.what
    failed = run_cli("migrate", "--database-url", app)
    assert failed.returncode == 2 and "permission denied for schema public" in failed.stderr
    run_fix(db_url, finding.fix)
    assert doctor(app, migrations_dir=MIGRATIONS)["privileges"].status == "pass"
    assert run_cli("migrate", "--database-url", app).returncode == 0


def test_a_table_owned_by_someone_else_is_named(migrated, make_role):
    role = make_role(PASSWORD)
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
            sql.Identifier(conn.info.dbname), sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT CREATE, USAGE ON SCHEMA public, pgvkit TO {}").format(sql.Identifier(role)))
    finding = doctor(as_role(migrated, role, PASSWORD), migrations_dir=MIGRATIONS)["privileges"]
    assert finding.status == "fail" and "owned by jarvis" in finding.what and "must be owner" in finding.why


def load_random(url: str, rows: int) -> None:
    """Rows of uniform random floats: incompressible, stored out of line like real embeddings."""
    from pgvector.psycopg import register_vector

    vectors = np.random.default_rng(7).random((rows, 768), dtype=np.float32)
    with psycopg.connect(url) as conn:
        register_vector(conn)
        with conn.cursor().copy("COPY t (e) FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["vector"])
            for v in vectors:
                copy.write_row([v])


def test_an_ivfflat_rebuild_that_will_not_fit_maintenance_work_mem_is_caught_and_the_fix_works(migrated):
    load(migrated, 3000, progress=False)
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER DATABASE {} SET maintenance_work_mem = '1MB'").format(
            sql.Identifier(conn.info.dbname)))
    finding = doctor(migrated, migrations_dir=MIGRATIONS)["index memory"]
    assert finding.status == "fail" and "maintenance_work_mem is 1 MB" in finding.what
    with psycopg.connect(migrated, autocommit=True) as conn:
        with pytest.raises(psycopg.errors.ProgramLimitExceeded, match="memory required"):
            conn.execute("REINDEX INDEX idx_embedding_cosine")
        conn.execute(finding.fix.split(";")[0])
        conn.execute("REINDEX INDEX idx_embedding_cosine")


@pytest.mark.parametrize("lists", [10, 1000])
def test_the_ivfflat_memory_estimate_is_what_pgvector_demands_and_enough(db_url, lists):
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
        conn.execute("CREATE TABLE t (e vector(768))")
    load_random(db_url, 3000)
    create = sql.SQL("CREATE INDEX ON t USING ivfflat (e vector_cosine_ops) WITH (lists = {})").format(sql.Literal(lists))
    with psycopg.connect(db_url, autocommit=True) as conn:
        max_samples = conn.execute("SELECT pg_relation_size('t') / 8192 * 291").fetchone()[0]
        estimate_mb = ivfflat_build_bytes(lists, 768, 3000, max_samples) / 2**20
        conn.execute("SET maintenance_work_mem = '1MB'")
        with pytest.raises(psycopg.errors.ProgramLimitExceeded) as err:
            conn.execute(create)
        demanded_mb = int(re.search(r"memory required is (\d+) MB", str(err.value)).group(1))
        assert estimate_mb >= demanded_mb - 1  # covers the sampling stage's demand

        def build_with(mb: int) -> None:
            conn.execute(sql.SQL("SET maintenance_work_mem = {}").format(sql.Literal(f"{mb}MB")))
            conn.execute(create)
            conn.execute("DROP INDEX t_e_idx")

        build_with(int(estimate_mb) + 1)  # enough for the whole build, k-means included
        with pytest.raises(psycopg.errors.ProgramLimitExceeded):
            build_with(int(estimate_mb * 0.8))  # and within 20% of what it takes


def test_the_hnsw_estimate_grows_with_rows_and_m():
    assert hnsw_build_bytes(50_000, 768) == pytest.approx(50_000 * (4 * 768 + 8) * 1.3, rel=0.01)
    assert hnsw_build_bytes(50_000, 768, m=32) > hnsw_build_bytes(50_000, 768)


def test_an_idle_transaction_holding_the_table_is_named_with_its_pid(migrated):
    with psycopg.connect(migrated) as holder:
        holder.execute("SELECT count(*) FROM ip_asset_embeddings")  # idle in transaction now
        finding = doctor(migrated, migrations_dir=MIGRATIONS)["locks"]
        assert finding.status == "warn" and f"process {holder.info.backend_pid}" in finding.what
        assert f"pg_terminate_backend({holder.info.backend_pid})" in finding.fix
        assert re.search(r"idle in transaction for (under a second|\d+ s) holding", finding.what)  # never "for 0s"
    assert doctor(migrated, migrations_dir=MIGRATIONS)["locks"].status == "pass"


def test_an_invalid_index_is_reported_by_the_doctor_too(migrated):
    leave_invalid_index(migrated, "idx_owner_unique")
    finding = doctor(migrated, migrations_dir=MIGRATIONS)["invalid indexes"]
    assert finding.status == "fail" and "idx_owner_unique" in finding.what


def test_an_index_dropped_by_hand_is_a_doctor_finding_whose_fix_brings_it_back(migrated):
    with psycopg.connect(migrated) as conn:
        conn.execute("DROP INDEX idx_owner_id")
    report = doctor(migrated, migrations_dir=MIGRATIONS)
    finding = report["index idx_owner_id"]
    assert finding.status == "fail" and finding.detail == "missing" and report.exit_code == 2
    assert "dropped or changed by hand" in finding.why
    # the history says 001 is applied, so migrate would do nothing: the fix names the statement
    assert "pgvkit migrate will not re-create idx_owner_id" in finding.fix
    path, line = re.search(r"the statement at (\S+):(\d+) ", finding.fix).groups()
    statement = next(st for st in read_sql_file(Path(path)).statements if st.line == int(line))
    with psycopg.connect(migrated) as conn:
        conn.execute(statement.sql)
    assert doctor(migrated, migrations_dir=MIGRATIONS)["index idx_owner_id"].status == "pass"


def test_verify_and_doctor_report_the_same_check_of_the_schema(migrated):
    with psycopg.connect(migrated) as conn:
        conn.execute("DROP VIEW similar_assets")
    seen_by_verify = verify(migrated, migrations_dir=MIGRATIONS)["view"]
    seen_by_doctor = doctor(migrated, migrations_dir=MIGRATIONS)["view"]
    assert type(seen_by_verify) is type(seen_by_doctor)
    assert (seen_by_verify.status, seen_by_verify.detail) == (seen_by_doctor.status, seen_by_doctor.detail) \
        == ("fail", "similar_assets missing")
    assert seen_by_verify.fix == seen_by_doctor.fix and "002_search_assets.sql:" in seen_by_doctor.fix  # its latest definition


def test_nothing_listening_a_missing_database_and_a_bad_scheme_are_findings_not_tracebacks(admin_url):
    refused = doctor(f"postgresql://app:{PASSWORD}@127.0.0.1:{free_port()}/jarvis")
    assert refused["connection"].status == "fail" and "nothing is listening" in refused["connection"].what
    assert PASSWORD not in json.dumps(refused.to_dict()) and PASSWORD not in str(refused)
    missing = doctor(psycopg.conninfo.make_conninfo(admin_url, dbname="no_such_db"))
    assert missing["connection"].fix.startswith("createdb -O <role> no_such_db")
    scheme = doctor("mysql://root@localhost/jarvis")
    assert "not PostgreSQL" in scheme["connection"].what


def test_a_wrong_password_is_diagnosed_without_showing_it(tcp_server, app_database):
    wrong = app_database["url"].replace(PASSWORD, PASSWORD + "x")
    proc = run_cli("doctor", "--database-url", wrong)
    assert proc.returncode == 2
    assert "rejected the password" in proc.stdout and PASSWORD not in proc.stdout + proc.stderr


def test_real_server_errors_are_explained(migrated):
    with psycopg.connect(migrated) as conn:
        with pytest.raises(psycopg.Error) as dims:
            conn.execute("INSERT INTO ip_asset_embeddings (asset_id, owner_id, embedding) VALUES ('a', 'o', '[1,2,3]')")
    [finding] = explain(dims.value)
    assert finding.area == "data" and "vector of 3 dimensions was written to a vector(768) column" in finding.what
    assert explain("ERROR:  memory required is 18 MB, maintenance_work_mem is 1 MB")[0].fix.startswith(
        "SET maintenance_work_mem = '18MB'")
    assert len(explain("something pgvkit has never seen")) == 0


def test_the_cli_doctor_exit_codes_json_and_error_explainer(make_database, migrated):
    fresh = run_cli("doctor", "--database-url", make_database(), "--json")
    assert fresh.returncode == 2
    data = json.loads(fresh.stdout)
    assert data["ok"] is False and {"area", "status", "what", "why", "fix"} <= set(data["findings"][0])
    healthy = run_cli("doctor", "--database-url", migrated)
    assert healthy.returncode == 0 and "WARN  ivfflat data" in healthy.stdout
    explained = run_cli("doctor", "--error", 'ERROR:  type "vector" does not exist')
    assert explained.returncode == 2 and "search_path" in explained.stdout
    unknown = run_cli("doctor", "--error", "disk on fire")
    assert unknown.returncode == 1 and "does not know" in unknown.stdout


GERMAN = {  # what a server with lc_messages = 'de_DE' says, and the SQLSTATE it sends with it
    "undefined_table": ("42P01", "Relation »ip_asset_embeddings« existiert nicht", "pgvkit status, then pgvkit migrate"),
    "insufficient_privilege": ("42501", "keine Berechtigung für Schema public", "pgvkit doctor names the missing"),
    "numeric_value_out_of_range": ("22003", "integer ist außerhalb des gültigen Bereichs", "bigint"),
}


@pytest.mark.parametrize("condition", GERMAN)
def test_a_server_error_in_another_language_is_diagnosed_by_its_sqlstate(db_url, condition):
    code, message, fix = GERMAN[condition]
    with psycopg.connect(db_url) as conn, pytest.raises(psycopg.Error) as raised:
        conn.execute(sql.SQL("DO $$ BEGIN RAISE EXCEPTION {} USING ERRCODE = {}; END $$").format(
            sql.Literal(message), sql.Literal(condition)))
    assert raised.value.sqlstate == code
    [check] = explain(raised.value).checks
    assert check.status == "fail" and fix in check.fix and code in check.detail


def test_a_failed_migration_says_what_its_sqlstate_means_and_the_fix(db_url, migrations_dir):
    from pgvkit import Migrator
    from pgvkit.errors import MigrationFailed

    directory = migrations_dir({"001_a.sql": "DO $$ BEGIN RAISE EXCEPTION 'Relation »x« existiert nicht'"
                                             " USING ERRCODE = 'undefined_table'; END $$;"})
    with pytest.raises(MigrationFailed, match=r"existiert nicht \(a table or view does not exist \(SQLSTATE 42P01\):"
                                              r" pgvkit status, then pgvkit migrate\)"):
        Migrator(db_url, directory, echo=lambda _: None).migrate()


def test_a_pasted_message_with_its_sqlstate_is_explained_in_any_language():
    assert explain("FEHLER:  42P01: Relation »x« existiert nicht")[0].fix == "pgvkit status, then pgvkit migrate"
    assert explain("ERREUR: le mot de passe ... SQLSTATE: 28P01")[0].name == "connection"
    assert explain("integer out of range")[0].fix.startswith("pgvkit migrate upgrades pgvkit's own history")
    # the code decides the kind; the English words only add names
    assert explain('relation "t" does not exist', sqlstate="42P01")[0].detail == "t does not exist"


def test_the_doctor_knows_a_missing_extension_by_name():
    [check] = explain('ERROR:  extension "pgcrypto" is not available').checks
    assert check.detail == "this server has no pgcrypto extension" and "gen_random_uuid()" in check.fix


def test_a_fix_hands_over_its_sql_statements_without_the_prose_around_them():
    from pgvkit.checks import Check

    grant = Check("search_path", "fail", "", fix='ALTER ROLE "app" IN DATABASE "d" SET search_path = "$user", public, '
                  '"extensions"; GRANT USAGE ON SCHEMA "extensions" TO "app"; (or, as its owner: ALTER EXTENSION vector '
                  'SET SCHEMA public;)')
    assert grant.fix_sql() == ['ALTER ROLE "app" IN DATABASE "d" SET search_path = "$user", public, "extensions"',
                               'GRANT USAGE ON SCHEMA "extensions" TO "app"']
    memory = Check("index memory", "fail", "", fix="SET maintenance_work_mem = '38MB'; before CREATE INDEX / REINDEX")
    assert memory.fix_sql() == ["SET maintenance_work_mem = '38MB'"]
    assert Check("x", "warn", "", fix="run pgvkit migrate").fix_sql() == []
