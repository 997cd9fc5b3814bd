"""Changing the embedding model: pgvkit model add | backfill | list."""

from __future__ import annotations

from ..errors import PgvkitError
from .base import Command, print_json


def _model_arguments(p) -> None:
    p.add_argument("action", choices=["add", "backfill", "index", "switch", "retire", "list"],
                   help="add: write the migration that adds a column for a new model (search_assets serves both); "
                        "backfill: fill its column from a file keyed by asset_id or id, resumable; "
                        "index: write the migration that builds its HNSW index concurrently at pgvector's defaults "
                        "(pgvkit tune --model writes it with settings measured on its rows); "
                        "switch: write the migration that makes it the table's embedding (the old one kept beside); "
                        "retire: write the migration that drops a switched-away model's column (after the window); "
                        "list: the table's embedding columns, their models and how many rows have one")
    p.add_argument("model", nargs="?", metavar="MODEL", help="with add: the new model's name, e.g. clip-vit-L/14@v2")
    p.add_argument("--dimensions", type=int, metavar="D", help="with add: the new model's dimension, e.g. 1024")
    p.add_argument("--type", dest="kind", default="vector", choices=["vector", "halfvec"],
                   help="with add: the column's type (halfvec: half the size, and HNSW indexes up to 4,000 "
                        "dimensions of it; default vector)")
    p.add_argument("--column", metavar="NAME", help="with add: the column's name (default embedding_<model>)")
    p.add_argument("--current", default="current", metavar="NAME",
                   help="with add: the name recorded for the model the embedding column holds now, when none is")
    p.add_argument("--from", dest="source", metavar="FILE",
                   help="with backfill: .jsonl ({\"asset_id\": ..., \"embedding\": [...]} a line), .npz (asset_ids "
                        "or ids, embeddings), or .csv/.tsv with asset_id (or id) and embedding columns")
    p.add_argument("--duty", type=float, default=0.5, metavar="SHARE",
                   help="with backfill: the share of time it works, pausing between batches for the application "
                        "(default 0.5; 1: no pause)")
    p.add_argument("--batch-seconds", type=float, default=0.25, metavar="S",
                   help="with backfill: how long a batch should take (its rows' locks are held that long; default 0.25)")
    p.add_argument("--restart", action="store_true",
                   help="with backfill: start over from this file although a backfill from another stopped part-way")
    p.add_argument("--no-vacuum", action="store_true", help="with backfill: skip the VACUUM (ANALYZE) at the end")
    p.add_argument("--confirm-model", metavar="NAME", help="with retire: the retired model's name, typed back")
    p.add_argument("--window-days", type=float, default=7.0, metavar="DAYS",
                   help="with retire: how long after the switch it may be dropped (default 7; 0: now)")


def model(args, ctx) -> int:
    if args.action == "list":
        return _list(ctx)
    if args.action == "backfill":
        return _backfill(args, ctx)
    if args.action in ("index", "switch", "retire"):
        return _write(args, ctx)
    if not args.model or not args.dimensions:
        raise PgvkitError("pgvkit model add takes the model's name and its dimension, e.g. "
                          "pgvkit model add clip-vit-L/14@v2 --dimensions 1024")
    from ..models.change import write_add

    up, down = write_add(ctx.target.url, args.model, args.dimensions, ctx.migrations_dir, kind=args.kind,
                         column=args.column, current=args.current)
    if ctx.as_json:
        print_json({"written": [str(up), str(down)]})
        return 0
    ctx.echo(f"written: {up}\nwritten: {down}")
    ctx.echo("next: pgvkit plan, then pgvkit migrate (search_assets then answers queries of both dimensions)")
    return 0


def _write(args, ctx) -> int:
    from ..models.change import write_index, write_retire
    from ..models.switch import write_switch

    if not args.model:
        raise PgvkitError(f"pgvkit model {args.action} takes the model (or its column), e.g. "
                          f"pgvkit model {args.action} clip-vit-L/14@v2")
    if args.action == "retire":
        up, down = write_retire(ctx.target.url, args.model, ctx.migrations_dir, confirm=args.confirm_model,
                                window_days=args.window_days)
    else:
        write = write_index if args.action == "index" else write_switch
        up, down = write(ctx.target.url, args.model, ctx.migrations_dir)
    if ctx.as_json:
        print_json({"written": [str(up), str(down)]})
        return 0
    ctx.echo(f"written: {up}\nwritten: {down}\nnext: pgvkit plan, then pgvkit migrate")
    return 0


def _backfill(args, ctx) -> int:
    from ..models.backfill import backfill

    if not args.model or not args.source:
        raise PgvkitError("pgvkit model backfill takes the model (or its column) and --from FILE, e.g. "
                          "pgvkit model backfill clip-vit-L/14@v2 --from clip.jsonl")
    done = backfill(ctx.target.url, args.model, args.source, batch_seconds=args.batch_seconds, duty=args.duty,
                    vacuum=not args.no_vacuum, restart=args.restart, progress=not ctx.as_json, echo=ctx.echo)
    if ctx.as_json:
        print_json({k: v for k, v in vars(done).items()})
    else:
        ctx.echo(str(done))
    return 0


def _list(ctx) -> int:
    from ..schema.models import coverage
    from ..server.db import connect

    with connect(ctx.target.url) as conn:
        table = coverage(conn)
    if ctx.as_json:
        print_json(table.to_dict())
    else:
        ctx.echo(str(table))
    return 0


COMMANDS = [
    Command("model", "change the embedding model online: a second column, searched beside the first",
            "pgvkit model add clip-vit-L/14@v2 --dimensions 1024", model, _model_arguments,
            needs_session=lambda args: args.action == "backfill", writes=lambda args: args.action == "backfill"),
]
