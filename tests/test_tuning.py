"""Index tuning against a real server: ground truth, sweeps, the recommendation, and the
migration it writes (applied, verified, rolled back)."""

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import psycopg
import pytest
from pgvector.psycopg import register_vector
from psycopg import sql

from pgvkit import search
from pgvkit.data.inserts import load
from pgvkit.errors import PgvkitError
from pgvkit.migrator.files import read_migrations
from pgvkit.tuning import (GroundTruth, IndexNotUsed, SCHEMA, WORKLOAD, Config, build, cleanup, exact_knn,
                           near_duplicates, prepare, recall_at_k, recommend, require_index, sweep, tune, write_migration)
from pgvkit.health.verify import verify

from .conftest import MIGRATIONS, ROOT, real_embeddings, run_cli

SMALL_GRID = {"ivfflat_lists": [55], "probes": [1, 4, 16], "hnsw": [(16, 64)], "ef_search": [10, 40],
              "kinds": ["vector"]}


def brute_force(vectors, queries, k, ids, exclude=None):
    """The obvious O(n) reference: float64 cosine distance to every vector, sorted."""
    out = []
    for i, q in enumerate(queries):
        d = [(1 - float(np.dot(q, v)) / (np.linalg.norm(q) * np.linalg.norm(v)), int(ids[j]))
             for j, v in enumerate(vectors.astype(np.float64)) if exclude is None or ids[j] != exclude[i]]
        out.append([j for _, j in sorted(d)[:k]])
    return out


def scratch_exists(url) -> bool:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT to_regclass(%s)", [f"{SCHEMA}.{WORKLOAD}"]).fetchone()[0] is not None


def test_exact_knn_is_the_brute_force_answer_with_and_without_self_exclusion():
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((300, 16)).astype(np.float32)
    ids = rng.permutation(np.arange(1000, 1300))
    queries = vectors[:25] + 0.01 * rng.standard_normal((25, 16)).astype(np.float32)
    truth = exact_knn(vectors, queries, 7, ids=ids, chunk=8)
    assert truth.ids.tolist() == brute_force(vectors, queries, 7, ids)
    own = exact_knn(vectors, vectors[:25], 7, ids=ids, exclude=ids[:25])
    assert own.ids.tolist() == brute_force(vectors, vectors[:25], 7, ids, exclude=ids[:25])
    assert not any(ids[i] in own.ids[i] for i in range(25))
    assert np.all(np.diff(truth.distances, axis=1) >= 0)


def test_a_query_is_a_near_duplicate_when_its_nearest_neighbour_is_far_closer_than_its_kth():
    spread = GroundTruth(np.zeros((2, 3), np.int64), np.array([[0.30, 0.35, 0.40], [0.20, 0.22, 0.25]]))
    copied = GroundTruth(np.zeros((2, 3), np.int64), np.array([[0.001, 0.35, 0.40], [0.20, 0.22, 0.25]]))
    assert near_duplicates(spread) == 0.0 and near_duplicates(copied) == 0.5


def test_recall_counts_overlap_and_treats_exact_ties_as_right():
    truth = exact_knn(np.eye(4, dtype=np.float32), np.array([[1, 0.2, 0, 0]], np.float32), 2)
    assert truth.ids[0, 0] == 0
    assert recall_at_k(truth, [[0, truth.ids[0, 1]]]).tolist() == [1.0]
    # vectors 2 and 3 are equidistant from the query: either is a right second neighbour
    tied = exact_knn(np.eye(4, dtype=np.float32), np.array([[1, 0, 0, 0]], np.float32), 2)
    other = 5 - tied.ids[0, 1]  # the tie partner (2 <-> 3)
    assert recall_at_k(tied, [[0, other]]).tolist() == [0.5]  # without distances only ids count
    assert recall_at_k(tied, [[0, other]], [[0.0, float(tied.distances[0, 1])]]).tolist() == [1.0]


def test_the_table_source_takes_new_vector_queries_out_of_the_index_and_similar_ones_out_of_their_answers(migrated):
    load(migrated, 1500, progress=False)
    workload = prepare(migrated, queries=20, echo=lambda _: None)
    try:
        with psycopg.connect(migrated) as conn:
            scratch = {r[0] for r in conn.execute(sql.SQL("SELECT id FROM {}").format(sql.Identifier(SCHEMA, WORKLOAD)))}
        assert workload.source == "table" and workload.live_rows == 1500 and workload.rows == 1500 - 2 * 20
        assert scratch == set(workload.ids.tolist())
        # new vectors: rows taken out of the scratch table, so no candidate index holds them
        new = np.concatenate([workload.queries, workload.fresh_queries])
        nearest = (new / np.linalg.norm(new, axis=1, keepdims=True)) @ (
            workload.vectors / np.linalg.norm(workload.vectors, axis=1, keepdims=True)).T
        assert workload.query_ids is None and nearest.max() < 1 - 1e-6
        # similar assets: rows of the index, each left out of its own answer
        assert set(workload.similar_ids) <= scratch and set(workload.similar_ids).isdisjoint(workload.similar_fresh_ids)
        truth = exact_knn(workload.vectors, workload.similar_queries, 10, ids=workload.ids,
                          exclude=workload.similar_ids)
        assert not any(q in row for q, row in zip(workload.similar_ids, truth.ids))
        assert "new vectors: 40 rows of ip_asset_embeddings taken out of the workload" in workload.describe()
    finally:
        cleanup(migrated)
    assert not scratch_exists(migrated)


def test_a_sweep_recommends_a_configuration_meeting_the_target(migrated):
    _, result, rec = tune(migrated, target=0.9, rows=3000, queries=60, grid=SMALL_GRID, progress=False,
                          echo=lambda _: None)
    assert rec.met and rec.point.recall_low >= 0.9 and rec.point.index_used
    cheaper = [p for p in result.points if p.index_used and p.recall_low >= 0.9 and p.p95_ms < rec.point.p95_ms]
    assert cheaper == []
    assert {b["index"] for b in result.builds} == {"ivfflat(lists=55)", "hnsw(m=16, ef_construction=64)"}
    assert all(b["maintenance_work_mem"].endswith("MB") for b in result.builds)
    assert not scratch_exists(migrated)  # candidates are built on the scratch copy, which is gone


def test_a_candidate_is_not_searched_at_larger_settings_once_its_recall_is_enough(migrated):
    load(migrated, 1500, progress=False)
    workload = prepare(migrated, queries=30, echo=lambda _: None)
    grid = {"ivfflat_lists": [], "hnsw": [(16, 64)], "ef_search": [10, 20, 40, 80], "kinds": ["vector"]}
    try:
        every = sweep(migrated, workload, grid=grid, progress=False, echo=lambda _: None, enough=1.01)
        first = sweep(migrated, workload, grid=grid, progress=False, echo=lambda _: None, enough=0.0)
    finally:
        cleanup(migrated)
    assert [p.search_value for p in every.points] == [10, 20, 40, 80]
    assert [p.search_value for p in first.points] == [10] and first.points[0].index_used


def _load_rows(url: str, vectors: np.ndarray) -> None:
    from pgvkit.data.bulk import Column, copy_arrays

    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    copy_arrays(url, sql.Identifier("ip_asset_embeddings"),
                [Column("id", ids), Column("asset_id", np.array([f"s3://assets/{i:06d}.jpg".encode() for i in ids])),
                 Column("owner_id", np.array([b"team-a"] * len(ids))), Column("embedding", vectors)])


@pytest.mark.parametrize("copies", [False, True])
def test_new_vector_queries_that_have_near_duplicates_left_in_the_table_are_called_out(migrated, copies):
    """Rows taken out of a table as new-vector queries are new images only if nothing like them
    stays behind: with a re-upload of every image (a copy with a little noise) they are found too
    easily, and tune says so and how to measure new images instead."""
    rows = real_embeddings()[:1500]
    if copies:
        noisy = rows + np.random.default_rng(1).normal(0, 0.002, rows.shape).astype(np.float32)
        rows = np.concatenate([rows, noisy / np.linalg.norm(noisy, axis=1, keepdims=True)])
    _load_rows(migrated, rows)
    said = []
    workload, _, _ = tune(migrated, rows=len(rows), queries=30, progress=False, echo=said.append, shapes=("new",),
                          grid={"ivfflat_lists": [], "hnsw": [(16, 64)], "ef_search": [40], "kinds": ["vector"]})
    warned = [line for line in said if line.startswith("WARNING:") and "new-vector queries" in line]
    assert len(warned) == int(copies) and ("have a near-duplicate left in the sample" in workload.describe()) == copies
    assert all("pass --query-file with new images" in line for line in warned)


def test_a_target_nothing_meets_still_hands_confirm_the_closest_index_marked_below_it(migrated, tmp_path):
    grid = {"ivfflat_lists": [55], "probes": [1], "hnsw": [], "ef_search": [], "kinds": ["vector"]}
    _, result, rec = tune(migrated, target=0.999, rows=3000, queries=60, grid=grid, progress=False,
                          echo=lambda _: None)
    assert not rec.met and rec.point is None and rec.below is not None
    assert rec.message.startswith("below the target at the predicted size: nothing reached recall@10 >= 0.999")
    assert "ivfflat(lists=55)" in rec.message and f"lower bound the decision used: {rec.below.recall_low:.3f}" in rec.message
    assert "pgvkit tune --hnsw 32:200 --write-migration" in rec.message  # a command that works
    up, _ = write_migration(migrated, rec, tmp_path)
    text = up.read_text()
    assert "-- below the target at the predicted size: confirm decides: its lower bound" in text
    assert "WITH (lists = 55)" in text and "; below the target at the predicted size: confirm decides'" in text


@pytest.mark.slow
def test_when_nothing_of_the_grid_would_reach_the_target_at_full_size_a_denser_graph_is_swept_on_the_same_sample(
        migrated, monkeypatch):
    """20,500 real rows tuned on a sample of 20,000 (and 10,000, 5,000) at a target no graph of
    the grid reaches once carried: before the smaller samples, a denser graph is built on the
    largest one and measured beside the others, carried like them, said in a line. (Here m = 32
    with ef_construction 80, cheaper to build than the (32, 200) tune adds, and denser than (24, 100).)"""
    from pgvkit.tuning import pipeline

    monkeypatch.setattr(pipeline, "DENSER", (32, 80))
    _load_rows(migrated, real_embeddings()[:20_500])
    said = []
    _, result, rec = tune(migrated, target=0.9995, rows=20_000, queries=40, shapes=("new",), progress=False,
                          echo=said.append, grid={"ef_search": [20, 80], "kinds": ["vector"]}, candidates=("vector",))
    extended = [line for line in said if "a denser graph, hnsw(m=32, ef_construction=80), on the same" in line]
    assert len(extended) == 1 and "nothing measured reaches recall@10 >= 0.9995 by its lower bound" in extended[0]
    assert {p.config.label for p in result.points} == {"hnsw(m=16, ef_construction=64)",
                                                      "hnsw(m=24, ef_construction=100)",
                                                      "hnsw(m=32, ef_construction=80)"}
    dense = [p for p in result.points if p.config.label == "hnsw(m=32, ef_construction=80)"]
    assert all(p.note.startswith("predicted at 20,500 rows") for p in dense)  # carried like the others
    if rec.met:  # the denser graph found every true neighbour of the 40 queries: what the extension is for
        assert rec.point.config.label == "hnsw(m=32, ef_construction=80)"
    else:  # still short: the closest is written below the target, for confirm to decide
        assert rec.below is not None


def test_a_denser_graph_whose_build_would_pass_the_budget_is_named_as_the_command_to_run_not_built(monkeypatch):
    from types import SimpleNamespace

    from pgvkit.tuning import pipeline
    from pgvkit.tuning.sweep import Point, SweepResult

    def point(m: int, efc: int, recall: float) -> Point:
        p = Point(Config("hnsw", (("m", m), ("ef_construction", efc))), "hnsw.ef_search", 80, True, p95_ms=2.0,
                  build_s=m * efc / 15)  # (24, 100): 160 s on the sample
        p.measured("new", np.full(200, recall), np.full(200, recall))
        return p

    top = SweepResult("w", 10, [point(16, 64, 0.95), point(24, 100, 0.97)], live_rows=1_000_000)
    workload = SimpleNamespace(rows=100_000, live_rows=1_000_000, k=10)
    said = []
    monkeypatch.setattr(pipeline, "sweep", lambda *a, **kw: pytest.fail("nothing may be built"))
    pipeline._denser("postgresql:///unused", workload, top, {}, None, 0.99, None, True, False, said.append, 0.998)
    [line] = said
    assert line.startswith("carried to 1,000,000 rows at the default fall, nothing measured reaches recall@10 >= 0.99")
    assert "would take about 7 min to build on 100,000 rows: not tried (pgvkit tune --hnsw 32:200 tries it)" in line
    said.clear()
    pipeline._denser("postgresql:///unused", workload, top, {}, None, 0.85, None, True, False, said.append, 0.998)
    assert said == []  # 0.97 on 100,000 rows carried at rows^(0.45 + 0.15): 0.88 >= 0.85, nothing to add


def test_the_explain_guard_refuses_a_query_shape_the_index_cannot_serve(migrated):
    workload = prepare(migrated, source="synthetic", rows=2000, queries=5, echo=lambda _: None)
    try:
        with psycopg.connect(migrated, autocommit=True) as conn:
            register_vector(conn)
            config = Config("hnsw", (("m", 8), ("ef_construction", 32)))
            build(migrated, conn, config, workload.rows, workload.dims, progress=False)
            table = sql.Identifier(SCHEMA, WORKLOAD)
            cosine = sql.SQL("SELECT id FROM {} ORDER BY embedding <=> %(q)s LIMIT 10").format(table)
            require_index(conn, cosine, {"q": workload.queries[0]}, config.index_name)
            l2 = sql.SQL("SELECT id FROM {} ORDER BY embedding <-> %(q)s LIMIT 10").format(table)
            with pytest.raises(IndexNotUsed, match="<=> for vector_cosine_ops"):
                require_index(conn, l2, {"q": workload.queries[0]}, config.index_name)
    finally:
        cleanup(migrated)


def test_the_written_migration_applies_verifies_and_rolls_back_to_the_old_index(migrated, tmp_path):
    """... and the owners' own search setting a confirm bound for the old index goes with it, and
    comes back with it."""
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations)
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("ALTER FUNCTION search_assets(vector, integer, text) SET pgvkit.owner_ef_search = '80'")
    proc = run_cli("tune", "--target-recall", "0.9", "--rows", "3000", "--queries", "60", "--json", "--candidates",
                   "vector", "--write-migration", "--database-url", migrated, "--migrations", str(migrations),
                   timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["recommendation"]["met"] and len(data["migration"]) == 2
    choice = data["recommendation"]["choice"]
    method = choice["index"].split("(")[0]
    param, value = choice["setting"].split("=")

    assert run_cli("migrate", "--database-url", migrated, "--migrations", str(migrations)).returncode == 0
    with psycopg.connect(migrated) as conn:
        am = conn.execute("SELECT am.amname FROM pg_class c JOIN pg_am am ON am.oid = c.relam"
                          " WHERE c.relname = 'idx_embedding_cosine'").fetchone()[0]
        conn.execute("SELECT '[1]'::vector")
        setting = conn.execute("SELECT current_setting(%s)", [param]).fetchone()[0]
    assert am == method and setting == value  # a new session sees the database-level setting
    with psycopg.connect(migrated) as conn:
        assert "pgvkit.owner_ef_search" not in search.settings(conn)  # measured on the index replaced
    report = verify(migrated, migrations_dir=migrations)
    assert report.ok, str(report)
    assert report["index idx_embedding_cosine"].detail.startswith(method)

    rollback = run_cli("rollback", "--to", "1", "--yes", "--database-url", migrated, "--migrations", str(migrations),
                       "--confirm-database", psycopg.conninfo.conninfo_to_dict(migrated)["dbname"])
    assert rollback.returncode == 0, rollback.stderr
    with psycopg.connect(migrated) as conn:
        definition = conn.execute("SELECT pg_get_indexdef('idx_embedding_cosine'::regclass)").fetchone()[0]
        settings = conn.execute("SELECT coalesce(array_to_string(setconfig, ','), '') FROM pg_db_role_setting"
                                " WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())"
                                " AND setrole = 0").fetchone()
        leftovers = conn.execute("SELECT count(*) FROM pg_class WHERE relname LIKE 'idx_embedding_cosine_%'").fetchone()
    assert "USING ivfflat (embedding vector_cosine_ops) WITH (lists='100')" in definition
    assert leftovers[0] == 0
    assert settings is None or param not in settings[0]  # the database setting is back to the default
    assert verify(migrated, migrations_dir=migrations).ok
    down = Path(data["migration"][1]).read_text()  # (the rollback above also undid 002, which made the function)
    assert "ALTER FUNCTION search_assets(vector, integer, text) SET pgvkit.owner_ef_search = '80'" in down


def test_a_killed_tune_leaves_a_scratch_table_the_next_run_removes(migrated):
    code = ("import sys; from pgvkit.tuning import tune; "
            f"tune({migrated!r}, rows=20000, queries=20, source='synthetic', progress=False, "
            "echo=lambda line: print(line, flush=True))")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    for line in proc.stdout:
        if line.startswith("building"):
            break  # the scratch table is full and an index build is running
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert scratch_exists(migrated)
    _, _, rec = tune(migrated, target=0.5, rows=2000, queries=20, grid={**SMALL_GRID, "hnsw": []},
                     progress=False, echo=lambda _: None)
    assert rec.met and not scratch_exists(migrated)
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT count(*) FROM ip_asset_embeddings").fetchone()[0] == 0  # live table untouched


def test_recommend_prefers_the_lowest_p95_among_points_meeting_the_target():
    from pgvkit.tuning import Point, SweepResult

    slow = Point(Config("hnsw", (("m", 16),)), "hnsw.ef_search", 80, True, recall=0.99, recall_low=0.98, p95_ms=2.0)
    fast = Point(Config("ivfflat", (("lists", 10),)), "ivfflat.probes", 4, True, recall=0.97, recall_low=0.96,
                 p95_ms=1.0)
    short = Point(Config("ivfflat", (("lists", 10),)), "ivfflat.probes", 1, True, recall=0.9, recall_low=0.88,
                  p95_ms=0.5)
    unused = Point(Config("ivfflat", (("lists", 10),)), "ivfflat.probes", 16, False, recall=1.0, recall_low=1.0,
                   p95_ms=0.1)
    rec = recommend(SweepResult("w", 10, [slow, fast, short, unused]), 0.95)
    assert rec.point is fast and rec.met


def test_filtered_recall_is_measured_with_iterative_scans_off_and_on(migrated):
    grid = {"ivfflat_lists": [], "hnsw": [(16, 64)], "ef_search": [40], "kinds": ["vector"]}
    workload, result, rec = tune(migrated, target=0.9, rows=4000, queries=40, grid=grid, filter_owner="owner-03",
                                 progress=False, echo=lambda _: None)
    assert "filtered on owner_id = owner-03 (5.0% of rows)" in workload.describe()
    off, relaxed = [p for p in result.points if p.iterative is not None]
    assert (off.iterative, relaxed.iterative) == ("off", "relaxed_order")
    # 5% of rows pass the filter: without iterative scans most of ef_search=40 candidates are filtered away
    assert "got fewer than 10 rows" in off.note and off.recall < 0.5
    assert relaxed.recall >= 0.9 and "fewer than" not in relaxed.note and relaxed.index_used
    assert rec.point.iterative is None  # the recommendation is for the unfiltered query


def test_a_filter_naming_no_owner_is_refused_with_the_owners_that_exist(migrated):
    with pytest.raises(PgvkitError, match="owner-00 .. owner-19"):
        prepare(migrated, source="synthetic", rows=1000, queries=5, filter_owner="nobody", echo=lambda _: None)
    cleanup(migrated)


def test_the_migration_number_skips_versions_the_database_has_applied(migrated, tmp_path):
    """A version recorded in the history but absent from the directory is not reused."""
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations)
    with psycopg.connect(migrated) as conn:
        conn.execute("INSERT INTO pgvkit.schema_migrations (version, name, checksum, status, transactional)"
                     " VALUES (7, 'elsewhere', 'x', 'applied', true)")
    _, _, rec = tune(migrated, target=0.5, rows=2000, queries=20, grid={**SMALL_GRID, "hnsw": []}, progress=False,
                     echo=lambda _: None)
    up, down = write_migration(migrated, rec, migrations)
    assert (up.name, down.name) == ("008_tune_idx_embedding_cosine.sql", "008_tune_idx_embedding_cosine.down.sql")


def test_the_build_estimate_is_carried_to_the_rows_the_table_holds_when_the_migration_is_written(migrated, tmp_path):
    """Writers go on adding rows through a long tune: the estimate line is for the rows counted as
    the file is written, its time carried there from the rows tune measured for."""
    from pgvkit.migrator.plan import build_estimate, n_log_n

    load(migrated, 1500, progress=False)
    _, _, rec = tune(migrated, target=0.5, queries=20, grid={**SMALL_GRID, "hnsw": []}, progress=False,
                     echo=lambda _: None)
    assert rec.live_rows == 1500
    load(migrated, 1500, seed=1, progress=False)  # 1,500 more while tune was deciding
    rec.point.build_s = 100.0  # what a sample's build carried to 1,500 rows said (a 1,500-row build takes ~0.1 s)
    up, _ = write_migration(migrated, rec, tmp_path)
    [m] = [m for m in read_migrations(tmp_path) if m.path == up]
    estimate = build_estimate(m)
    assert estimate["rows"] == 3000
    assert estimate["build_s"] == round(n_log_n(100.0, 1500, 3000)) == 219


LIVE_INDEXES = {  # how teams create the vector index by hand, and the name PostgreSQL gives it
    "postgres-default-name": ("", "CREATE INDEX ON ip_asset_embeddings USING ivfflat (embedding vector_cosine_ops)"
                                  " WITH (lists = 100)", "ip_asset_embeddings_embedding_idx"),
    "quoted-mixed-case": ("", 'CREATE INDEX "Embedding Idx" ON ip_asset_embeddings USING ivfflat'
                              " (embedding vector_cosine_ops) WITH (lists = 100)", "Embedding Idx"),
    "table-in-another-schema": ('CREATE SCHEMA "Vector Store"; ALTER TABLE ip_asset_embeddings SET SCHEMA "Vector Store";',
                                "CREATE INDEX ON ip_asset_embeddings USING ivfflat (embedding vector_cosine_ops)"
                                " WITH (lists = 100)", "ip_asset_embeddings_embedding_idx"),
}


def vector_index_rows(url):
    from pgvkit.indexes import vector_indexes

    with psycopg.connect(url) as conn:
        return vector_indexes(conn, "ip_asset_embeddings")


def function_settings(url: str) -> dict:
    from pgvkit import search

    with psycopg.connect(url) as conn:
        return search.settings(conn)


@pytest.mark.parametrize("setup, create, name", LIVE_INDEXES.values(), ids=LIVE_INDEXES)
def test_tune_replaces_the_live_vector_index_whatever_its_name_and_rollback_restores_it(migrated, tmp_path,
                                                                                      setup, create, name):
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations)
    dbname = psycopg.conninfo.conninfo_to_dict(migrated)["dbname"]
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("DROP INDEX idx_embedding_cosine")
        if setup:
            conn.execute(setup)
            conn.execute(sql.SQL('ALTER DATABASE {} SET search_path = "$user", public, "Vector Store"').format(
                sql.Identifier(dbname)))
    load(migrated, 1000, progress=False)
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute(create)
        conn.execute("ANALYZE ip_asset_embeddings")
    [before] = vector_index_rows(migrated)
    assert before.name == name
    grid = {"ivfflat_lists": [], "hnsw": [(16, 64)], "ef_search": [20], "kinds": ["vector"]}  # not search_assets' 40
    _, _, rec = tune(migrated, target=0.5, rows=2000, queries=20, source="synthetic", grid=grid, progress=False,
                     echo=lambda _: None)
    up, _ = write_migration(migrated, rec, migrations)
    bound_before = function_settings(migrated)
    applied = run_cli("migrate", "--database-url", migrated, "--migrations", str(migrations))
    assert applied.returncode == 0, applied.stderr
    assert "measure what it returns now with pgvkit recall" in applied.stdout

    [after] = vector_index_rows(migrated)  # one vector index: the old one was replaced, not joined
    assert (after.schema, after.name, after.method, after.tuned_for) == (before.schema, name, "hnsw",
                                                                        "hnsw.ef_search = 20")
    assert function_settings(migrated)["hnsw.ef_search"] == "20"  # search_assets' own setting moved with the index
    assert function_settings(migrated)["enable_seqscan"] == "off"  # and it takes the index at every size
    report = verify(migrated, migrations_dir=migrations)
    assert report["vector indexes"].status == "pass" and report["index idx_embedding_cosine"].status == "pass"
    assert report["query plan"].detail.endswith(f"uses {name}, tuned by pgvkit tune for hnsw.ef_search = 20")
    assert report["search function"].status == "pass" and "hnsw.ef_search = 20" in report["search function"].detail

    rolled = run_cli("rollback", "--to", "3", "--yes", "--database-url", migrated, "--migrations", str(migrations),
                     "--confirm-database", dbname)
    assert rolled.returncode == 0, rolled.stderr
    [restored] = vector_index_rows(migrated)
    assert (restored.name, restored.definition, restored.comment) == (name, before.definition, None)
    assert function_settings(migrated) == bound_before  # and the function's settings with it


def test_two_vector_indexes_with_one_operator_class_are_a_warning_with_the_fix(migrated, tmp_path):
    load(migrated, 1000, progress=False)
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("CREATE INDEX ON ip_asset_embeddings USING hnsw (embedding vector_cosine_ops)")
        conn.execute("ANALYZE ip_asset_embeddings")
    check = verify(migrated, migrations_dir=MIGRATIONS)["vector indexes"]
    assert check.status == "warn" and "every INSERT and UPDATE writes each" in check.detail
    assert "idx_embedding_cosine" in check.detail and "ip_asset_embeddings_embedding_idx" in check.detail
    _, _, rec = tune(migrated, target=0.5, rows=2000, queries=20, source="synthetic",
                     grid={"ivfflat_lists": [], "hnsw": [(16, 64)], "ef_search": [40], "kinds": ["vector"]}, progress=False,
                     echo=lambda _: None)
    with pytest.raises(PgvkitError, match="has 2 indexes a cosine search can use"):
        write_migration(migrated, rec, tmp_path)
    with psycopg.connect(migrated, autocommit=True) as conn:
        for statement in check.fix.rstrip(";").split("; "):
            conn.execute(statement)
    assert verify(migrated, migrations_dir=MIGRATIONS)["vector indexes"].status == "pass"
    assert len(vector_index_rows(migrated)) == 1


def test_the_next_build_confirm_names_is_a_command_the_cli_accepts():
    from pgvkit.cli import build_parser
    from pgvkit.indexes import VectorIndex
    from pgvkit.tuning.confirm import _next_build

    def index(method, with_):
        return VectorIndex("public", "idx", "public", "t", method, "vector_cosine_ops",
                           f"CREATE INDEX idx ON public.t USING {method} (embedding vector_cosine_ops) WITH ({with_})",
                           True, None)

    for live, graph in [(index("ivfflat", "lists='100'"), (32, 200)), (index("hnsw", "m='16', ef_construction='64'"),
                        (32, 200)), (index("hnsw", "m='32', ef_construction='200'"), (64, 400))]:
        command = _next_build(live).split()
        args = build_parser().parse_args(command[1:])
        assert args.command == "tune" and args.write_migration and args.hnsw == [graph]


def test_a_graph_outside_pgvectors_bounds_is_refused_in_one_line():
    refused = run_cli("tune", "--hnsw", "32:10")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "give m:ef_construction pairs with m from 2 to 100 and ef_construction from 2m to 1000" in refused.stderr
