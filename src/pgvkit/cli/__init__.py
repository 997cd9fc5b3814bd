"""The pgvkit command line: the notebooks' steps, headless.

Exit codes: 0 success / up to date; 1 migrations pending (status); 2 an error, drift or a missing
file. Expected errors print one line with the fix and no traceback.

The commands are a table (`COMMANDS`): each module of this package holds a group of them, every
command with its help, its example, its arguments and its handler side by side.
"""

from __future__ import annotations

import argparse
import sys

import psycopg

from ..errors import PgvkitError
from ..server import timeouts
from ..server.explain import explain
from . import checks, inserts, migrations, models, notebooks, server, tuning, watch
from .base import Command, Context

__all__ = ["main", "build_parser", "COMMANDS"]

COMMANDS: list[Command] = [*server.COMMANDS, *migrations.COMMANDS, *checks.COMMANDS, *inserts.COMMANDS,
                           *tuning.COMMANDS, *models.COMMANDS, *watch.COMMANDS,
                           *notebooks.COMMANDS]

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
    from importlib.metadata import PackageNotFoundError, version  # only for --version: 50 ms at every start else

    try:
        return version("pgvkit")
    except PackageNotFoundError:
        return "0+unknown"  # running from a source tree


class _Version(argparse.Action):
    """--version, looked up only when asked."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"pgvkit {_version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database-url", default=argparse.SUPPRESS,
                        help="PostgreSQL URL (default: $DATABASE_URL, else the embedded server)")
    common.add_argument("--migrations", default=argparse.SUPPRESS, metavar="DIR",
                        help="migrations directory (default: $PGVKIT_MIGRATIONS, else ./migrations)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="machine-readable output on stdout")
    common.add_argument("--standby", action="append", default=argparse.SUPPRESS, metavar="URL",
                        help="a hot standby of the database (repeatable; default: $PGVKIT_STANDBY_URLS, else the "
                             "embedded standby when it runs): migrate waits for it, status and verify report it")

    parser = argparse.ArgumentParser(
        prog="pgvkit", parents=[common], epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Migrate, verify and operate a PostgreSQL + pgvector vector store.",
    )
    parser.add_argument("--version", action=_Version, help="show pgvkit's version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.name, parents=[common], help=command.help, description=command.help,
                           epilog=f"example:\n  {command.example}", formatter_class=argparse.RawDescriptionHelpFormatter)
        command.arguments(p)
        p.set_defaults(handler=command)
    return parser


def run(args) -> int:
    """Run the parsed command: resolve the database first when the command needs one."""
    command: Command = args.handler
    ctx = Context(args)
    if command.needs_migrations:  # before the embedded server is made or started for nothing
        from ..migrator.files import default_migrations_dir, missing_directory

        missing_directory(ctx.migrations_dir or default_migrations_dir())
    if command.needs_target:
        if not ctx.as_json:
            ctx.echo(f"database: {ctx.target.masked} ({ctx.target.source})")
        if command.session(args) and not ctx.target.is_embedded:
            from ..server.pooler import require_session

            require_session(ctx.target.url, ctx.target.masked, f"pgvkit {command.name}")
        if command.writing(args):
            from ..server.db import connect
            from ..server.sessions import require_writable

            with connect(ctx.target.url, autocommit=True) as conn:
                require_writable(conn, f"pgvkit {command.name}")
    try:
        return command.handler(args, ctx)
    except psycopg.Error as exc:  # a timeout that still fired: which one, set where, and how to change it
        where = timeouts.explain_fired(ctx.target.url, exc) if command.needs_target else None
        if where is None:
            raise
        message = " ".join((exc.diag.message_primary or str(exc)).split())
        raise timeouts.TimeoutFired(f"{message}: {where}") from None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not args.handler.passes_extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra  # pgvkit lab passes them to jupyter lab
    try:
        return run(args)
    except PgvkitError as exc:
        print(f"pgvkit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except psycopg.Error as exc:  # a server error pgvkit did not anticipate: one line, no traceback
        message = " ".join((exc.diag.message_primary or str(exc)).split())
        known = explain(message, exc.sqlstate)
        fix = f"{known[0].detail}: {known[0].fix}" if known.checks else "run pgvkit doctor for a diagnosis"
        print(f"pgvkit: error: {message} ({fix})", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pgvkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into head and the like
        sys.stderr.close()
        return 0
