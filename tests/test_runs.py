"""pgvkit run: notebooks executed headless with parameters, executed copies and one HTML report
per run, a failing cell named, and no password in anything written."""

import psycopg

from .conftest import PASSWORD, run_cli


def runs_in(home):
    return sorted((home / "runs").iterdir())


def test_the_verify_notebook_runs_and_writes_its_report(migrated, pgvkit_home):
    proc = run_cli("run", "notebooks/02_verify.ipynb", "--database-url", migrated,
                   env={"PGVKIT_HOME": str(pgvkit_home)}, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [run] = runs_in(pgvkit_home)
    assert (run / "02_verify.ipynb").is_file()
    report = (run / "report.html").read_text()
    assert "02_verify.ipynb: passed" in report and "no check failed" in report


def test_a_dropped_index_fails_the_run_naming_the_notebook_and_cell(migrated, pgvkit_home):
    with psycopg.connect(migrated) as conn:
        conn.execute("DROP INDEX idx_owner_id")
    proc = run_cli("run", "notebooks/02_verify.ipynb", "--database-url", migrated,
                   env={"PGVKIT_HOME": str(pgvkit_home)}, timeout=300)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("pgvkit: error: 02_verify.ipynb failed at cell ") and "VerificationFailed" in line
    assert "idx_owner_id" in line and "Traceback" not in proc.stderr
    [run] = runs_in(pgvkit_home)
    assert "02_verify.ipynb: failed" in (run / "report.html").read_text()


def test_parameters_reach_the_notebook(migrated, pgvkit_home):
    name = psycopg.conninfo.conninfo_to_dict(migrated)["dbname"]
    proc = run_cli("run", "notebooks/03_test_inserts.ipynb", "-p", "load_rows", "50", "-p", "cleanup", "False",
                   "-p", "use_scratch", "False", "-p", "confirm_database", name,
                   "--database-url", migrated, env={"PGVKIT_HOME": str(pgvkit_home)}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    with psycopg.connect(migrated) as conn:
        assert conn.execute("SELECT count(*) FROM ip_asset_embeddings").fetchone()[0] == 50


def test_no_password_is_written_and_a_password_parameter_is_refused(app_database, pgvkit_home):
    with psycopg.connect(app_database["admin"], autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
    env = {"PGVKIT_HOME": str(pgvkit_home), "DATABASE_URL": app_database["url"]}
    assert run_cli("migrate", env=env).returncode == 0
    proc = run_cli("run", "notebooks/00_start_here.ipynb", "notebooks/02_verify.ipynb", env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    written = [p.read_text(errors="replace") for p in pgvkit_home.rglob("*") if p.is_file()]
    assert written and not any(PASSWORD in text for text in written)
    assert PASSWORD not in proc.stdout + proc.stderr
    refused = run_cli("run", "notebooks/02_verify.ipynb", "-p", "database_url", app_database["url"], env=env)
    assert refused.returncode == 2 and "holds a password" in refused.stderr and PASSWORD not in refused.stderr


def test_a_run_from_another_directory_hands_the_kernels_the_shells_own_server(tmp_path):
    """The kernels work in the notebook's directory, inside another project: they reach the
    server the shell would, not one of that project's own."""
    import os
    import subprocess
    import sys
    from urllib.parse import quote

    import nbformat

    from pgvkit.server.embedded import EmbeddedServer

    project, elsewhere = tmp_path / "checkout", tmp_path / "elsewhere"
    (project / "migrations").mkdir(parents=True)
    (project / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    (project / "notebooks").mkdir()
    elsewhere.mkdir()
    probe = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "from pgvkit.server.db import resolve\nprint('SERVER', resolve().url)")])
    probe.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(probe, project / "notebooks" / "probe.ipynb")
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PGVKIT_HOME", "PGVKIT_MIGRATIONS")}
    try:
        proc = subprocess.run([sys.executable, "-m", "pgvkit", "run", str(project / "notebooks" / "probe.ipynb")],
                              cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        [run] = (elsewhere / ".pgvkit" / "runs").iterdir()  # the shell's home
        [said] = [o["text"] for o in nbformat.read(run / "probe.ipynb", as_version=4).cells[0].outputs]
        assert quote(str(EmbeddedServer(elsewhere / ".pgvkit").socket_dir), safe="/") in said, said
        assert not (project / ".pgvkit").exists()  # no second server made for the notebook's project
    finally:
        EmbeddedServer(elsewhere / ".pgvkit").destroy()
