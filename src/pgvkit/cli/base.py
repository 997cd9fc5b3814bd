"""What every command shares: its row in the table, and the context its handler runs in."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

from ..display import echo_to
from ..errors import ConfirmationRequired
from ..server.db import Target, require_database_name, resolve

__all__ = ["Command", "Context", "print_json", "guard", "no_arguments", "confirm_database_argument"]


def no_arguments(parser) -> None:
    """For a command that takes only the common options."""


@dataclass(frozen=True)
class Command:
    """One row of the CLI's table: name, help, example, its arguments and its handler."""

    name: str
    help: str
    example: str
    handler: Callable  # (args, Context) -> exit code
    arguments: Callable = no_arguments  # (argparse parser) -> None
    needs_target: bool = True  # resolve the database (and say which) before the handler runs
    passes_extra: bool = False  # unknown flags go to the handler (pgvkit lab -> jupyter lab)
    # needs a session of its own (advisory locks, session settings): $PGVKIT_DIRECT_URL before
    # $DATABASE_URL, and refused through a transaction pooler; a function of the arguments or a flag
    needs_session: Callable | bool = False
    # writes to the database: refused on a hot standby or a read-only session, in one line, first
    writes: Callable | bool = False
    # reads the migrations directory: checked before a server is started for it
    needs_migrations: bool = False

    def session(self, args) -> bool:
        return self.needs_session(args) if callable(self.needs_session) else self.needs_session

    def writing(self, args) -> bool:
        return self.writes(args) if callable(self.writes) else self.writes


class Context:
    """The handler's surroundings: output (progress to stderr when stdout carries JSON) and the
    database, resolved once (flag, then DATABASE_URL, then the embedded server)."""

    def __init__(self, args):
        self.args = args
        self.as_json = getattr(args, "json", False)
        self.echo = echo_to(sys.stderr if self.as_json else sys.stdout)

    @cached_property
    def target(self) -> Target:
        handler = getattr(self.args, "handler", None)
        return resolve(getattr(self.args, "database_url", None), session=bool(handler and handler.session(self.args)))

    @cached_property
    def standbys(self) -> list[str]:
        """--standby URLs, else $PGVKIT_STANDBY_URLS, else the embedded standby when it runs."""
        from ..migrator.standby import standby_urls

        return standby_urls(self.target.url, getattr(self.args, "standby", None))

    @property
    def migrations_dir(self):
        return getattr(self.args, "migrations", None)

    def report(self, report) -> None:
        """A report as JSON, or as text."""
        print_json(report.to_dict()) if self.as_json else self.echo(str(report))


def print_json(data) -> None:
    print(json.dumps(data, indent=2, default=str))


def confirm_database_argument(parser, why: str = "") -> None:
    parser.add_argument("--confirm-database", metavar="NAME",
                        help="the target database's name, typed back (needed for any database but the embedded one"
                             + (f": {why})" if why else ")"))


def guard(args, target: Target, what: str) -> None:
    """Destructive commands: --yes always; on any database but the embedded default, also its
    name typed back with --confirm-database, so a DATABASE_URL pointing at production cannot be
    wiped by a command meant for a test database."""
    if not args.yes:
        raise ConfirmationRequired(f"{what} on {target.masked}; add --yes to go ahead")
    require_database_name(target, args.confirm_database, what, "--confirm-database {name}")
