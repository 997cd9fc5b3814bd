"""Beyond one server: an embedded hot standby (pg_basebackup -R from the same wheel), migrations
that run on the primary only and wait for the standby to replay them."""

import json

import psycopg
import pytest

from pgvkit.migrator.standby import EmbeddedStandby, replay, standby_urls
from pgvkit.server.embedded import EmbeddedServer

from .conftest import Searchers, run_cli


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """An embedded primary and its embedded standby, started by the CLI as a team would."""
    home = tmp_path_factory.mktemp("replicas")
    env = {"PGVKIT_HOME": str(home)}
    started = run_cli("db", "start", env=env)
    assert started.returncode == 0, started.stderr
    standby = run_cli("db", "standby", "start", env=env)
    assert standby.returncode == 0, standby.stderr
    primary = EmbeddedServer(home)
    yield primary, EmbeddedStandby(primary), env
    EmbeddedStandby(primary).destroy()
    primary.destroy()


def test_the_embedded_standby_is_a_hot_standby_of_the_primary_on_its_own_socket(pair, monkeypatch):
    primary, standby, env = pair
    with psycopg.connect(standby.url()) as conn:
        assert conn.execute("SELECT pg_is_in_recovery()").fetchone()[0] is True
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == ""  # a socket only, like the primary
    with psycopg.connect(primary.url()) as conn:
        [(state, mode)] = conn.execute("SELECT state, sync_state FROM pg_stat_replication").fetchall()
    assert state == "streaming"
    status = run_cli("db", "standby", "status", "--json", env=env)
    assert status.returncode == 0 and json.loads(status.stdout)["running"] is True
    monkeypatch.setenv("PGVKIT_HOME", env["PGVKIT_HOME"])
    monkeypatch.delenv("PGVKIT_STANDBY_URLS", raising=False)
    assert standby_urls(primary.url()) == [standby.url()]  # named once: the default when it runs
    monkeypatch.setenv("PGVKIT_STANDBY_URLS", "postgresql://app@replica-1/jarvis, postgresql://app@replica-2/jarvis")
    assert standby_urls(primary.url()) == ["postgresql://app@replica-1/jarvis", "postgresql://app@replica-2/jarvis"]
    assert standby_urls(primary.url(), ["postgresql://app@given/jarvis"]) == ["postgresql://app@given/jarvis"]


def test_migrate_on_the_primary_waits_for_the_standby_and_is_refused_on_the_standby(pair, tmp_path):
    primary, standby, env = pair
    proc = run_cli("migrate", env=env)
    assert proc.returncode == 0, proc.stderr
    assert f"standby {standby.url()}: replayed (lag 0 bytes)" in proc.stdout
    # the wait was real: the standby has the table and the history the moment migrate returns
    with psycopg.connect(standby.url()) as conn:
        assert conn.execute("SELECT to_regclass('ip_asset_embeddings')").fetchone()[0] is not None
        assert conn.execute("SELECT count(*) FROM pgvkit.schema_migrations").fetchone()[0] == 3
    state = replay(primary.url(), standby.url())
    assert state.in_recovery and state.lag_bytes == 0

    verified = run_cli("verify", "--json", env=env)
    assert verified.returncode == 0, verified.stderr
    report = json.loads(verified.stdout)
    [data] = report["standbys"]
    # verify's own catalog reads prune pages the migration left dead (WAL): it gives the standby a moment
    assert data["in_recovery"] and data["lag_bytes"] == 0 and data["history"] == [1, 2, 3]
    assert data["index"] == "idx_embedding_cosine" and data["index_valid"]
    [check] = [c for c in report["checks"] if c["name"] == f"standby {standby.url()}"]
    assert check["status"] == "pass" and "replayed (0 bytes behind)" in check["detail"], check
    status = run_cli("status", env=env)
    assert status.returncode == 0 and f"standby {standby.url()}" in status.stdout and "pass" in status.stdout

    for command in (["migrate"], ["tune", "--rows", "2000"], ["confirm"], ["load", "--rows", "10"],
                    ["model", "backfill", "m", "--from", "x.jsonl"], ["smoke"]):  # every writing command, first thing
        refused = run_cli(*command, "--database-url", standby.url(), env=env)
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        [line] = refused.stderr.strip().splitlines()
        assert line.startswith(f"pgvkit: error: pgvkit {command[0]} writes, and ") and "is a hot standby" in line
        assert "point --database-url (or DATABASE_URL) at the primary" in line


def test_a_standby_stopped_mid_run_gives_one_clear_line_not_a_hang(pair, tmp_path):
    """The primary is migrated; the wait for a standby that is down ends at once with one line
    naming it and the way on, instead of waiting out --wait-standbys."""
    import shutil
    import time

    from .conftest import MIGRATIONS

    primary, standby, env = pair
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations)
    (migrations / "004_labels.sql").write_text("CREATE TABLE asset_labels (id bigint PRIMARY KEY, label text);\n")
    with psycopg.connect(primary.url(database="postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE labels")  # its own database: the others' tests keep theirs as they were
    where = ["--database-url", primary.url(database="labels"), "--migrations", str(migrations)]
    standby.stop()
    try:
        start = time.monotonic()
        proc = run_cli("migrate", *where, "--standby", standby.url(database="labels"), "--wait-standbys", "120",
                       env=env, timeout=110)
        assert time.monotonic() - start < 60
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        [line] = proc.stderr.strip().splitlines()  # and no progress bar of the seed's instant index builds
        assert f"standby {standby.url(database='labels')} cannot be reached" in line
        assert "the primary is migrated" in line
        with psycopg.connect(primary.url(database="labels")) as conn:
            assert conn.execute("SELECT to_regclass('asset_labels')").fetchone()[0] is not None
    finally:
        standby.start()
    caught_up = run_cli("migrate", *where, env=env)  # nothing pending, nothing to wait for
    assert caught_up.returncode == 0, caught_up.stderr


def test_recall_audits_the_standby_where_the_searches_run(pair):
    from pgvkit.migrator.standby import wait_for_replay

    primary, standby, env = pair
    assert run_cli("migrate", env=env).returncode == 0
    loaded = run_cli("load", "--rows", "2000", env=env, timeout=300)
    assert loaded.returncode == 0, loaded.stderr
    wait_for_replay(primary.url(), [standby.url()], 60, progress=False, echo=lambda _: None)

    both = run_cli("recall", "--json", "--sample", "200", env=env, timeout=600)
    assert both.returncode in (0, 1) and "Traceback" not in both.stderr, both.stderr
    result = json.loads(both.stdout)
    [on_standby] = result["standbys"]
    assert result["recorded"] is True and on_standby["recorded"] is False  # stored once, on the primary
    assert on_standby["url"] == standby.url() and on_standby["rows"] == result["rows"] == 2000
    assert on_standby["shapes"]["similar_assets"]["plan"] == result["shapes"]["similar_assets"]["plan"]
    assert "(through search_assets)" in on_standby["shapes"]["similar_assets"]["plan"]

    direct = run_cli("recall", "--sample", "200", "--database-url", standby.url(), env=env, timeout=600)
    assert direct.returncode in (0, 1) and "Traceback" not in direct.stderr, direct.stderr
    assert "not recorded" in direct.stdout and "a standby is read-only" in direct.stdout


def test_watch_looks_at_the_primary_and_the_standby_and_records_each_on_the_primary(pair):
    from pgvkit.migrator.standby import wait_for_replay

    primary, standby, env = pair
    assert run_cli("migrate", env=env).returncode == 0
    with psycopg.connect(primary.url(), autocommit=True) as conn:
        if conn.execute("SELECT count(*) FROM ip_asset_embeddings").fetchone()[0] == 0:
            assert run_cli("load", "--rows", "2000", env=env, timeout=300).returncode == 0
    wait_for_replay(primary.url(), [standby.url()], 60, progress=False, echo=lambda _: None)
    assert run_cli("watch", "--sample", "0", env=env).returncode in (0, 2)  # the baseline of each server

    for url, calls in ((primary.url(), 15), (standby.url(), 25)):  # the application searches both
        with psycopg.connect(url, autocommit=True) as conn:
            for i in range(calls):
                conn.execute("SELECT * FROM search_assets((SELECT embedding FROM ip_asset_embeddings"
                             " ORDER BY id OFFSET %s LIMIT 1))", [i]).fetchall()
    watched = run_cli("watch", "--json", "--sample", "100", env=env, timeout=600)
    assert watched.returncode in (0, 2) and "Traceback" not in watched.stderr, watched.stderr
    on = {s["server"]: s for s in json.loads(watched.stdout)["servers"]}
    replica = f"standby local:{standby.socket_port}"
    assert set(on) == {"primary", replica} and on[replica]["standby"] is True
    assert on["primary"]["searches"]["search_assets"]["calls"] == 15
    assert on[replica]["searches"]["search_assets"]["calls"] == 25  # the standby's own statistics
    assert on[replica]["recall"]["queries"] == {"similar_assets": 100} and on[replica]["recorded"] is True
    assert on[replica]["dead_rows"] is None  # the primary's statistics hold them
    with psycopg.connect(primary.url()) as conn:
        recorded = dict(conn.execute("SELECT server, count(*) FROM pgvkit.watch_snapshots GROUP BY server"))
    assert recorded == {"primary": 2, replica: 2}


def test_an_index_swap_on_the_primary_fails_no_search_on_the_standby(pair, tmp_path):
    """Four readers run search_assets on the standby without pause while the primary builds a
    new HNSW index concurrently, drops the old one and renames the new (pgvkit tune's swap);
    migrate returns once the standby has replayed it all. Every standby search succeeds: a DROP
    INDEX replays as an exclusive lock that searches wait behind, and the embedded standby runs
    with hot_standby_feedback, so the primary's cleanup never removes what a waiting search sees
    (without it, one search in CI waited 30 s and was cancelled)."""
    import shutil

    import numpy as np

    from pgvkit.migrator.standby import wait_for_replay
    from pgvkit.tuning import write_migration

    from .conftest import MIGRATIONS
    from .test_quantized import chosen

    primary, standby, env = pair
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations)
    with psycopg.connect(primary.url(database="postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE swap")
    url, replica = primary.url(database="swap"), standby.url(database="swap")
    where = ["--database-url", url, "--migrations", str(migrations)]
    assert run_cli("migrate", *where, "--standby", replica, env=env).returncode == 0
    assert run_cli("load", "--rows", "3000", *where[:2], "--confirm-database", "swap", env=env, timeout=300).returncode == 0
    wait_for_replay(url, [replica], 60, progress=False, echo=lambda _: None)
    write_migration(url, chosen("vector", "hnsw", 40), migrations)

    queries = np.random.default_rng(1).standard_normal((50, 768)).astype(np.float32)
    # a long transaction in another database of the primary (an export, a report): standby
    # snapshots count it, the primary's cleanup of this database does not; without
    # hot_standby_feedback a search waiting behind the replayed DROP INDEX was cancelled
    with psycopg.connect(primary.url(database="postgres")) as elsewhere, Searchers(replica, queries) as readers:
        elsewhere.execute("SELECT pg_current_xact_id()")
        swapped = run_cli("migrate", *where, "--standby", replica, env=env, timeout=300)
    assert swapped.returncode == 0, swapped.stderr
    assert f"standby {replica}: replayed (lag 0 bytes)" in swapped.stdout
    print(f"standby searches during the swap: {readers.searches}, failed {len(readers.failures)}, longest "
          f"{readers.longest * 1000:.0f} ms")
    assert readers.searches > 100 and readers.failures == []
    with psycopg.connect(replica) as conn:  # the standby has the new index under the old name
        definition = conn.execute("SELECT pg_get_indexdef('idx_embedding_cosine'::regclass)").fetchone()[0]
    assert "USING hnsw" in definition


def test_a_standby_without_hot_standby_feedback_is_named_before_a_swap_and_by_verify(pair, tmp_path):
    """hot_standby_feedback off on the standby: migrate says so in one line before a migration
    that drops an index, with the statement that turns it on; verify's standby check warns with
    the same fix; once it is on again, verify passes and migrate says nothing of it."""
    import shutil

    from .conftest import MIGRATIONS

    primary, standby, env = pair
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations)
    (migrations / "004_drop_owner_index.sql").write_text("DROP INDEX IF EXISTS idx_owner_id;\n")
    (migrations / "004_drop_owner_index.down.sql").write_text(
        "CREATE INDEX IF NOT EXISTS idx_owner_id ON ip_asset_embeddings (owner_id);\n")
    with psycopg.connect(primary.url(database="postgres"), autocommit=True) as conn:
        conn.execute("CREATE DATABASE feedback")
    url, replica = primary.url(database="feedback"), standby.url(database="feedback")
    where = ["--database-url", url, "--migrations", str(migrations), "--standby", replica]
    quiet = run_cli("migrate", "--target", "3", *where, env=env)
    assert quiet.returncode == 0 and "hot_standby_feedback" not in quiet.stdout  # the embedded standby has it on

    def feedback(value: str) -> None:
        with psycopg.connect(replica, autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET hot_standby_feedback = {value}")
            conn.execute("SELECT pg_reload_conf()")

    feedback("off")
    try:
        checked = run_cli("verify", "--json", *where[:2], "--standby", replica, env=env)
        [check] = [c for c in json.loads(checked.stdout)["checks"] if c["name"] == f"standby {replica}"]
        assert check["status"] == "warn" and check["detail"] == "hot_standby_feedback is off"
        assert "ALTER SYSTEM SET hot_standby_feedback = on" in check["fix"]
        migrated = run_cli("migrate", *where, env=env)
        assert migrated.returncode == 0, migrated.stderr
        [line] = [x for x in migrated.stdout.splitlines() if "hot_standby_feedback" in x]
        assert line.startswith(f"warning: standby {replica} has hot_standby_feedback off: 004_drop_owner_index")
        assert "ALTER SYSTEM SET hot_standby_feedback = on; SELECT pg_reload_conf();" in line
    finally:
        feedback("DEFAULT")  # back to the embedded standby's own setting
    checked = run_cli("verify", "--json", *where[:2], "--standby", replica, env=env)
    [check] = [c for c in json.loads(checked.stdout)["checks"] if c["name"] == f"standby {replica}"]
    assert check["status"] == "pass", check
