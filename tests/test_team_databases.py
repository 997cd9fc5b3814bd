"""Every notebook, run as a team runs it on its own database on the first day: `pgvkit run` with
no -p, the database given only by DATABASE_URL.

(b) the seed's table holding 12,000 real embeddings whose owners, asset ids and metadata follow
    none of the kit's conventions (tests/teamdata.py);
(c) a database the old docker init directory made: the seed's SQL run by psql, no pgvkit history,
    with the team's rows in it.
"""

import json
import math
import re
from pathlib import Path

import nbformat
import psycopg
import pytest

from .conftest import MIGRATIONS, ROOT, run_cli
from .teamdata import BIG_OWNERS, init_dir_database, load_team_rows

TEAM_ROWS = 12_000  # more than the tuning notebook's 5,000-row sample, so it tunes on a sample

pytestmark = pytest.mark.slow

NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def run_every_notebook(url: str, home: Path, names: list[str] | None = None) -> dict[str, str]:
    """pgvkit run of every notebook (or those named), no parameters; the executed notebooks' outputs as text."""
    names = names or NOTEBOOKS
    paths = [] if names == NOTEBOOKS else [f"notebooks/{n}" for n in names]
    out = run_cli("--json", "run", *paths, env={"DATABASE_URL": url, "PGVKIT_HOME": str(home)}, timeout=1500)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(out.stdout[out.stdout.index("{"):])
    assert [n["notebook"] for n in result["notebooks"]] == names
    assert all(n["status"] == "passed" for n in result["notebooks"])
    texts = {}
    for name in names:
        nb = nbformat.read(Path(result["directory"]) / name, as_version=4)
        texts[name] = "\n".join(str(o.get("text", "")) + json.dumps(o.get("data", {}))
                                for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    return texts


def facts(url: str) -> dict:
    with psycopg.connect(url) as conn:
        return {
            "rows": conn.execute("SELECT count(*) FROM ip_asset_embeddings").fetchone()[0],
            "owners": conn.execute("SELECT count(DISTINCT owner_id) FROM ip_asset_embeddings").fetchone()[0],
            "history": conn.execute("SELECT version, status FROM pgvkit.schema_migrations ORDER BY version").fetchall(),
            "scratch": conn.execute("SELECT count(*) FROM pg_database WHERE datname LIKE 'pgvkit_scratch_%'").fetchone()[0],
            "workload": conn.execute("SELECT to_regclass('pgvkit.tune_workload')").fetchone()[0],
        }


def test_the_notebooks_run_with_their_defaults_on_a_populated_team_table(migrated, tmp_path):
    load_team_rows(migrated, TEAM_ROWS)
    before = facts(migrated)
    assert before["rows"] == TEAM_ROWS and before["owners"] > 100  # a few large owners, a long tail

    # the notebooks that read the team's table (00 and 01 have nothing to do on a migrated one; 03, 06 and 08 work
    # in scratch databases; 07 audits and watches a populated live table in test_notebooks.py; pytest --nbval
    # runs them all)
    texts = run_every_notebook(migrated, tmp_path / "home", [n for n in NOTEBOOKS if n[:2] in ("02", "04", "05")])

    after = facts(migrated)
    assert after == before  # the team's rows untouched, no scratch database or table left behind
    tuning = texts["04_index_tuning.ipynb"]
    assert f"filtered on owner_id = {BIG_OWNERS[0]}" in tuning  # the filter owner came from the data
    sample, small, large = re.search(r"IVFFlat lists for ([\d,]+) rows: \[(\d+), (\d+)\]", tuning).groups()
    rows = int(sample.replace(",", ""))
    assert 4_000 < rows <= 5_000  # the sample, less the held-out queries
    assert (int(small), int(large)) == (round(rows / 1000), round(math.sqrt(rows)))  # as pgvkit tune derives it
    assert f"a sample of {sample} of {TEAM_ROWS:,} rows" in tuning  # the sample shown against the live table
    assert f"Measured on a sample: {sample} of the live table's {TEAM_ROWS:,} rows" in tuning
    assert "upper bound for the live table" in tuning
    # the migration it chose is shown, and nothing is written into the project's migrations by default
    assert "write_migration = False: 004_tune_idx_embedding_cosine.sql is shown, not written" in tuning
    assert "CREATE INDEX CONCURRENTLY IF NOT EXISTS" in tuning
    assert not list(MIGRATIONS.glob("004_*"))
    assert "Size against memory" in texts["02_verify.ipynb"]
    assert f"owner_id = '{BIG_OWNERS[0]}'" in texts["05_troubleshooting.ipynb"]  # cause 4 checked on this table


def test_the_first_two_notebooks_baseline_and_migrate_a_database_the_docker_init_made(db_url, tmp_path):
    """00 and 01 through `pgvkit run`, then what they leave. The other notebooks run on such a
    database under `pytest --nbval` (the root conftest makes it: pgvkit.notebooks.demo.first_day) and
    compare every output with the committed one."""
    init_dir_database(db_url)
    load_team_rows(db_url, 3_000)

    texts = run_every_notebook(db_url, tmp_path / "home", NOTEBOOKS[:2])

    assert "001_init_vector_store exist with no history: recording them, nothing runs" in texts["01_migrate.ipynb"]
    after = facts(db_url)
    assert after["history"] == [(1, "baselined"), (2, "applied"), (3, "applied")] and after["rows"] == 3_000  # 002, 003 are newer
    assert after["scratch"] == 0 and after["workload"] is None
    status = run_cli("status", env={"DATABASE_URL": db_url, "PGVKIT_HOME": str(tmp_path / "home")})
    assert status.returncode == 0, status.stdout + status.stderr  # up to date
    with psycopg.connect(db_url) as conn:
        events = conn.execute("SELECT version, event FROM pgvkit.migration_events ORDER BY id").fetchall()
    assert events == [(1, "baseline"), (2, "apply"), (3, "apply")]  # 001 recorded, never run; then what is newer


def test_the_migrate_notebook_refuses_an_init_dir_database_when_told_not_to_baseline(db_url, tmp_path):
    init_dir_database(db_url)
    out = run_cli("run", "notebooks/01_migrate.ipynb", "-p", "baseline", "False", "-p", "take_backup", "False",
                  env={"DATABASE_URL": db_url, "PGVKIT_HOME": str(tmp_path / "home")}, timeout=300)
    assert out.returncode == 2
    assert "no pgvkit history" in out.stderr and "pgvkit baseline 001" in out.stderr
    assert "Traceback" not in out.stderr
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM pgvkit.schema_migrations").fetchone()[0] == 0
