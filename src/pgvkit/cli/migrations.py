"""Migrations: status, plan, migrate, baseline, repair, rollback and the event log."""

from __future__ import annotations

from ..checks import Report
from ..display import text_table
from ..errors import ConfigError
from ..migrator import history
from ..migrator import Migrator, parse_version
from ..migrator.standby import check_standbys, feedback_warnings, wait_for_replay
from ..server import backups
from ..server.db import connect
from .base import Command, confirm_database_argument, guard, print_json


def _migrator(args, ctx) -> Migrator:
    kwargs = {name: getattr(args, name) for name in ("lock_wait", "lock_timeout", "retry_budget") if hasattr(args, name)}
    return Migrator(ctx.target.url, ctx.migrations_dir, echo=ctx.echo, progress=not ctx.as_json, **kwargs)


def _model_change(ctx):
    """During a model change: how far each model's column is filled (None otherwise)."""
    import psycopg

    from ..schema.models import check_models

    try:
        with connect(ctx.target.url) as conn:
            return check_models(conn)
    except psycopg.Error:  # no table yet, or a role that may not read it: status says the rest
        return None


def status(args, ctx) -> int:
    report = _migrator(args, ctx).status()
    standbys = ctx.standbys
    change = _model_change(ctx)
    if not standbys:
        if ctx.as_json and change is not None:
            print_json({**report.to_dict(), "embedding_models": vars(change)})
            return report.exit_code
        ctx.report(report)
        if change is not None:
            ctx.echo(f"\nembedding models: {change.detail}" + (f"\n  fix: {change.fix}" if change.fix else ""))
        return report.exit_code
    checks, data = check_standbys(ctx.target.url, standbys)
    if ctx.as_json:
        print_json({**report.to_dict(), "standbys": data})
    else:
        ctx.echo(str(report))
        ctx.echo("")
        ctx.echo(str(Report(f"Standbys of {ctx.target.masked}", checks)))
    return report.exit_code or Report("standbys", checks).exit_code


def _plan_arguments(p) -> None:
    p.add_argument("--sql", action="store_true", help="also print each file's SQL, in the order it would run")


def plan(args, ctx) -> int:
    found = _migrator(args, ctx).plan()
    ctx.report(found)
    if getattr(args, "sql", False) and not ctx.as_json:
        ctx.echo("\n" + found.sql())
    return 0


def _migrate_arguments(p) -> None:
    p.add_argument("--backup", action="store_true", help="take a pg_dump backup first")
    p.add_argument("--target", metavar="N", help="apply migrations up to and including N only")
    _lock_arguments(p)
    p.add_argument("--wait-standbys", type=float, default=300.0, metavar="SECONDS",
                   help="after applying, wait up to this long for every standby to replay it (default 300; 0: do not "
                        "wait)")


def _lock_arguments(p) -> None:
    p.add_argument("--lock-wait", type=float, default=60.0, metavar="SECONDS",
                   help="how long to wait for another migrator's lock (default 60)")
    p.add_argument("--lock-timeout", default="5s", metavar="DURATION",
                   help="lock_timeout for each DDL statement, retried within --retry-budget (default 5s)")
    p.add_argument("--retry-budget", type=float, default=60.0, metavar="SECONDS",
                   help="total time to keep retrying DDL that hit lock_timeout (default 60)")


def migrate(args, ctx) -> int:
    migrator = _migrator(args, ctx)
    migrations = migrator.read()  # refuse bad files before any backup or lock
    if args.backup:
        ctx.echo(f"backup written: {backups.backup(ctx.target.url)}")
    standbys = ctx.standbys
    for line in feedback_warnings(ctx.target.url, standbys, migrations) if standbys else ():
        ctx.echo(line)
    applied = migrator.migrate(migrations, target=parse_version(args.target) if args.target else None)
    if applied and standbys and args.wait_standbys > 0:
        wait_for_replay(ctx.target.url, standbys, args.wait_standbys, progress=not ctx.as_json, echo=ctx.echo)
    if ctx.as_json:
        print_json({"applied": applied})
    elif any("_tune_" in m for m in applied):
        ctx.echo("the vector index changed: next, pgvkit confirm --write-migration chooses its search settings on the "
                 "live index at full size (--query-file with new query vectors confirms that shape too), then "
                 "pgvkit migrate and pgvkit verify; measure what it returns now with pgvkit recall")
    return 0


def _import_arguments(p) -> None:
    from ..migrator.importing import TOOLS

    p.add_argument("--from", dest="tool", required=True, choices=TOOLS, help="the tool the files were written for")
    p.add_argument("directory", metavar="DIR", help="that tool's migrations directory")
    p.add_argument("--write", action="store_true", help="write the files (default: show what would be written)")


def import_(args, ctx) -> int:
    from ..migrator.importing import plan_import

    plan = plan_import(args.tool, args.directory, ctx.migrations_dir)
    if ctx.as_json:
        written = [str(p) for p in plan.write()] if args.write else []
        print_json({"tool": args.tool, "migrations": plan.rows(), "skipped": plan.skipped, "written": written})
        return 0
    ctx.echo(str(plan))
    if not args.write:
        for path, text in plan.files:
            ctx.echo(f"\n-- {path.name}\n{text.rstrip()}")
        ctx.echo("\ndry run: nothing written; add --write to write these files, then pgvkit plan")
        return 0
    written = plan.write()
    ctx.echo(f"wrote {len(written)} file(s) into {plan.migrations_dir}; next: pgvkit plan, and on a database "
             f"{args.tool} already migrated, pgvkit baseline --from {args.tool} before pgvkit migrate")
    return 0


def _baseline_arguments(p) -> None:
    p.add_argument("version", nargs="?", help="record up to this one (default: the migrations whose objects "
                   "all exist already, on a database with no history)")
    from ..migrator.importing import TOOLS

    p.add_argument("--from", dest="tool", choices=TOOLS,
                   help="record what that tool's history table shows applied (files brought in by pgvkit import)")


def baseline(args, ctx) -> int:
    if args.tool and args.version:
        raise ConfigError("give a VERSION or --from TOOL, not both")
    migrator = _migrator(args, ctx)
    recorded = migrator.baseline_from(args.tool) if args.tool else migrator.baseline(args.version)
    if ctx.as_json:
        print_json({"baselined": recorded})
    return 0


def _repair_arguments(p) -> None:
    p.add_argument("version", nargs="?", help="record up to this one (default: the migrations whose objects "
                   "all exist already, on a database with no history)")
    p.add_argument("--reason", required=True, help="why the applied file changed (kept in the event log)")


def repair(args, ctx) -> int:
    _migrator(args, ctx).repair(args.version, args.reason)
    return 0


def _rollback_arguments(p) -> None:
    p.add_argument("--to", required=True, metavar="N", help="keep migrations <= N applied (0: undo all)")
    p.add_argument("--yes", action="store_true", help="confirm: this may drop data")
    confirm_database_argument(p)
    _lock_arguments(p)


def rollback(args, ctx) -> int:
    migrator = _migrator(args, ctx)
    plan = migrator.rollback_plan(args.to)
    if plan.steps and not args.yes and not ctx.as_json:
        ctx.echo(str(plan))  # what would run and drop, before refusing
    if plan.steps:
        guard(args, ctx.target, f"rollback to {args.to} runs {', '.join(s['version'] for s in plan.steps)} "
                                "down files and may drop data (back up first: pgvkit backup)")
    undone = migrator.rollback(args.to, yes=True)
    if ctx.as_json:
        print_json({"rolled_back": undone})
    return 0


def events(args, ctx) -> int:
    with connect(ctx.target.url) as conn:
        rows = history.events(conn)
    if ctx.as_json:
        print_json(rows)
    else:
        ctx.echo(text_table(rows, ["id", "version", "event", "at", "db_role", "client", "detail"]))
    return 0


COMMANDS = [
    Command("status", "show applied / pending / drifted migrations (exit 0 up to date, 1 pending, 2 drift)",
            "pgvkit status --json", status, needs_migrations=True),
    Command("plan", "dry run: each pending migration, its transaction mode and what it changes (--sql: the SQL)",
            "pgvkit plan --sql", plan, _plan_arguments, needs_migrations=True),
    Command("migrate", "apply pending migrations, each in its own transaction", "pgvkit migrate --backup", migrate,
            _migrate_arguments, needs_session=True, writes=True, needs_migrations=True),
    Command("baseline", "record migrations up to VERSION (or what --from TOOL's history shows) as applied without "
            "running them", "pgvkit baseline 001   or   pgvkit baseline --from flyway",
            baseline, _baseline_arguments, needs_session=True, writes=True, needs_migrations=True),
    Command("import", "translate another tool's migrations (goose, dbmate, golang-migrate, flyway) into NNN_name.sql "
            "files; a dry run unless --write", "pgvkit import --from goose db/migrations --write", import_,
            _import_arguments, needs_target=False),
    Command("repair", "accept the changed checksum of an applied migration", "pgvkit repair 001 --reason 'comment fix'",
            repair, _repair_arguments, needs_session=True, writes=True, needs_migrations=True),
    Command("rollback", "run down files newest first down to version N", "pgvkit rollback --to 0 --yes", rollback,
            _rollback_arguments, needs_session=True, writes=True, needs_migrations=True),
    Command("history", "the migration event log, newest first", "pgvkit history --json", events),
]
