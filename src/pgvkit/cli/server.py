"""The database itself: the embedded server, backups and restores."""

from __future__ import annotations

from ..errors import PgvkitError
from ..server import backups
from ..server.db import connect, server_info
from ..server.embedded import EmbeddedServer
from .base import Command, confirm_database_argument, guard, print_json


def _db_arguments(p) -> None:
    p.add_argument("action", choices=["start", "stop", "status", "url", "standby"],
                   help="the embedded server; standby: its hot standby (pgvkit db standby start|stop|status|url)")
    p.add_argument("standby_action", nargs="?", choices=["start", "stop", "status", "url"], metavar="ACTION",
                   help="with standby: start (pg_basebackup -R from the running primary on first use), stop, "
                        "status, url")


def db(args, ctx) -> int:
    server = EmbeddedServer.default()
    out = ctx.echo
    if args.action == "standby":
        return _standby(args, ctx, server)
    if args.standby_action:
        raise PgvkitError(f"pgvkit db {args.action} takes no second word; did you mean pgvkit db standby {args.action}?")
    if args.action == "start":
        server.start()
        with connect(server.url()) as conn:
            info = server_info(conn)
        data = {**server.status(), "server_version": info["server_version"],
                "vector_available": info["vector_available"]}
        if ctx.as_json:
            print_json(data)
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
        if ctx.as_json:
            print_json(data)
        else:
            state = f"running, pid {data['pid']}" if data["running"] else (
                "stopped" if data["initialised"] else "not initialised (pgvkit db start creates it)")
            out(f"embedded server: {state}")
            out(f"  data: {data['pgdata']}")
            if data["running"]:
                out(f"  url:  {data['url']}")
            out(f"  sized for this machine ({data['machine']}), in pgvkit.conf with the reason for each:")
            for name, value in data["settings"].items():
                out(f"    {name} = {value}")
        return 0 if data["running"] else 3
    elif args.action == "url":
        if not server.running():
            raise PgvkitError("the embedded server is not running; start it with: pgvkit db start")
        print(server.url())
    return 0


def _standby(args, ctx, primary: EmbeddedServer) -> int:
    """pgvkit db standby start|stop|status|url: the embedded primary's hot standby."""
    from ..migrator.standby import EmbeddedStandby

    standby, action, out = EmbeddedStandby(primary), args.standby_action or "status", ctx.echo
    if action == "start":
        standby.start()
        out(f"embedded standby of {primary.pgdata} running (hot standby, streaming), pid {standby.pid()}")
        out(f"  url:  {standby.url()}")
        out(f"  data: {standby.pgdata}")
    elif action == "stop":
        out("embedded standby stopped" if standby.stop() else "embedded standby was not running")
    elif action == "url":
        if not standby.running():
            raise PgvkitError("the embedded standby is not running; start it with: pgvkit db standby start")
        print(standby.url())
    else:
        data = standby.status()
        if ctx.as_json:
            print_json(data)
        else:
            out("embedded standby: " + (f"running, pid {data['pid']}" if data["running"] else
                                         "stopped" if data["initialised"] else
                                         "not created (pgvkit db standby start makes one from the running primary)"))
            if data["running"]:
                out(f"  url:  {data['url']}")
        return 0 if data["running"] else 3
    return 0


def _backup_arguments(p) -> None:
    p.add_argument("--dir", metavar="DIR", help="where to write it (default .pgvkit/backups)")


def backup(args, ctx) -> int:
    path = backups.backup(ctx.target.url, args.dir)
    print_json({"backup": str(path)}) if ctx.as_json else ctx.echo(f"backup written: {path}")
    return 0


def _restore_arguments(p) -> None:
    p.add_argument("file")
    p.add_argument("--yes", action="store_true", help="confirm: objects in the dump are replaced")
    confirm_database_argument(p)


def restore(args, ctx) -> int:
    guard(args, ctx.target, f"restore replaces every object in {args.file}")
    backups.restore(ctx.target.url, args.file, yes=True)
    ctx.echo(f"restored {args.file}")
    return 0


COMMANDS = [
    Command("db", "manage the embedded PostgreSQL server", "pgvkit db start", db, _db_arguments, needs_target=False),
    Command("backup", "write a pg_dump custom-format backup to .pgvkit/backups/", "pgvkit backup", backup,
            _backup_arguments),
    Command("restore", "restore a backup file over the database", "pgvkit restore .pgvkit/backups/jarvis-....dump --yes",
            restore, _restore_arguments, writes=True),
]
