"""Changing the embedding model: pgvkit model add | list."""

from __future__ import annotations

from ..errors import PgvkitError
from .base import Command, print_json


def _model_arguments(p) -> None:
    p.add_argument("action", choices=["add", "list"],
                   help="add: write the migration that adds a column for a new model (search_assets serves both); "
                        "list: the table's embedding columns, their models and how many rows have one")
    p.add_argument("model", nargs="?", metavar="MODEL", help="with add: the new model's name, e.g. clip-vit-L/14@v2")
    p.add_argument("--dimensions", type=int, metavar="D", help="with add: the new model's dimension, e.g. 1024")
    p.add_argument("--type", dest="kind", default="vector", choices=["vector", "halfvec"],
                   help="with add: the column's type (halfvec: half the size, and HNSW indexes up to 4,000 "
                        "dimensions of it; default vector)")
    p.add_argument("--column", metavar="NAME", help="with add: the column's name (default embedding_<model>)")
    p.add_argument("--current", default="current", metavar="NAME",
                   help="with add: the name recorded for the model the embedding column holds now, when none is")


def model(args, ctx) -> int:
    if args.action == "list":
        return _list(ctx)
    if not args.model or not args.dimensions:
        raise PgvkitError("pgvkit model add takes the model's name and its dimension, e.g. "
                          "pgvkit model add clip-vit-L/14@v2 --dimensions 1024")
    from ..model_change import write_add

    up, down = write_add(ctx.target.url, args.model, args.dimensions, ctx.migrations_dir, kind=args.kind,
                         column=args.column, current=args.current)
    if ctx.as_json:
        print_json({"written": [str(up), str(down)]})
        return 0
    ctx.echo(f"written: {up}\nwritten: {down}")
    ctx.echo("next: pgvkit plan, then pgvkit migrate (search_assets then answers queries of both dimensions)")
    return 0


def _list(ctx) -> int:
    from ..db import connect
    from ..models import coverage

    with connect(ctx.target.url) as conn:
        table = coverage(conn)
    if ctx.as_json:
        print_json(table.to_dict())
    else:
        ctx.echo(str(table))
    return 0


COMMANDS = [
    Command("model", "change the embedding model online: a second column, searched beside the first",
            "pgvkit model add clip-vit-L/14@v2 --dimensions 1024", model, _model_arguments),
]
