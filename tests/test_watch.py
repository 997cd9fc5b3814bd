"""pgvkit watch: what the application's searches cost, read from the server's own statistics as
differences between watches, beside a recall sample; past a threshold it exits 2 and says why."""

from __future__ import annotations

import json
import math
import threading
import time
from datetime import datetime, timezone

import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pgvector.psycopg import register_vector

from pgvkit.audit.recall import audit
from pgvkit.migrator.scratch import fresh_database
from pgvkit.notebooks.demo import load_team_rows
from pgvkit.server.embedded import EmbeddedServer
from pgvkit.watch.history import history, latest_findings
from pgvkit.watch.look import Snapshot, Thresholds, findings, watch
from pgvkit.watch.statements import Counters, Interval

from .conftest import MIGRATIONS, as_role, real_embeddings, run_cli


def searches(url: str, vectors, *, readers: int = 4, each: int = 100) -> list[float]:
    """`readers` connections calling search_assets `each` times, as the application does; the
    milliseconds each call took, measured by the caller."""
    took: list[float] = []

    def read(r: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            register_vector(conn)
            with conn.cursor(binary=True) as cur:
                for i in range(each):
                    start = time.perf_counter()
                    cur.execute("SELECT * FROM search_assets(%s)", [vectors[(r * each + i) % len(vectors)]],
                                prepare=True).fetchall()
                    took.append((time.perf_counter() - start) * 1000)

    threads = [threading.Thread(target=read, args=(r,)) for r in range(readers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return took


def failed(result) -> dict[str, str]:
    return {c.name: c.detail for s in result.snapshots for c in s.findings if c.status == "fail"}


@pytest.fixture(scope="module")
def stats_server(tmp_path_factory):
    """A server set up as pgvkit's embedded default is: pg_stat_statements loaded, track_functions
    = pl (the suite's own server runs without them: they cost every statement a little)."""
    server = EmbeddedServer(tmp_path_factory.mktemp("stats")).start()
    yield server
    server.destroy()


@pytest.fixture
def migrated(stats_server, request):
    """A fresh database on that server with the migrations applied."""
    from pgvkit import Migrator

    url = fresh_database(stats_server.url(database="postgres"), f"watch_{request.node.name[5:40]}")
    Migrator(url, MIGRATIONS, echo=lambda _: None).migrate()
    return url


@pytest.fixture
def make_role(stats_server):
    """Login roles on that server (gone with it)."""
    names = iter(range(1000))

    def make() -> str:
        name = f"watcher_{next(names)}"
        with psycopg.connect(stats_server.url(database="postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE ROLE "{name}" LOGIN')
        return name

    return make


@pytest.fixture
def store(migrated):
    """5,000 real embeddings under an HNSW index, pg_stat_statements created, autovacuum held off
    (as when it falls behind)."""
    load_team_rows(migrated, real_embeddings()[:5000])
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        conn.execute("DROP INDEX idx_embedding_cosine")
        conn.execute("CREATE INDEX idx_embedding_hnsw ON ip_asset_embeddings USING hnsw (embedding vector_cosine_ops)")
        conn.execute("ALTER TABLE ip_asset_embeddings SET (autovacuum_enabled = off)")
        conn.execute("VACUUM ANALYZE ip_asset_embeddings")
    return migrated


@pytest.mark.slow
def test_watch_counts_every_application_search_and_trips_on_a_plan_change_and_dead_rows(store):
    queries = real_embeddings()[-500:]  # new images: not in the table
    first = watch(store, sample=100, queries=queries[:50])
    assert first.exit_code == 0 and first.snapshots[0].recorded
    assert "the first watch of this server" in " ".join(first.snapshots[0].notes)

    took = searches(store, queries)
    audit(store, sample=50, record=False, progress=False, echo=lambda _: None)  # pgvkit's own: not the application's
    with psycopg.connect(store, autocommit=True) as conn:  # a caller that writes its own ORDER BY
        register_vector(conn)
        for q in queries[:30]:
            conn.execute("SELECT id FROM ip_asset_embeddings ORDER BY embedding <=> %s LIMIT 10", [q]).fetchall()
    second = watch(store, sample=100, queries=queries[:50])
    [snap] = second.snapshots
    seen = snap.interval.figures()
    assert seen["search_assets"]["calls"] == len(took) == 400  # every one, and not the audit's own searches
    assert seen["function"]["calls"] > 450 and seen["direct"]["calls"] == 30  # the function counts pgvkit's calls too
    assert 0 < seen["search_assets"]["mean_ms"] <= sum(took) / len(took)  # the server's part of what callers waited
    assert seen["search_assets"]["rows_per_call"] == 10.0
    assert snap.plan == "index idx_embedding_hnsw" and second.exit_code == 0
    assert snap.recall["similar_assets"] >= 0.95 and snap.recall["new_vectors"] >= 0.95

    with psycopg.connect(store, autocommit=True) as conn:
        conn.execute("ALTER FUNCTION search_assets(vector, integer, text) SET hnsw.ef_search = 1000")
    raised = watch(store, sample=0)
    assert raised.exit_code == 2
    assert "sequential scan (it was index idx_embedding_hnsw at the last watch" in failed(raised)["search plan"]
    assert "hnsw.ef_search = 1000" in failed(raised)["search plan"]

    with psycopg.connect(store, autocommit=True) as conn:
        conn.execute("ALTER FUNCTION search_assets(vector, integer, text) SET hnsw.ef_search = 40")
        assert conn.execute("DELETE FROM ip_asset_embeddings WHERE id % 10 < 3").rowcount == 1500
        conn.execute("SELECT pg_stat_force_next_flush()")  # flushed when this session is next idle
        conn.execute("SELECT 1")
    deleted = watch(store, sample=0)
    assert deleted.exit_code == 2 and set(failed(deleted)) == {"dead rows"}
    assert failed(deleted)["dead rows"].startswith("ip_asset_embeddings has 30% dead rows (1,500 of 5,000)")
    assert "VACUUM (ANALYZE) ip_asset_embeddings" in deleted.snapshots[0].findings[-1].fix

    with psycopg.connect(store) as conn:  # what doctor and verify read back, and 07's series
        assert {c.name: c.status for c in latest_findings(conn)} == {"watch (primary)": "fail"}
        frame = history(conn)
    assert list(frame["server"]) == ["primary"] * 4 and list(frame["searches"])[1] == 400
    assert list(frame["plan"]) == ["index idx_embedding_hnsw"] * 2 + ["sequential scan", "index idx_embedding_hnsw"]


def test_a_reset_a_missing_extension_or_a_least_privileged_role_is_said_never_a_negative_rate(migrated, make_role):
    load_team_rows(migrated, real_embeddings()[:500])
    queries = real_embeddings()[-50:]
    without = run_cli("watch", "--sample", "0", "--database-url", migrated)
    assert without.returncode == 0, without.stderr
    assert "pg_stat_statements is loaded but not created in this database (as a superuser: CREATE EXTENSION " \
           "pg_stat_statements;)" in without.stdout

    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION pg_stat_statements")
    assert run_cli("watch", "--sample", "0", "--database-url", migrated).returncode == 0
    searches(migrated, queries, readers=1, each=50)
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_statements_reset()")
    searches(migrated, queries, readers=1, each=20)
    after = run_cli("watch", "--json", "--sample", "0", "--database-url", migrated)
    [snap] = json.loads(after.stdout)["servers"]
    assert snap["searches"]["search_assets"]["calls"] == 20  # counted from the reset
    assert snap["searches"]["function"]["calls"] == 70  # its own counters were not reset
    assert any("pg_stat_statements was reset at" in n for n in snap["notes"])

    with psycopg.connect(migrated, autocommit=True) as other:  # a watch still running when cron starts the next
        other.execute("SELECT pg_advisory_lock(hashtext('pgvkit watch ip_asset_embeddings'))")
        second = run_cli("watch", "--sample", "0", "--database-url", migrated)
    assert second.returncode == 2 and second.stderr.startswith("pgvkit: error: another pgvkit watch of "
                                                              "ip_asset_embeddings is running on this database")

    watcher = make_role()  # the least a watch can run with: read the table, nothing of pgvkit's schema
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute(f'GRANT SELECT ON ip_asset_embeddings TO "{watcher}"')
    least = run_cli("watch", "--sample", "20", "--database-url", as_role(migrated, watcher))
    assert least.returncode in (0, 2) and "Traceback" not in least.stderr, least.stderr
    assert "statements of other roles, without their text: they may be searches (GRANT pg_read_all_stats TO " \
           "the role pgvkit watch runs as)" in least.stdout, least.stderr
    assert "not recorded: this role may not create or write pgvkit.watch_snapshots" in least.stdout


class PlainServer(EmbeddedServer):
    """A server as most are set up: no pg_stat_statements loaded, track_functions off."""

    settings = ()


def test_without_pg_stat_statements_watch_still_records_recall_and_says_how_to_see_the_rest(tmp_path):
    server = PlainServer(tmp_path / "plain").start()
    try:
        url = fresh_database(server.url(database="postgres"), "plain")
        run = run_cli("migrate", "--database-url", url, "--migrations", str(MIGRATIONS))
        assert run.returncode == 0, run.stderr
        load_team_rows(url, real_embeddings()[:1000])
        with psycopg.connect(url, autocommit=True) as conn:  # exact searches: a small table needs no index
            conn.execute("DROP INDEX idx_embedding_cosine")
        proc = run_cli("watch", "--sample", "100", "--database-url", url)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        lines = proc.stdout.splitlines()
        assert ("warning: primary: search latency and calls per statement: pg_stat_statements is not loaded (set "
                "shared_preload_libraries = 'pg_stat_statements' in postgresql.conf, restart, then CREATE EXTENSION "
                "pg_stat_statements;)") in lines
        assert ("warning: primary: search_assets's own calls and time: track_functions is none (ALTER SYSTEM SET "
                "track_functions = 'pl'; SELECT pg_reload_conf();)") in lines
        with psycopg.connect(url) as conn:
            recall, searched = conn.execute("SELECT recall, searches FROM pgvkit.watch_snapshots").fetchone()
        assert recall["queries"] == {"similar_assets": 100} and recall["similar_assets"] == 1.0
        assert searched == {}  # nothing seen, nothing made up
    finally:
        server.destroy()


def cumulative(latencies: list[float]) -> Counters:
    """What pg_stat_statements keeps of these calls: calls, total, mean and the population stddev."""
    n = len(latencies)
    mean = sum(latencies) / n if n else 0.0
    sd = math.sqrt(sum((x - mean) ** 2 for x in latencies) / n) if n else 0.0
    return Counters(n, sum(latencies), n * (sd * sd + mean * mean))


times = st.lists(st.floats(0.01, 5000, allow_nan=False), max_size=60)


@given(before=times, between=st.lists(st.floats(0.01, 5000, allow_nan=False), min_size=1, max_size=60))
def test_the_difference_of_two_readings_is_the_mean_and_stddev_of_the_calls_between_them(before, between):
    interval = cumulative(before + between) - cumulative(before)
    mean = sum(between) / len(between)
    assert interval.calls == len(between)
    assert interval.mean_ms == pytest.approx(mean, rel=1e-6)
    sd = math.sqrt(sum((x - mean) ** 2 for x in between) / len(between))
    assert interval.stddev_ms == pytest.approx(sd, rel=1e-4, abs=1e-3 * (1 + max(before + between)))
    assert interval.p95_ms(cap=max(between)) <= max(between)


def _snapshot(plan: str, p95_calls: tuple[float, float], **kw) -> Snapshot:
    mean, sd = p95_calls
    interval = Interval(60.0, {"search_assets": Counters(1000, 1000 * mean, 1000 * (sd * sd + mean * mean))},
                        None, {})
    return Snapshot("primary", False, datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc), interval, plan,
                    "CREATE INDEX idx ON ip_asset_embeddings USING hnsw (embedding vector_cosine_ops)",
                    {"hnsw.ef_search": "400"}, **kw)


def test_a_slower_search_after_a_plan_change_is_named_with_both_latencies_and_the_plan():
    before = {"at": datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc), "plan": "index idx",
              "searches": {"search_assets": {"calls": 900, "mean_ms": 2.0, "p95_ms_est": 3.1}}}
    found = {c.name: c for c in findings(_snapshot("sequential scan", (30.0, 6.0)), before, Thresholds(p95_ms=200))}
    assert found["slower searches"].status == "warn"
    assert found["slower searches"].detail.startswith(
        "searches got slower since 2026-11-30 09:00: p95 (est.) 3.1 ms -> 40.")
    assert found["slower searches"].detail.endswith(" ms when the plan became a sequential scan")
    assert found["search plan"].status == "fail" and "hnsw.ef_search = 400" in found["search plan"].detail
    assert found["search latency"].status == "pass"  # within its budget: slower is said, not failed
    steady = findings(_snapshot("index idx", (2.1, 0.5)), before, Thresholds())
    assert {c.name: c.status for c in steady} == {"search plan": "pass", "search latency": "pass"}


@pytest.mark.parametrize("statement, group", [
    ("SELECT * FROM search_assets($1)", "search_assets"),
    ("SELECT * FROM search_assets($1, $2, $3)", "search_assets"),
    ("select id, asset_id from public.search_assets($1::vector, $2)", "search_assets"),  # schema-qualified, a cast
    ("SELECT search_assets.id, search_assets.distance FROM search_assets($1, $2)", "search_assets"),  # SQLAlchemy
    ("WITH q AS (SELECT $1::vector AS v) SELECT s.* FROM q, LATERAL search_assets(q.v, $2) AS s", "search_assets"),
    ("SELECT * FROM similar_assets WHERE source_asset_id = $1 LIMIT $2", "search_assets"),
    ("SELECT id FROM ip_asset_embeddings ORDER BY embedding <=> $1 LIMIT $2", "direct"),
    ("SELECT id, 1 - (embedding <=> $1) AS score FROM ip_asset_embeddings WHERE owner_id = $2 ORDER BY 2 DESC", "direct"),
    ("SELECT pg_get_functiondef(to_regprocedure($1))", None),  # a catalog lookup that names it
    ("SELECT to_regprocedure('search_assets(vector,integer,text)')", None),
    ("ALTER FUNCTION search_assets(vector, integer, text) SET hnsw.ef_search = 400", None),
    ("CREATE OR REPLACE FUNCTION search_assets(query vector, k integer DEFAULT $1) RETURNS TABLE (id bigint)", None),
    ("EXPLAIN (ANALYZE) SELECT * FROM search_assets($1)", None),  # someone looking, not the application
    ("SELECT id, distance, true AS pgvkit_audit FROM search_assets($1, 10)", None),  # pgvkit's own
    ("SELECT count(*) FROM ip_asset_embeddings", None),
])
def test_statements_are_grouped_by_how_they_search(statement, group):
    from pgvkit.watch.statements import _group

    assert _group(statement, "search_assets", toplevel=True) == group


def test_a_restart_and_a_statement_evicted_and_back_are_said_and_counted_from_their_new_start():
    from pgvkit.watch.statements import Reading, difference

    t0 = datetime(2026, 12, 1, 9, 0, tzinfo=timezone.utc)
    before = Reading(t0, t0.replace(hour=8), {
        "10:1:true": ("search_assets", Counters(1000, 2000.0, 5000.0), "2026-12-01 08:00", 9.0),
        "10:2:true": ("direct", Counters(50, 500.0, 6000.0), "2026-12-01 08:00", 30.0)},
        stats_reset="2026-12-01 08:00", dealloc=3, function=Counters(1200, 2500.0))
    after_crash = Reading(t0.replace(hour=10), t0.replace(minute=30), {
        "10:1:true": ("search_assets", Counters(1300, 2600.0, 6500.0), "2026-12-01 08:00", 9.0),
        "10:2:true": ("direct", Counters(20, 200.0, 2400.0), "2026-12-01 09:40", 30.0)},  # evicted, back since
        stats_reset="2026-12-01 08:00", dealloc=5, function=Counters(90, 180.0))  # a crash lost the function's
    found = difference(after_crash, Reading.from_baseline(before.baseline()))  # as stored and read back
    assert found.groups["search_assets"].calls == 300 and found.groups["direct"].calls == 20
    assert found.groups["search_assets"].mean_ms == pytest.approx(2.0)
    assert found.function.calls == 90 and found.seconds == 3600
    said = " ".join(found.notes)
    assert "the server restarted at 2026-12-01 09:30:00 UTC" in said
    assert "2 statements were evicted from pg_stat_statements" in said and "raise pg_stat_statements.max" in said
    assert "1 search statements' statistics were reset or evicted since the last watch" in said
