"""The pgvkit command line: the notebooks' steps, headless.

Exit codes: 0 success / up to date; 1 migrations pending (status); 2 an error, drift or a missing
file. Expected errors print one line with the fix and no traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import PackageNotFoundError, version

import psycopg

from . import backups as backup_mod
from .db import Target, connect, require_database_name, resolve, server_info
from .display import echo_to
from .embedded import EmbeddedServer
from .errors import PgvkitError
from .migrator import Migrator, parse_version
from . import history

__all__ = ["main", "build_parser"]

EXAMPLES = """\
examples:
  pgvkit db start                 start the embedded PostgreSQL (data in .pgvkit/pgdata)
  pgvkit status                   what is applied, pending, drifted
  pgvkit plan                     show the SQL migrate would run
  pgvkit migrate --backup         back up, then apply pending migrations
  pgvkit baseline 001             record 001 as applied on a database the old docker init created
  pgvkit rollback --to 0 --yes    run down files newest first
  DATABASE_URL=postgresql://user:pw@host/db pgvkit status --json
"""


def _version() -> str:
    try:
        return version("pgvkit")
    except PackageNotFoundError:  # running from a source tree
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database-url", default=argparse.SUPPRESS,
                        help="PostgreSQL URL (default: $DATABASE_URL, else the embedded server)")
    common.add_argument("--migrations", default=argparse.SUPPRESS, metavar="DIR",
                        help="migrations directory (default: $PGVKIT_MIGRATIONS, else ./migrations)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output on stdout")

    parser = argparse.ArgumentParser(
        prog="pgvkit", parents=[common], epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Migrate, verify and operate a PostgreSQL + pgvector vector store.",
    )
    parser.add_argument("--version", action="version", version=f"pgvkit {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name, help, example):
        return sub.add_parser(name, parents=[common], help=help, description=help,
                              epilog=f"example:\n  {example}", formatter_class=argparse.RawDescriptionHelpFormatter)

    db = add("db", "manage the embedded PostgreSQL server", "pgvkit db start")
    db.add_argument("action", choices=["start", "stop", "status", "url"])

    add("status", "show applied / pending / drifted migrations (exit 0 up to date, 1 pending, 2 drift)",
        "pgvkit status --json")
    add("plan", "dry run: each pending migration, its transaction mode and its SQL", "pgvkit plan")
    m = add("migrate", "apply pending migrations, each in its own transaction", "pgvkit migrate --backup")
    m.add_argument("--backup", action="store_true", help="take a pg_dump backup first")
    m.add_argument("--target", metavar="N", help="apply migrations up to and including N only")
    m.add_argument("--lock-wait", type=float, default=60.0, metavar="SECONDS",
                   help="how long to wait for another migrator's lock (default 60)")
    m.add_argument("--lock-timeout", default="5s", metavar="DURATION",
                   help="lock_timeout for each DDL statement, retried within --retry-budget (default 5s)")
    m.add_argument("--retry-budget", type=float, default=60.0, metavar="SECONDS",
                   help="total time to keep retrying DDL that hit lock_timeout (default 60)")

    b = add("baseline", "record migrations up to VERSION as applied without running them", "pgvkit baseline 001")
    b.add_argument("version")
    r = add("repair", "accept the changed checksum of an applied migration", "pgvkit repair 001 --reason 'comment fix'")
    r.add_argument("version")
    r.add_argument("--reason", required=True, help="why the applied file changed (kept in the event log)")
    rb = add("rollback", "run down files newest first down to version N", "pgvkit rollback --to 0 --yes")
    rb.add_argument("--to", required=True, metavar="N", help="keep migrations <= N applied (0: undo all)")
    rb.add_argument("--yes", action="store_true", help="confirm: this may drop data")
    rb.add_argument("--confirm-database", metavar="NAME",
                    help="the target database's name, typed back (needed for any database but the embedded one)")
    add("history", "the migration event log, newest first", "pgvkit history --json")
    add("verify", "check the schema, indexes, grants and vector-store health (exit 2 on any fail)",
        "pgvkit verify --json")
    dr = add("doctor", "diagnose why migrations, connections, extension or index builds fail, with fixes",
             "pgvkit doctor   or   pgvkit doctor --error 'type \"vector\" does not exist'")
    dr.add_argument("--error", metavar="MESSAGE", help="explain an error message instead of examining the database")
    sm = add("smoke", "insert test rows, read back, search, fire the trigger, then roll back (leaves 0 rows)",
             "pgvkit smoke   or   pgvkit smoke --embedding my_vector.npy")
    sm.add_argument("--embedding", metavar="VECTOR",
                    help="test with one of your vectors: a '[0.1, ...]' literal or a .npy/.json/.txt file")
    ld = add("load", "bulk-load tagged embeddings (synthetic, or yours) with binary COPY",
             "pgvkit load --rows 10000   or   pgvkit load --from vectors.npy")
    source = ld.add_mutually_exclusive_group(required=True)
    source.add_argument("--rows", type=int, help="how many synthetic rows")
    source.add_argument("--from", dest="from_file", metavar="FILE",
                        help="your vectors: .npy (n x dim), .json (list of lists) or text (one [...] per line)")
    ld.add_argument("--seed", type=int, default=0, help="random seed of the synthetic data (default 0)")
    ld.add_argument("--confirm-database", metavar="NAME",
                    help="the target database's name, typed back (needed for any database but the embedded one: "
                         "test rows in a live table show up in the application's searches until unloaded)")
    ul = add("unload", "delete every row pgvkit load inserted (owner_id prefix pgvkit-load-)", "pgvkit unload --yes")
    ul.add_argument("--yes", action="store_true", help="confirm: deletes rows")
    ul.add_argument("--confirm-database", metavar="NAME",
                    help="the target database's name, typed back (needed for any database but the embedded one)")
    tu = add("tune", "sweep IVFFlat/HNSW settings on a scratch copy, recommend the cheapest meeting a recall target",
             "pgvkit tune --target-recall 0.95 --rows 20000 --write-migration")
    tu.add_argument("--target-recall", type=float, default=0.95, metavar="R", help="recall@k to reach (default 0.95)")
    tu.add_argument("--k", type=int, default=10, help="neighbours per query (default 10)")
    tu.add_argument("--rows", type=int, help="workload size (default: the whole table, or 20000 synthetic)")
    tu.add_argument("--queries", type=int, default=200, help="held-out queries (default 200, plus as many fresh)")
    tu.add_argument("--source", choices=["auto", "table", "synthetic"], default="auto",
                    help="the live table's vectors (auto: when it has >= 1000 rows) or synthetic ones")
    tu.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    tu.add_argument("--filter-owner", metavar="OWNER_ID",
                    help="also measure filtered recall (WHERE owner_id = OWNER_ID) with iterative scans off and on")
    tu.add_argument("--write-migration", action="store_true",
                    help="write the recommendation as the next numbered migration (and its down file)")
    add("lab", "start JupyterLab on notebooks/ against the kit's database (extra flags go to jupyter lab)",
        "pgvkit lab --no-browser --port 8899")
    rn = add("run", "execute notebooks headless (papermill); executed copies and an HTML report in .pgvkit/runs/",
             "pgvkit run notebooks/02_verify.ipynb   or   pgvkit run notebooks/04_index_tuning.ipynb -p rows 100000")
    rn.add_argument("notebooks", nargs="*", metavar="NOTEBOOK", help="notebooks to run in order (default: all)")
    rn.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="set a notebook parameter (a Python literal, else text); repeatable")
    bk = add("backup", "write a pg_dump custom-format backup to .pgvkit/backups/", "pgvkit backup")
    bk.add_argument("--dir", metavar="DIR", help="where to write it (default .pgvkit/backups)")
    rs = add("restore", "restore a backup file over the database", "pgvkit restore .pgvkit/backups/jarvis-....dump --yes")
    rs.add_argument("file")
    rs.add_argument("--yes", action="store_true", help="confirm: objects in the dump are replaced")
    rs.add_argument("--confirm-database", metavar="NAME",
                    help="the target database's name, typed back (needed for any database but the embedded one)")
    return parser


def _target(args) -> Target:
    return resolve(getattr(args, "database_url", None))


def _migrator(args, target: Target, echo) -> Migrator:
    kwargs = {}
    for name in ("lock_wait", "lock_timeout", "retry_budget"):
        if hasattr(args, name):
            kwargs[name] = getattr(args, name)
    return Migrator(target.url, getattr(args, "migrations", None), echo=echo, **kwargs)


def _column_dimension(url: str) -> int:
    from .inserts import column_dimension

    with connect(url) as conn:
        return column_dimension(conn)


def _vector_file(path: str, url: str):
    from .vectors import read_vector_file

    return read_vector_file(path, _column_dimension(url))


def _embedding_argument(value: str | None, url: str):
    """--embedding: a '[...]' literal as given (checked by smoke), or the one vector in a file."""
    if value is None or value.lstrip().startswith("["):
        return value
    vectors = _vector_file(value, url)
    if len(vectors) != 1:
        raise PgvkitError(f"{value} holds {len(vectors)} vectors; --embedding takes one (use pgvkit load --from for many)")
    return vectors[0]


def _guard(args, target: Target, what: str) -> None:
    """Destructive commands: --yes always; on any database but the embedded default, also its
    name typed back with --confirm-database, so a DATABASE_URL pointing at production cannot be
    wiped by a command meant for a test database."""
    from .errors import ConfirmationRequired

    if not args.yes:
        raise ConfirmationRequired(f"{what} on {target.masked}; add --yes to go ahead")
    require_database_name(target, args.confirm_database, what, "--confirm-database {name}")


def _print_json(data) -> None:
    print(json.dumps(data, indent=2, default=str))


def _db(args, out) -> int:
    server = EmbeddedServer.default()
    if args.action == "start":
        server.start()
        with connect(server.url()) as conn:
            info = server_info(conn)
        data = {**server.status(), "server_version": info["server_version"],
                "vector_available": info["vector_available"]}
        if getattr(args, "json", False):
            _print_json(data)
        else:
            out(f"embedded PostgreSQL {info['server_version']} (pgvector {info['vector_available']} available) "
                f"running, pid {data['pid']}")
            out(f"  url:  {data['url']}")
            out(f"  data: {data['pgdata']}")
    elif args.action == "stop":
        stopped = server.stop()
        out("embedded server stopped" if stopped else "embedded server was not running")
    elif args.action == "status":
        data = server.status()
        if getattr(args, "json", False):
            _print_json(data)
        else:
            state = f"running, pid {data['pid']}" if data["running"] else (
                "stopped" if data["initialised"] else "not initialised (pgvkit db start creates it)")
            out(f"embedded server: {state}")
            out(f"  data: {data['pgdata']}")
            if data["running"]:
                out(f"  url:  {data['url']}")
        return 0 if data["running"] else 3
    elif args.action == "url":
        if not server.running():
            raise PgvkitError("the embedded server is not running; start it with: pgvkit db start")
        print(server.url())
    return 0


def _doctor(args, out) -> int:
    from .doctor import doctor, explain

    if args.error:
        report = explain(args.error)
        if not report.checks:
            out("pgvkit does not know this message; run pgvkit doctor to examine the database itself")
            return 1
    else:
        report = doctor(getattr(args, "database_url", None), migrations_dir=getattr(args, "migrations", None))
    _print_json(report.to_dict()) if getattr(args, "json", False) else out(str(report))
    return report.exit_code


def _tune(args, target: Target, echo, as_json: bool) -> int:
    from . import tuning

    if not 0 < args.target_recall <= 1:
        raise PgvkitError("--target-recall must be between 0 and 1, e.g. --target-recall 0.95")
    if args.k < 1 or args.queries < 2 or (args.rows is not None and args.rows < args.k + 1):
        raise PgvkitError("--k and --queries must be positive and --rows larger than k, e.g. --k 10 --rows 20000")
    _, result, rec = tuning.tune(target.url, target=args.target_recall, k=args.k, rows=args.rows,
                                 queries=args.queries, source=args.source, seed=args.seed,
                                 filter_owner=args.filter_owner,
                                 progress=not as_json, echo=echo)
    written = None
    if args.write_migration and rec.met:
        written = tuning.write_migration(target.url, rec, getattr(args, "migrations", None))
    if as_json:
        _print_json({"sweep": result.to_dict(), "recommendation": rec.to_dict(),
                     "migration": [str(p) for p in written] if written else None})
    else:
        echo(str(result))
        echo("")
        echo(("recommended: " if rec.met else "NOT MET: ") + rec.message)
        if written:
            echo(f"wrote {written[0]} and {written[1].name}; apply with: pgvkit plan, then pgvkit migrate")
        elif args.write_migration:
            echo("no migration written: nothing met the target")
    return 0 if rec.met else 1


def _lab(args, echo) -> int:
    """JupyterLab whose kernels reach the same database as this command (PGVKIT_HOME, and
    DATABASE_URL when one was given, are exported to them). Applies nothing; Ctrl-C stops the
    lab, not the server."""
    import os
    import signal
    import subprocess
    from pathlib import Path

    from .embedded import default_home, project_root

    target = _target(args)  # starts the embedded server, or checks the URL below
    with connect(target.url) as conn:
        info = server_info(conn)
    home = default_home()
    chosen = any(a.split("=")[0] in ("--notebook-dir", "--ServerApp.root_dir") for a in args.extra)
    notebooks = (project_root() or Path.cwd()) / "notebooks"
    if not chosen and not notebooks.is_dir():
        raise PgvkitError("no notebooks/ here; run pgvkit lab inside the pgvkit checkout")
    echo(f"database: {target.masked} ({target.source}), PostgreSQL {info['server_version']}, "
         f"pgvector {info['vector_version'] or 'not created yet (01_migrate creates it)'}")
    env = {**os.environ, "PGVKIT_HOME": str(home)}
    if target.is_embedded:  # kernels find the same embedded server through PGVKIT_HOME
        env.pop("DATABASE_URL", None)
    else:
        env["DATABASE_URL"] = target.url
    cmd = [str(Path(sys.executable).with_name("jupyter")), "lab"] + ([] if chosen else [f"--notebook-dir={notebooks}"])
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    cmd += args.extra
    echo("starting JupyterLab on notebooks/ (Ctrl-C stops it; the embedded server keeps running, "
         "pgvkit db stop stops it)")
    proc = subprocess.Popen(cmd, env=env)
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGTERM)  # JupyterLab shuts its kernels down on SIGTERM, without asking
        proc.wait()
        echo("JupyterLab stopped")
        return 0


def _run(args, echo, as_json: bool) -> int:
    from .runs import default_notebooks, parse_parameters, run_notebooks

    params = parse_parameters(args.parameter)
    notebooks = args.notebooks or default_notebooks()
    if not notebooks:
        raise PgvkitError("no notebooks given and none under ./notebooks; name one, e.g. notebooks/02_verify.ipynb")
    url = getattr(args, "database_url", None)
    result = run_notebooks(notebooks, params, database_url=resolve(url).url if url else None, echo=echo)
    if as_json:
        _print_json(result.to_dict())
    else:
        echo(str(result))
        echo(f"report: {result.report}")
    if not result.ok:
        bad = next(r for r in result.results if r.status == "failed")
        print(f"pgvkit: error: {bad.notebook} failed at cell {bad.cell}: {bad.error} (see {result.report})",
              file=sys.stderr)
        return 2
    return 0


def run(args) -> int:
    as_json = getattr(args, "json", False)
    # progress goes to stderr when stdout carries JSON
    echo = echo_to(sys.stderr if as_json else sys.stdout)
    if args.command == "db":
        return _db(args, echo)
    if args.command == "doctor":
        return _doctor(args, echo)
    if args.command == "run":
        return _run(args, echo, as_json)
    if args.command == "lab":
        return _lab(args, echo)
    target = _target(args)
    if not as_json:
        echo(f"database: {target.masked} ({target.source})")
    if args.command == "backup":
        path = backup_mod.backup(target.url, args.dir)
        _print_json({"backup": str(path)}) if as_json else echo(f"backup written: {path}")
        return 0
    if args.command == "restore":
        _guard(args, target, f"restore replaces every object in {args.file}")
        backup_mod.restore(target.url, args.file, yes=True)
        echo(f"restored {args.file}")
        return 0
    if args.command == "history":
        with connect(target.url) as conn:
            rows = history.events(conn)
        if as_json:
            _print_json(rows)
        else:
            from .display import text_table

            echo(text_table(rows, ["id", "version", "event", "at", "db_role", "client", "detail"]))
        return 0

    if args.command == "verify":
        from .verify import verify

        report = verify(target.url, migrations_dir=getattr(args, "migrations", None))
        _print_json(report.to_dict()) if as_json else echo(str(report))
        return report.exit_code
    if args.command == "smoke":
        from .inserts import smoke

        report = smoke(target.url, embedding=_embedding_argument(args.embedding, target.url), raise_on_failure=False)
        _print_json(report.to_dict()) if as_json else echo(str(report))
        return 0 if report.ok else 2
    if args.command == "load":
        from .inserts import load

        require_database_name(target, args.confirm_database, "load inserts test rows into the live table",
                              "--confirm-database {name}")
        if args.from_file:
            result = load(target.url, vectors=_vector_file(args.from_file, target.url), progress=not as_json)
        elif args.rows < 1:
            raise PgvkitError("--rows must be a positive number of rows, e.g. --rows 10000")
        else:
            result = load(target.url, args.rows, seed=args.seed, progress=not as_json)
        _print_json({"rows": result.rows, "seconds": result.seconds, "rows_per_second": result.rows_per_second,
                     "tag": result.tag}) if as_json else echo(str(result))
        return 0
    if args.command == "tune":
        return _tune(args, target, echo, as_json)
    if args.command == "unload":
        from .inserts import unload

        _guard(args, target, "unload deletes every row pgvkit load tagged")
        n = unload(target.url)
        _print_json({"deleted": n}) if as_json else echo(f"deleted {n} loaded rows")
        return 0

    migrator = _migrator(args, target, echo)
    if args.command == "status":
        report = migrator.status()
        _print_json(report.to_dict()) if as_json else echo(str(report))
        return report.exit_code
    if args.command == "plan":
        plan = migrator.plan()
        _print_json(plan.to_dict()) if as_json else echo(str(plan))
        return 0
    if args.command == "migrate":
        migrations = migrator.read()  # refuse bad files before any backup or lock
        if args.backup:
            path = backup_mod.backup(target.url)
            echo(f"backup written: {path}")
        applied = migrator.migrate(migrations, target=parse_version(args.target) if args.target else None)
        if as_json:
            _print_json({"applied": applied})
        return 0
    if args.command == "baseline":
        recorded = migrator.baseline(args.version)
        if as_json:
            _print_json({"baselined": recorded})
        return 0
    if args.command == "repair":
        migrator.repair(args.version, args.reason)
        return 0
    if args.command == "rollback":
        plan = migrator.rollback_plan(args.to)
        if plan.steps and not args.yes and not as_json:
            echo(str(plan))  # what would run and drop, before refusing
        if plan.steps:
            _guard(args, target, f"rollback to {args.to} runs {', '.join(s['version'] for s in plan.steps)} "
                                 "down files and may drop data (back up first: pgvkit backup)")
        undone = migrator.rollback(args.to, yes=True)
        if as_json:
            _print_json({"rolled_back": undone})
        return 0
    raise AssertionError(args.command)  # pragma: no cover - argparse limits the choices


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "lab":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra  # pgvkit lab passes them to jupyter lab
    try:
        return run(args)
    except PgvkitError as exc:
        print(f"pgvkit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except psycopg.Error as exc:  # a server error pgvkit did not anticipate: one line, no traceback
        message = " ".join((exc.diag.message_primary or str(exc)).split())
        print(f"pgvkit: error: {message} (run pgvkit doctor for a diagnosis)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pgvkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
