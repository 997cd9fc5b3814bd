"""Embedding models: a table of another dimension is verified as it is, and a second model's
column is added, searched and taken back by migrations pgvkit writes (pgvkit model add)."""

import json
import subprocess
from pathlib import Path

import numpy as np
import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pgvector.psycopg import register_vector

from pgvkit.health.verify import verify
from pgvkit.notebooks.demo import real_embeddings

from .conftest import MIGRATIONS, psql_file, run_cli, start_cli, wait_until

LIFTED, NEW = real_embeddings(), real_embeddings(dims=1024)  # the same texts, a "new model" of 1,024 dims
OLD = LIFTED[:2000]
HEALTH = ("ivfflat lists", "zero vectors", "null embeddings", "query plan", "search settings", "search function")


@pytest.fixture
def another_tools_table(db_url, tmp_path):
    """ip_asset_embeddings as another tool made it: the seed's schema with vector(1024) and an HNSW
    index, 3,000 real embeddings lifted to 1,024 dimensions, no pgvkit history."""
    ddl = (MIGRATIONS / "001_init_vector_store.sql").read_text()
    ddl = ddl.replace("vector(768)", "vector(1024)").replace(
        "USING ivfflat (embedding vector_cosine_ops) WITH (lists = 100)", "USING hnsw (embedding vector_cosine_ops)")
    (tmp_path / "theirs.sql").write_text(ddl)
    psql_file(db_url, tmp_path / "theirs.sql")
    vectors = NEW[:3000]
    with psycopg.connect(db_url) as conn:
        register_vector(conn)
        with conn.cursor().copy("COPY ip_asset_embeddings (asset_id, owner_id, embedding) FROM STDIN"
                                " WITH (FORMAT BINARY)") as copy:
            copy.set_types(["varchar", "varchar", "vector"])
            for i, v in enumerate(vectors):
                copy.write_row([f"s3://assets/{i}.jpg", f"owner {i % 7}", v])
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("ANALYZE ip_asset_embeddings")
    return db_url


def test_verify_checks_a_table_of_1024_dimensions_made_by_another_tool_as_it_is(another_tools_table):
    report = verify(another_tools_table, migrations_dir=MIGRATIONS)
    checks = {c.name: c for c in report.checks}
    assert checks["columns"].status == "pass"
    assert "embedding vector(1024) as declared (no model recorded)" in checks["columns"].detail
    ran = [name for name in HEALTH if name in checks]
    assert ran == list(HEALTH)  # the health checks ran, at 1,024 dimensions
    assert [(n, checks[n].detail) for n in ran if checks[n].status == "fail"] == []
    assert "uses idx_embedding_cosine" in checks["query plan"].detail


def test_verify_asked_for_another_dimension_names_both(another_tools_table):
    report = verify(another_tools_table, dimension=768, migrations_dir=MIGRATIONS)
    columns = next(c for c in report.checks if c.name == "columns")
    assert columns.status == "fail"
    assert "embedding is vector(1024), expected vector(768)" in columns.detail


CLIP = "clip-vit-L/14@v2"


@pytest.fixture
def team(migrated, tmp_path):
    """The migrated table with 2,000 real embeddings (owners "owner 0" .. "owner 6") and a copy of
    the project's migrations to write into."""
    import shutil

    from pgvkit.data.inserts import load

    load(migrated, vectors=OLD, progress=False)
    with psycopg.connect(migrated, autocommit=True) as conn:
        conn.execute("UPDATE ip_asset_embeddings SET owner_id = 'owner ' || (id % 7)")
        conn.execute("ANALYZE ip_asset_embeddings")
    shutil.copytree(MIGRATIONS, tmp_path / "migrations")
    return migrated, tmp_path / "migrations"


def searched(url: str, query, k: int = 10, owner: str | None = None) -> list[int]:
    with psycopg.connect(url) as conn:
        register_vector(conn)
        return [r[0] for r in conn.execute("SELECT id FROM search_assets(%s, %s, %s)", [query, k, owner])]


def schema(url: str) -> tuple:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "SELECT pg_get_functiondef('search_assets(vector, integer, text)'::regprocedure),"
            " (SELECT proconfig FROM pg_proc WHERE oid = 'search_assets(vector, integer, text)'::regprocedure),"
            " pg_get_viewdef('similar_assets'),"
            " (SELECT array_agg(attname || ' ' || format_type(atttypid, atttypmod) ORDER BY attnum) FROM pg_attribute"
            "  WHERE attrelid = 'ip_asset_embeddings'::regclass AND attnum > 0 AND NOT attisdropped),"
            " to_regclass('pgvkit.embedding_models'),"
            " (SELECT array_agg(conname || ' ' || pg_get_constraintdef(oid) ORDER BY conname) FROM pg_constraint"
            "  WHERE conrelid = 'ip_asset_embeddings'::regclass),"
            " (SELECT array_agg(pg_get_indexdef(indexrelid) ORDER BY indexrelid::regclass::text) FROM pg_index"
            "  WHERE indrelid = 'ip_asset_embeddings'::regclass)").fetchone()


def test_a_second_model_is_added_searched_by_its_dimension_and_rolled_back_to_exactly_what_was_there(team):
    """pgvkit model add writes a migration: the new model's nullable column, both models recorded,
    search_assets answering a 1,024-d query from the rows that have the new embedding (exactly,
    with or without an owner) and a 768-d query as before; its rollback leaves the function, its
    settings, the view and the columns as they were."""
    url, migrations = team
    before = schema(url)
    old_query, new_query = LIFTED[-1], NEW[-1]  # a new image, by each model
    old_answer = searched(url, old_query)
    written = run_cli("model", "add", CLIP, "--dimensions", "1024", "--database-url", url, "--migrations",
                      str(migrations))
    assert written.returncode == 0, written.stderr
    assert "004_model_add_clip_vit_l_14_v2.sql" in written.stdout
    applied = run_cli("migrate", "--database-url", url, "--migrations", str(migrations))
    assert applied.returncode == 0, applied.stderr

    checks = {c.name: c for c in verify(url, migrations_dir=migrations).checks}
    assert checks["columns"].status == "pass", checks["columns"]
    assert ("embedding vector(768) for current (serving); embedding_clip_vit_l_14_v2 vector(1024) for "
            f"{CLIP} (backfilling)") in checks["columns"].detail
    assert searched(url, old_query) == old_answer  # the old model's searches are untouched
    assert searched(url, new_query) == []  # nobody has the new embedding yet: nothing, not an error

    filled = np.arange(1, 601)  # 600 rows backfilled (ids 1..600 hold OLD[0..599])
    with psycopg.connect(url) as conn:
        register_vector(conn)
        with conn.cursor() as cur:
            cur.executemany("UPDATE ip_asset_embeddings SET embedding_clip_vit_l_14_v2 = %s WHERE id = %s",
                            [(NEW[i - 1], int(i)) for i in filled])
    exact = filled[np.argsort(-(NEW[filled - 1] @ new_query), kind="stable")]
    assert searched(url, new_query) == exact[:10].tolist()
    owner = "owner 3"
    mine = filled[filled % 7 == 3]
    assert searched(url, new_query, owner=owner) == mine[np.argsort(-(NEW[mine - 1] @ new_query))][:10].tolist()
    listed = run_cli("model", "list", "--json", "--database-url", url)
    assert listed.returncode == 0, listed.stderr
    rows = {m["column"]: m for m in json.loads(listed.stdout)["models"]}
    assert rows["embedding_clip_vit_l_14_v2"]["rows with it"] == 600 and rows["embedding"]["rows with it"] == 2000

    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    planned = run_cli("rollback", "--to", "3", "--database-url", url, "--migrations", str(migrations))
    assert "ALTER TABLE ip_asset_embeddings DROP COLUMN embedding_clip_vit_l_14_v2 (and its data)" in planned.stdout
    back = run_cli("rollback", "--to", "3", "--yes", "--confirm-database", name, "--database-url", url,
                   "--migrations", str(migrations))
    assert back.returncode == 0, back.stderr
    assert schema(url) == before
    assert searched(url, old_query) == old_answer


def test_a_model_added_where_confirm_gave_owners_their_own_search_setting_keeps_it(team):
    """search_assets written with the owners' own search setting (as pgvkit confirm writes it when
    an owner's walk needs more than unfiltered searches) is still pgvkit's: pgvkit model add keeps
    that line and the bound value, and its rollback restores the function exactly."""
    from pgvkit.kinds import KINDS, function_sql

    url, migrations = team
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(function_sql(conn, KINDS["vector"], 768, {"pgvkit.owner_ef_search": "80"},
                                  owner_setting="hnsw.ef_search"))
    before = schema(url)
    where = ["--database-url", url, "--migrations", str(migrations)]
    assert run_cli("model", "add", CLIP, "--dimensions", "1024", *where).returncode == 0
    applied = run_cli("migrate", *where)
    assert applied.returncode == 0, applied.stderr
    body, config = schema(url)[:2]
    assert body.count("set_config('hnsw.ef_search', current_setting('pgvkit.owner_ef_search'), true)") == 1
    assert "pgvkit.owner_ef_search=80" in config and "vector_dims(query) = 1024" in body
    back = run_cli("rollback", "--to", "3", "--yes", "--confirm-database",
                   psycopg.conninfo.conninfo_to_dict(url)["dbname"], *where)
    assert back.returncode == 0, back.stderr
    assert schema(url) == before


def test_a_model_of_a_dimension_already_served_or_too_large_to_index_is_refused_in_one_line(team):
    url, migrations = team
    where = ["--database-url", url, "--migrations", str(migrations)]
    same = run_cli("model", "add", "another-768", "--dimensions", "768", *where)
    assert same.returncode == 2 and "Traceback" not in same.stderr
    [line] = same.stderr.strip().splitlines()
    assert "embedding already holds 768-dimension vectors" in line and "silently wrong" in line
    large = run_cli("model", "add", "big", "--dimensions", "3072", *where)
    [line] = large.stderr.strip().splitlines()
    assert large.returncode == 2 and "--type halfvec" in line
    tuned = run_cli("tune", "--model", "big", "--write-migration", *where)  # a model's index, before it is added
    [line] = tuned.stderr.strip().splitlines()
    assert tuned.returncode == 2 and "no model 'big' recorded" in line, tuned.stderr
    assert sorted(p.name for p in migrations.iterdir()) == sorted(p.name for p in MIGRATIONS.iterdir())


def test_a_tuning_migration_that_changes_the_index_kind_keeps_the_second_models_searches(team):
    """search_assets is rewritten when tune moves the index to halfvec: the new model's queries
    still go to its column, and rolling both back restores everything."""
    from pgvkit.migrator import Migrator
    from pgvkit.models.change import write_add
    from pgvkit.tuning import write_migration

    from .test_quantized import chosen

    url, migrations = team
    before = schema(url)
    write_add(url, CLIP, 1024, migrations)
    migrator = Migrator(url, migrations, echo=lambda _: None, progress=False)
    migrator.migrate()
    with psycopg.connect(url) as conn:
        register_vector(conn)
        with conn.cursor() as cur:
            cur.executemany("UPDATE ip_asset_embeddings SET embedding_clip_vit_l_14_v2 = %s WHERE id = %s",
                            [(NEW[i - 1], i) for i in range(1, 101)])
    write_migration(url, chosen("halfvec", "hnsw", 40), migrations, allow_query_change=True)
    migrator.migrate()
    exact = np.argsort(-(NEW[:100] @ NEW[-1]), kind="stable")[:10] + 1
    assert searched(url, NEW[-1]) == exact.tolist()
    assert len(searched(url, LIFTED[-1])) == 10  # the old model, through the halfvec index
    migrator.rollback(3, yes=True)
    assert schema(url) == before


@pytest.fixture
def changing(migrated, tmp_path):
    """3,000 team rows (the team's asset ids, 1 % embedded twice) with the clip model's column
    added and migrated, and a .jsonl of its embeddings keyed by asset_id (one line per asset)."""
    import shutil

    from pgvkit.migrator import Migrator
    from pgvkit.models.change import write_add
    from pgvkit.notebooks.demo import load_team_rows

    load_team_rows(migrated, LIFTED[:3000])
    shutil.copytree(MIGRATIONS, tmp_path / "migrations")
    write_add(migrated, CLIP, 1024, tmp_path / "migrations")
    Migrator(migrated, tmp_path / "migrations", echo=lambda _: None, progress=False).migrate()
    with psycopg.connect(migrated) as conn:
        rows = conn.execute("SELECT min(id), asset_id FROM ip_asset_embeddings GROUP BY asset_id").fetchall()
    wanted = {asset: NEW[i % len(NEW)] for i, asset in rows}
    with (tmp_path / "clip.jsonl").open("w") as f:
        for asset, v in wanted.items():
            f.write(json.dumps({"asset_id": asset, "embedding": [float(x) for x in v]}) + "\n")
    return migrated, tmp_path / "clip.jsonl", wanted


def filled(url: str) -> dict[int, tuple[str, np.ndarray | None]]:
    with psycopg.connect(url) as conn:
        register_vector(conn)
        return {i: (a, v) for i, a, v in conn.execute(
            "SELECT id, asset_id, embedding_clip_vit_l_14_v2 FROM ip_asset_embeddings")}


def test_a_backfill_killed_half_way_resumes_and_ends_as_an_uninterrupted_one_would(changing):
    """SIGKILL while the backfill is half done: what it committed stays, the next run says where
    it resumes and fills the rest; every row then holds its asset's embedding from the file (rows
    of an asset embedded twice both), as one uninterrupted run leaves them."""
    import signal
    import subprocess
    import sys
    import time

    url, source, wanted = changing
    args = [sys.executable, "-m", "pgvkit", "model", "backfill", CLIP, "--from", str(source), "--database-url", url,
            "--batch-seconds", "0.005", "--duty", "0.5", "--no-vacuum"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    half = 1500
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:  # wait for the committed half, not a time
            done = conn.execute("SELECT count(embedding_clip_vit_l_14_v2) FROM ip_asset_embeddings").fetchone()[0]
            if done >= half:
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        done = conn.execute("SELECT count(embedding_clip_vit_l_14_v2) FROM ip_asset_embeddings").fetchone()[0]
        stopped = conn.execute("SELECT next_id, finished_at FROM pgvkit.backfills").fetchone()
    assert half <= done < 3000 and stopped[1] is None, (done, stopped)
    [check] = [c for c in verify(url).checks if c.name == "embedding models"]
    assert check.status == "warn" and f"{3000 - done:,} rows have no {CLIP} embedding yet" in check.why
    status = run_cli("status", "--database-url", url)  # where the change stands, beside the migrations
    assert f"embedding models: current in embedding (serving): 3,000 of 3,000 rows; {CLIP} in " \
           f"embedding_clip_vit_l_14_v2 (backfilling): {done:,} of 3,000 rows" in status.stdout, status.stdout
    assert f"fix: pgvkit model backfill {CLIP} --from FILE" in status.stdout

    resumed = run_cli("model", "backfill", CLIP, "--from", str(source), "--database-url", url, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming the backfill of embedding_clip_vit_l_14_v2 at id {stopped[0]:,}" in resumed.stdout
    assert "every row has one" in resumed.stdout
    [check] = [c for c in verify(url).checks if c.name == "embedding models"]
    assert check.status == "pass" and f"{CLIP} in embedding_clip_vit_l_14_v2 (backfilling): 3,000 of 3,000" in check.detail
    rows = filled(url)
    assert len(rows) == 3000
    assert all(v is not None and np.allclose(v.to_numpy(), wanted[a]) for a, v in rows.values())


def test_a_backfill_cut_off_by_the_server_is_one_line_and_the_same_command_resumes_it(changing):
    """The server ends the backfill's session half-way (a restart, a kill, an administrator): one
    line saying the same command resumes it, and it does."""
    import subprocess
    import sys
    import time

    url, source, wanted = changing
    args = ["model", "backfill", CLIP, "--from", str(source), "--database-url", url, "--no-vacuum"]
    proc = subprocess.Popen([sys.executable, "-m", "pgvkit", *args, "--batch-seconds", "0.005"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 120
        while conn.execute("SELECT count(embedding_clip_vit_l_14_v2) FROM ip_asset_embeddings").fetchone()[0] < 1000:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgvkit backfill'")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "Traceback" not in err, err
    line = err.strip().splitlines()[-1]  # after the progress bar
    assert line.startswith("pgvkit: error: lost the connection to the server during the backfill (")
    assert line.endswith("run the same command again: it resumes where it stopped"), line
    resumed = run_cli(*args, timeout=300)
    assert resumed.returncode == 0 and "resuming the backfill" in resumed.stdout, resumed.stderr
    assert all(v is not None and np.allclose(v.to_numpy(), wanted[a]) for a, v in filled(url).values())


def test_a_second_file_for_rows_inserted_meanwhile_is_walked_from_its_first_row_not_from_the_tables_start(changing):
    """The old application version inserted rows during the backfill (no new embedding): their
    file is walked from the first of them, not across the 3,000 rows filled already."""
    from pgvkit.models.backfill import backfill

    url, source, wanted = changing
    first = backfill(url, CLIP, source, duty=1, progress=False, vacuum=False, echo=lambda _: None)
    assert (first.filled, first.missing) == (3000, 0)
    with psycopg.connect(url, autocommit=True) as conn:
        register_vector(conn)
        for i in range(5):
            conn.execute("INSERT INTO ip_asset_embeddings (asset_id, owner_id, embedding) VALUES (%s, 'app', %s)",
                         [f"late-{i}.jpg", LIFTED[-i - 1]])
    late = source.parent / "late.jsonl"
    late.write_text("".join(json.dumps({"asset_id": f"late-{i}.jpg", "embedding": NEW[-i - 1].tolist()}) + "\n"
                            for i in range(5)))
    second = backfill(url, CLIP, late, duty=1, progress=False, vacuum=False, echo=lambda _: None)
    assert (second.filled, second.walked, second.missing) == (5, 5, 0), second
    again = backfill(url, CLIP, late, duty=1, progress=False, vacuum=False, echo=lambda _: None)
    assert (again.filled, again.walked) == (0, 0), again  # nothing left to fill: nothing walked


class Writers:
    """Two application writers until stopped: one inserting rows as the old version of the
    application does (old embedding only), one as the new (both embeddings), each also deleting
    a row it did not insert now and then. What each inserted and deleted, and any failure."""

    def __init__(self, url: str):
        import threading

        self.url, self.stop, self.failures = url, threading.Event(), []
        self.inserted: dict[int, np.ndarray | None] = {}  # id -> the new embedding it was written with
        self.deleted: list[int] = []
        self.threads = [threading.Thread(target=self._write, args=(n,)) for n in (0, 1)]

    def _write(self, n: int) -> None:
        rng = np.random.default_rng(n)
        with psycopg.connect(self.url, autocommit=True) as conn:
            register_vector(conn)
            i = 0
            while not self.stop.is_set():
                try:
                    new = NEW[rng.integers(len(NEW))] if n else None
                    [(row,)] = conn.execute(
                        "INSERT INTO ip_asset_embeddings (asset_id, owner_id, embedding, embedding_clip_vit_l_14_v2)"
                        " VALUES (%s, 'app', %s, %s) RETURNING id",
                        [f"app-{n}-{i}.jpg", OLD[rng.integers(len(OLD))], new]).fetchall()
                    self.inserted[row] = new
                    if i % 3 == 0:
                        gone = conn.execute("DELETE FROM ip_asset_embeddings WHERE id = (SELECT id FROM"
                                            " ip_asset_embeddings WHERE id %% 2 = %s AND owner_id <> 'app'"
                                            " ORDER BY random() LIMIT 1) RETURNING id", [n]).fetchone()
                        if gone:
                            self.deleted.append(gone[0])
                except psycopg.Error as exc:
                    self.failures.append(str(exc).splitlines()[0])
                i += 1
                self.stop.wait(0.01)  # an application's pace: about 100 writes a second each, not a tight loop

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join()


def test_a_backfill_beside_readers_of_both_models_and_writers_loses_and_doubles_nothing(changing):
    """Four readers call search_assets without pause (two with old-model queries, two with
    new-model ones) and two writers insert and delete rows while the whole table is backfilled:
    no search fails, every row inserted is there once, every row deleted is gone, a row the new
    application wrote with its embedding keeps it, every other row has its asset's embedding."""
    from .conftest import Searchers

    url, source, wanted = changing
    with psycopg.connect(url) as conn:
        before = {r[0] for r in conn.execute("SELECT id FROM ip_asset_embeddings")}
    with Searchers(url, LIFTED[-50:], readers=2) as old, \
            Searchers(url, NEW[-50:], readers=2, full=False) as new, Writers(url) as writers:
        done = run_cli("model", "backfill", CLIP, "--from", str(source), "--database-url", url,
                       "--batch-seconds", "0.02", timeout=300)
    assert done.returncode == 0, done.stderr
    print(f"searches during the backfill: old model {old.searches} (longest {old.longest * 1000:.0f} ms), new "
          f"model {new.searches} (longest {new.longest * 1000:.0f} ms); writers inserted {len(writers.inserted)}, "
          f"deleted {len(writers.deleted)}")
    assert old.failures == [] and new.failures == [] and writers.failures == []
    assert old.searches > 50 and new.searches > 50 and len(writers.inserted) > 20 and writers.deleted
    rows = filled(url)
    assert set(rows) == (before | set(writers.inserted)) - set(writers.deleted)  # nothing lost, nothing back
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) = count(DISTINCT id) FROM ip_asset_embeddings").fetchone()[0]
    for i, (asset, v) in rows.items():
        if i in writers.inserted:  # the application's own rows: the new version's embedding kept, the old's left
            mine = writers.inserted[i]
            assert (v is None) if mine is None else np.allclose(v.to_numpy(), mine)
        else:
            assert np.allclose(v.to_numpy(), wanted[asset])



def beside_an_older_transaction(url, args, queries):
    """Run a pgvkit command while a transaction begun before it stays open. The swap must wait for
    it (a search begun before search_assets finds its column at each call may hold the body that
    names the columns being renamed); while it waits, that transaction's searches (each query, of
    either model) are answered in full; once it ends, the command completes. The command's result."""
    with psycopg.connect(url) as older:  # not autocommit: its first statement opens the transaction
        register_vector(older)
        older.execute("SELECT 1")
        proc = start_cli(*args)
        try:
            with psycopg.connect(url, autocommit=True) as watch:
                waiting = ("SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND query LIKE "
                           "'%DO $older$%' AND wait_event = 'PgSleep')")
                wait_until(lambda: proc.poll() is not None or watch.execute(waiting).fetchone()[0],
                           "the swap to wait for the transaction begun before it")
            assert proc.poll() is None, proc.communicate()  # it waits: it has not run past the transaction
            for q in queries:
                assert len(older.execute("SELECT id FROM search_assets(%s, 10)", [q]).fetchall()) == 10
            older.commit()
            out, err = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def test_add_backfill_index_switch_then_roll_back_each_step_to_exactly_what_stood_before_it(changing, tmp_path):
    """The whole change by the CLI, with readers of both models searching while each migration
    applies (none may fail): after the switch the new model is the table's embedding
    (similar_assets and direct queries on it, its index under the old name, recall measured by
    pgvkit recall), a query of the old model's dimension still answered from its moved column;
    rolling back the switch, then the index, restores function, settings, view and columns as
    they were before each, and verify passes at every step."""
    from .conftest import Searchers

    url, source, wanted = changing
    migrations = next(p for p in tmp_path.iterdir() if p.name == "migrations")
    where = ["--database-url", url, "--migrations", str(migrations)]
    name = psycopg.conninfo.conninfo_to_dict(url)["dbname"]
    assert run_cli("model", "backfill", CLIP, "--from", str(source), "--duty", "1", "--database-url", url,
                   timeout=300).returncode == 0
    states = {4: schema(url)}
    for step, version in (("index", 5), ("switch", 6)):
        if step == "index":  # tuned on the rows that have the new model's embedding, written as model index writes it
            written = run_cli("tune", "--model", CLIP, "--write-migration", "--queries", "100", *where, timeout=300)
            assert written.returncode == 0, written.stderr
            assert "sampling 3,000 of 3,000 rows of ip_asset_embeddings into pgvkit.tune_workload (id, owner_id, " \
                   "embedding_clip_vit_l_14_v2)" in written.stdout
            assert f"pgvkit confirm --model {CLIP}" in written.stdout
            up = migrations / "005_model_index_clip_vit_l_14_v2.sql"
            assert "-- pgvkit:estimate build_s=" in up.read_text() and "Chosen by pgvkit tune --model" in up.read_text()
            assert 'USING hnsw ("embedding_clip_vit_l_14_v2" vector_cosine_ops)' in up.read_text()
            planned = run_cli("plan", *where)
            assert " on 3,000 rows, maintenance_work_mem 64MB" in planned.stdout, planned.stdout  # the build, estimated
        else:
            written = run_cli("model", step, CLIP, *where)
            assert written.returncode == 0, written.stderr
        if step == "switch":  # a transaction older than the swap, open past the wait's budget: named, run refused
            with psycopg.connect(url) as older:
                older.execute("SELECT 1")
                refused = run_cli("migrate", *where, "--lock-timeout", "1s", "--retry-budget", "2", timeout=300)
                pid = older.info.backend_pid
            print("refused:", refused.stderr.strip())
            assert refused.returncode != 0 and "Traceback" not in refused.stderr, refused.stderr
            assert f"process {pid} has held the lock needed by line " in refused.stderr, refused.stderr
            assert f"pg_terminate_backend({pid})" in refused.stderr, refused.stderr
        # readers of both models while it applies: the switch changes columns and search_assets in one transaction
        with Searchers(url, LIFTED[-50:], readers=2) as old, Searchers(url, NEW[-50:], readers=2) as new:
            if step == "index":
                applied = run_cli("migrate", *where, timeout=300)
            else:  # and a transaction begun before the switch, which the swap waits for
                applied = beside_an_older_transaction(url, ["migrate", *where], [LIFTED[-1], NEW[-1]])
        if step == "switch":  # (before that, the wait given up: the transaction named, the run resumed above)
            assert "resuming: the last run of 006_model_switch_clip_vit_l_14_v2 ended failed" in applied.stdout
        assert applied.returncode == 0, applied.stderr
        assert old.failures == [] and new.failures == [], (step, old.failures[:3], new.failures[:3])
        assert old.searches > 20 and new.searches > 20
        report = verify(url, migrations_dir=migrations)
        assert report.exit_code == 0 or all(c.status != "fail" for c in report.checks), str(report)
        states[version] = schema(url)
        if step == "index":  # before the switch, the new model audited on its own column, fresh queries too
            np.save(tmp_path / "fresh.npy", NEW[-200:])
            before = run_cli("recall", "--json", "--model", CLIP, "--sample", "200", "--query-file",
                             str(tmp_path / "fresh.npy"), "--database-url", url, timeout=300)
            assert before.returncode in (0, 1), before.stderr
            measured = json.loads(before.stdout)
            assert measured["table"] == "ip_asset_embeddings.embedding_clip_vit_l_14_v2" and measured["rows"] == 3000
            assert all("idx_embedding_clip_vit_l_14_v2_cosine" in v["plan"] for v in measured["shapes"].values())
            assert min(v["recall"] for v in measured["shapes"].values()) > 0.9, measured["shapes"]
            # its search setting confirmed on its own index before the switch, written as a migration
            confirmed = run_cli("confirm", "--json", "--model", CLIP, "--sample", "200", "--query-file",
                                str(tmp_path / "fresh.npy"), "--write-migration", *where, timeout=300)
            assert confirmed.returncode == 0, confirmed.stderr
            chosen = json.loads(confirmed.stdout)
            assert chosen["table"] == "ip_asset_embeddings.embedding_clip_vit_l_14_v2" and chosen["met"]
            with psycopg.connect(url) as conn:  # what tune chose, in the index's comment: confirm measured it too
                comment = conn.execute("SELECT obj_description('idx_embedding_clip_vit_l_14_v2_cosine'::regclass)"
                                       ).fetchone()[0]
            assert comment.startswith("pgvkit tune: hnsw.ef_search = ") and CLIP in comment, comment
            assert chosen["at_tuned"]["setting"] == comment.split(": ", 1)[1].split(" (")[0], chosen["at_tuned"]
            assert chosen["rows"] == 3000 and min(chosen["at_chosen"].values()) >= 0.95, chosen["at_chosen"]
            up, down = (Path(p) for p in chosen["migration"])
            assert "ALTER FUNCTION search_assets(vector, integer, text) SET hnsw.ef_search" in up.read_text()
            assert "idx_embedding_clip_vit_l_14_v2_cosine" in up.read_text()
            up.unlink(), down.unlink()  # bound or not is the team's call; here the switch comes next
            states[version] = schema(url)  # (the audit is recorded, not part of the schema)

    with psycopg.connect(url) as conn:
        register_vector(conn)
        columns = dict(conn.execute("SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute WHERE"
                                    " attrelid = 'ip_asset_embeddings'::regclass AND attnum > 0 AND NOT attisdropped"))
        assert columns["embedding"] == "vector(1024)" and columns["embedding_current"] == "vector(768)"
        assert "USING hnsw (embedding vector_cosine_ops)" in conn.execute(
            "SELECT pg_get_indexdef('idx_embedding_cosine'::regclass)").fetchone()[0]
        asset = conn.execute("SELECT asset_id FROM ip_asset_embeddings ORDER BY id LIMIT 1").fetchone()[0]
        similar = conn.execute("SELECT count(*) FROM similar_assets WHERE source_asset_id = %s", [asset]).fetchone()
        assert similar[0] >= 10
    assert len(searched(url, LIFTED[-1])) == 10  # an old application version's query: still answered
    assert len(searched(url, NEW[-1])) == 10
    audit = run_cli("recall", "--json", "--sample", "200", "--database-url", url, timeout=300)
    assert audit.returncode in (0, 1), audit.stderr
    measured = json.loads(audit.stdout)
    assert "1024" not in str(measured.get("error", "")) and measured["rows"] == 3000
    print("recall of the new model after the switch:", {k: v["recall"] for k, v in measured["shapes"].items()})

    with psycopg.connect(url, autocommit=True) as conn:  # a row the new application wrote, with the new model only
        register_vector(conn)
        conn.execute("INSERT INTO ip_asset_embeddings (asset_id, owner_id, embedding) VALUES ('new.jpg', 'app', %s)",
                     [NEW[-2]])
        refused = run_cli("rollback", "--to", "5", "--yes", "--confirm-database", name, *where, timeout=300)
        assert refused.returncode == 2 and "1 row(s) written since the switch have no current embedding" in refused.stderr
        assert schema(url) == states[6]  # nothing changed
        conn.execute("DELETE FROM ip_asset_embeddings WHERE asset_id = 'new.jpg'")
    for to in (5, 4):
        with Searchers(url, LIFTED[-50:], readers=2) as old, Searchers(url, NEW[-50:], readers=2) as new:
            undo = ["rollback", "--to", str(to), "--yes", "--confirm-database", name, *where]
            back = beside_an_older_transaction(url, undo, [LIFTED[-1], NEW[-1]]) if to == 5 else run_cli(*undo)
        assert back.returncode == 0, back.stderr
        assert old.failures == [] and new.failures == [], (to, old.failures[:3], new.failures[:3])
        assert schema(url) == states[to], to

    # switched again, the old model is retired: only with its name typed back, and after the window
    assert run_cli("migrate", *where, timeout=300).returncode == 0
    assert schema(url) == states[6]
    for refused, words in ((["--window-days", "0"], "--confirm-model 'current'"),
                           (["--confirm-model", "current"], "inside the 7-day rollback window")):
        proc = run_cli("model", "retire", "current", *refused, *where)
        assert proc.returncode == 2 and words in proc.stderr, proc.stderr
    retired = run_cli("model", "retire", "current", "--confirm-model", "current", "--window-days", "0", *where)
    assert retired.returncode == 0, retired.stderr
    assert run_cli("migrate", *where, timeout=300).returncode == 0
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('idx_embedding_current_cosine'), (SELECT count(*) FROM pg_attribute"
                            " WHERE attrelid = 'ip_asset_embeddings'::regclass AND attname = 'embedding_current'"
                            " AND NOT attisdropped)").fetchone() == (None, 0)
    assert len(searched(url, NEW[-1])) == 10
    with pytest.raises(psycopg.errors.DataException, match="different vector dimensions"):
        searched(url, LIFTED[-1])  # the old model's queries have nowhere to go
    assert all(c.status != "fail" for c in verify(url, migrations_dir=migrations).checks)
    back = run_cli("rollback", "--to", "6", "--yes", "--confirm-database", name, *where)
    assert back.returncode == 2 and "restore the backup taken before it" in back.stderr, back.stderr


def test_a_model_of_3072_dimensions_goes_into_a_halfvec_column_backfilled_from_an_npz(team):
    """Above the 2,000 dimensions HNSW indexes of vector: --type halfvec, filled from numpy's
    archive keyed by the table's ids, searched by a 3,072-d query."""
    from pgvkit.migrator import Migrator
    from pgvkit.models.backfill import backfill
    from pgvkit.models.change import write_add

    url, migrations = team
    write_add(url, "text-embedding-3-large", 3072, migrations, kind="halfvec")
    Migrator(url, migrations, echo=lambda _: None, progress=False).migrate()
    with psycopg.connect(url) as conn:
        ids = [r[0] for r in conn.execute("SELECT id FROM ip_asset_embeddings ORDER BY id LIMIT 500")]
    big = np.random.default_rng(3).standard_normal((500, 3072)).astype(np.float32)
    np.savez(migrations.parent / "large.npz", ids=np.array(ids), embeddings=big)
    done = backfill(url, "text-embedding-3-large", migrations.parent / "large.npz", progress=False, vacuum=False,
                    echo=lambda _: None)
    assert (done.filled, done.missing) == (500, 1500)
    exact = np.array(ids)[np.argsort(-(big / np.linalg.norm(big, axis=1, keepdims=True)) @ big[7])][:10]
    assert searched(url, big[7]) == exact.tolist()
    # its index tuned on the 500 rows that have it, as a halfvec index of the column itself, and built
    where = ["--database-url", url, "--migrations", str(migrations)]
    current = run_cli("tune", "--model", "current", *where)  # the embedding column's own: plain tune
    assert current.returncode == 2 and "drop --model" in current.stderr.strip(), current.stderr
    other = run_cli("tune", "--model", "text-embedding-3-large", "--candidates", "vector", *where)
    [line] = other.stderr.strip().splitlines()
    assert other.returncode == 2 and "is a halfvec column" in line and "--candidates halfvec" in line, other.stderr
    tuned = run_cli("tune", "--model", "text-embedding-3-large", "--queries", "50", "--write-migration", *where,
                    timeout=300)
    assert tuned.returncode == 0, tuned.stdout + tuned.stderr
    assert "sampling 500 of 500 rows" in tuned.stdout and "halfvec hnsw(m=16, ef_construction=64)" in tuned.stdout
    up = next(migrations.glob("*_model_index_text_embedding_3_large.sql")).read_text()
    assert 'USING hnsw ("embedding_text_embedding_3_large" halfvec_cosine_ops)' in up
    assert run_cli("migrate", *where, timeout=300).returncode == 0
    assert searched(url, big[7]) == exact.tolist()


@pytest.mark.parametrize("name, text, words", [
    ("a.jsonl", '{"asset_id": "x", "embedding": [1, 2]}\n{"embedding": [1, 2]}\n', "line 2: no asset_id"),
    ("b.jsonl", '{"asset_id": "x", "vector": [1, 2]}\n', 'line 1: no "embedding"'),
    ("c.csv", "asset_id,embedding\nx,\"[1,2,3]\"\n", "c.csv line 2"),
    ("d.tsv", "key\tembedding\nx\t[1,2]\n", "no asset_id or id"),
    ("e.txt", "[1,2]\n", "pass a .jsonl, .npz, .csv or .tsv"),
])
def test_a_keyed_file_that_cannot_be_used_is_named_with_its_line(tmp_path, name, text, words):
    from pgvkit.models.keyed import read_keyed
    from pgvkit.vectors import BadVector

    (tmp_path / name).write_text(text)
    with pytest.raises(BadVector, match=words.replace("(", r"\(").replace(".", r"\.")):
        read_keyed(tmp_path / name, 2)


def test_keyed_files_of_each_format_give_the_same_keys_and_vectors(tmp_path):
    from pgvkit.models.keyed import read_keyed

    keys, v = ["s3://a/1.jpg", "IMG_0001 (2).JPG"], np.array([[0.5, -1.0, 2.0], [1.0, 0.0, 0.25]], np.float32)
    (tmp_path / "k.jsonl").write_text("".join(json.dumps({"asset_id": k, "embedding": x.tolist()}) + "\n"
                                              for k, x in zip(keys, v)))
    (tmp_path / "k.csv").write_text("asset_id,embedding\n" + "".join(f'"{k}","[{",".join(map(str, x))}]"\n'
                                                                      for k, x in zip(keys, v)))
    np.savez(tmp_path / "k.npz", asset_ids=np.array(keys), embeddings=v)
    for name in ("k.jsonl", "k.csv", "k.npz"):
        key, got_keys, got = read_keyed(tmp_path / name, 3)
        assert (key, got_keys) == ("asset_id", keys) and np.array_equal(got, v), name


@given(st.text(min_size=1, max_size=80))
@settings(max_examples=300, deadline=None)
def test_every_model_name_gives_a_column_name_postgresql_takes_or_one_line_saying_why_not(name):
    from pgvkit.errors import PgvkitError
    from pgvkit.schema.models import column_slug

    try:
        column = column_slug(name)
    except PgvkitError as exc:
        assert "--column" in str(exc) and not any(c.isascii() and c.isalnum() for c in name.lower())
        return
    assert column.startswith("embedding_") and len(column.encode()) <= 63
    assert set(column) <= set("abcdefghijklmnopqrstuvwxyz0123456789_") and not column.endswith("_")


def test_a_model_named_with_quotes_percent_and_dollars_is_recorded_as_written(team):
    """Names the way teams write them reach the migration as data, never as SQL or quoting."""
    from pgvkit.migrator import Migrator
    from pgvkit.models.change import write_add

    url, migrations = team
    name = "bob's model 50% $$v2$$ (ünïcode)"
    up, _ = write_add(url, name, 1024, migrations)
    migrator = Migrator(url, migrations, echo=lambda _: None, progress=False)
    migrator.migrate()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT model, column_name FROM pgvkit.embedding_models WHERE state = 'backfilling'"
                            ).fetchone() == (name, "embedding_bob_s_model_50_v2_n_code")
    assert searched(url, NEW[-1]) == []
    migrator.rollback(3, yes=True)
