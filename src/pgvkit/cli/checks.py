"""Checks: verify the schema and the store's health, and diagnose what is wrong."""

from __future__ import annotations

from .base import Command


def verify(args, ctx) -> int:
    from ..verify import verify

    report = verify(ctx.target.url, migrations_dir=ctx.migrations_dir)
    ctx.report(report)
    return report.exit_code


def _doctor_arguments(p) -> None:
    p.add_argument("--error", metavar="MESSAGE", help="explain an error message instead of examining the database")


def doctor(args, ctx) -> int:
    from ..doctor import doctor
    from ..explain import explain

    if args.error:
        report = explain(args.error)
        if not report.checks:
            ctx.echo("pgvkit does not know this message; run pgvkit doctor to examine the database itself")
            return 1
    else:
        report = doctor(getattr(args, "database_url", None), migrations_dir=ctx.migrations_dir)
    ctx.report(report)
    return report.exit_code


COMMANDS = [
    Command("verify", "check the schema, indexes, grants and vector-store health (exit 2 on any fail)",
            "pgvkit verify --json", verify),
    Command("doctor", "diagnose why migrations, connections, extension or index builds fail, with fixes",
            "pgvkit doctor   or   pgvkit doctor --error 'type \"vector\" does not exist'", doctor, _doctor_arguments,
            needs_target=False),
]
