"""One tuning run per database (issue 23, case 2): a second `pgvkit tune` never drops or rebuilds
the first one's scratch table; it stops in one line naming the run that holds the lock."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import psycopg
import pytest

from pgvkit import tuning
from pgvkit.data.inserts import load

from .conftest import MIGRATIONS, ROOT, real_embeddings, wait_until


def start_tune(url, migrations):
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    return subprocess.Popen(
        [sys.executable, "-m", "pgvkit", "tune", "--rows", "5000", "--queries", "50", "--candidates", "vector",
         "--target-recall", "0.9", "--json", "--write-migration", "--database-url", url, "--migrations",
         str(migrations)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def scratch_indexed(url) -> bool:
    """The first run holds the lock and is building a candidate index on its scratch table."""
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_progress_create_index p JOIN pg_class c ON c.oid = p.relid"
                            " WHERE c.relname = 'tune_workload'").fetchone()[0] > 0


@pytest.fixture
def team_table(migrated, tmp_path):
    load(migrated, vectors=real_embeddings()[:6000], progress=False)
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS, migrations)
    return migrated, migrations


def outcome(proc):
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def assert_one_ran_and_one_stopped(results, migrations):
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], [(code, err) for code, _, err in results]
    (_, out, _), = [r for r in results if r[0] == 0]
    (_, _, err), = [r for r in results if r[0] == 2]
    assert "Traceback" not in err
    [line] = err.strip().splitlines()
    assert "a pgvkit tune is already running on" in line and "process" in line and "wait for it" in line
    assert json.loads(out)["recommendation"]["met"]
    assert len(list(migrations.glob("004_*.sql"))) == 2  # the migration and its down file
    assert not list(migrations.glob("005_*"))  # the stopped run wrote nothing


@pytest.mark.slow
def test_a_tune_started_while_another_builds_stops_in_one_line_and_the_first_finishes(team_table):
    url, migrations = team_table
    first = start_tune(url, migrations)
    wait_until(lambda: scratch_indexed(url) or first.poll() is not None, "the first run's first build")
    second = start_tune(url, migrations)
    results = [outcome(second), outcome(first)]
    assert_one_ran_and_one_stopped(results, migrations)
    assert results[0][0] == 2  # the later one stopped, the first kept its table
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT to_regclass('pgvkit.tune_workload')").fetchone()[0] is None


@pytest.mark.slow
def test_two_tunes_started_together_one_finishes_and_the_other_stops_in_one_line(team_table):
    url, migrations = team_table
    results = [outcome(p) for p in [start_tune(url, migrations), start_tune(url, migrations)]]
    assert_one_ran_and_one_stopped(results, migrations)


def test_cleanup_never_drops_the_table_of_a_run_holding_the_lock(team_table):
    url, _ = team_table
    held = tuning.TuneLock(url)
    with held:  # another run (here, another connection of this process) holds the lock
        other = tuning.TuneLock(url)
        with pytest.raises(tuning.TuneRunning, match=r"already running on .* \(pgvkit tune \(process \d+"):
            other.acquire()
        assert not other.held
    with tuning.lock(url) as mine:  # a notebook's lock spans cells: cleanup and prepare run under it
        tuning.cleanup(url)
        workload = tuning.prepare(url, rows=1200, queries=20, echo=lambda _: None)
        assert workload.rows == 1200 - 40 and mine.held
        with pytest.raises(tuning.TuneRunning):
            tuning.TuneLock(url).acquire()
        tuning.cleanup(url)
    tuning.TuneLock(url).acquire().release()  # released at the end
    first = tuning.lock(url)
    assert tuning.lock(url) is first  # a notebook run again in the same kernel keeps its own lock
    first.release()


def test_a_refused_run_leaves_the_holders_scratch_table_in_place(team_table):
    url, _ = team_table
    with tuning.lock(url):
        workload = tuning.prepare(url, rows=1200, queries=20, echo=lambda _: None)
        code = subprocess.run([sys.executable, "-m", "pgvkit", "tune", "--rows", "1200", "--database-url", url],
                              capture_output=True, text=True, cwd=ROOT,
                              env={k: v for k, v in os.environ.items() if k != "DATABASE_URL"}, timeout=120)
        assert code.returncode == 2 and "already running" in code.stderr and "Traceback" not in code.stderr
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM pgvkit.tune_workload").fetchone()[0] == workload.rows
        assert np.isfinite(workload.vectors).all()
        tuning.cleanup(url)
