"""Checks: verify the schema and the store's health, and diagnose what is wrong."""

from __future__ import annotations

from ..errors import PgvkitError
from ..server.db import connect, mask_url
from .base import Command, print_json


def verify(args, ctx) -> int:
    from ..health.verify import verify

    report = verify(ctx.target.url, migrations_dir=ctx.migrations_dir)
    if ctx.standbys:
        from ..migrator.standby import check_standbys

        checks, data = check_standbys(ctx.target.url, ctx.standbys)
        report.checks += checks
        report.context["standbys"] = data
    ctx.report(report)
    return report.exit_code


def _doctor_arguments(p) -> None:
    p.add_argument("--error", metavar="MESSAGE", help="explain an error message instead of examining the database")


def doctor(args, ctx) -> int:
    from ..health.doctor import doctor
    from ..server.explain import explain

    if args.error:
        report = explain(args.error)
        if not report.checks:
            ctx.echo("pgvkit does not know this message; run pgvkit doctor to examine the database itself")
            return 1
    else:
        report = doctor(getattr(args, "database_url", None), migrations_dir=ctx.migrations_dir)
    ctx.report(report)
    return report.exit_code


def _recall_arguments(p) -> None:
    p.add_argument("--k", type=int, default=10, help="neighbours per search (default 10)")
    p.add_argument("--target", type=float, default=0.95, metavar="R", help="recall@k each shape must reach (default 0.95)")
    p.add_argument("--sample", type=int, metavar="N",
                   help="rows measured as similar-assets queries, each left out of its own answer (default 1000, or "
                        "every row of a smaller table)")
    p.add_argument("--query-file", metavar="FILE",
                   help="new-vector queries, not in the table (.npy, .json or one [...] per line): e.g. a sample "
                        "of the application's logged query embeddings")
    p.add_argument("--seed", type=int, default=0, help="which rows the sample takes (default 0)")
    p.add_argument("--model", metavar="NAME",
                   help="during a model change: audit the second model's column (its name or the column's; "
                        "pgvkit model list), with --query-file of its dimension")


def model_column(url: str, name: str | None) -> str:
    if not name:
        return "embedding"
    from ..schema.models import models

    with connect(url) as conn:
        found = [m.column for m in models(conn) if name in (m.model, m.column)]
    if not found:
        raise PgvkitError(f"no model {name!r} recorded for ip_asset_embeddings: pgvkit model list shows them")
    return found[0]


def recall(args, ctx) -> int:
    from ..audit.recall import audit
    from .inserts import vector_file

    url = ctx.target.url
    column = model_column(url, getattr(args, "model", None))
    queries = vector_file(args.query_file, url, column) if args.query_file else None
    options = {"k": args.k, "sample": args.sample, "queries": queries, "target": args.target, "seed": args.seed,
               "progress": not ctx.as_json, "echo": ctx.echo, "column": column}
    result = audit(url, **options)
    # where the application's searches run: each standby too, the same queries and sample
    standbys = [(mask_url(s), audit(s, record=False, **options)) for s in ctx.standbys]
    if ctx.as_json:
        print_json({**result.to_dict(), "standbys": [{"url": u, **a.to_dict()} for u, a in standbys]})
    else:
        ctx.report(result)
        for where, measured in standbys:
            ctx.echo(f"\non standby {where}:")
            ctx.report(measured)
        if not result.recorded:
            ctx.echo("not recorded: pgvkit.recall_audits is missing or not writable here (a standby is read-only: "
                     "audit the primary to record; pgvkit migrate creates the table)")
        if not all(r.met for r in [result] + [a for _, a in standbys]):
            ctx.echo("fix: pgvkit tune --target-recall "
                     f"{args.target} --write-migration, then pgvkit migrate and pgvkit recall again")
    return max([result.exit_code] + [a.exit_code for _, a in standbys])


COMMANDS = [
    Command("verify", "check the schema, indexes, grants and vector-store health (exit 2 on any fail)",
            "pgvkit verify --json", verify),
    Command("doctor", "diagnose why migrations, connections, extension or index builds fail, with fixes",
            "pgvkit doctor   or   pgvkit doctor --error 'type \"vector\" does not exist'", doctor, _doctor_arguments,
            needs_target=False),
    Command("recall", "audit the live index: recall@k for similar assets and new vectors with the application's "
                      "settings (exit 2 below --target)",
            "pgvkit recall --query-file logged_queries.npy --json", recall, _recall_arguments),
]
