"""The notebooks: JupyterLab on the kit's database, and headless runs with a report."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from ..display.extras import need
from ..errors import PgvkitError
from ..server.db import connect, resolve, server_info
from .base import Command, print_json


def lab(args, ctx) -> int:
    """JupyterLab whose kernels reach the same database as this command (PGVKIT_HOME, and
    DATABASE_URL when one was given, are exported to them). Applies nothing; Ctrl-C stops the
    lab, not the server."""
    from ..server.embedded import default_home, project_root

    need("jupyterlab", "pgvkit lab")
    echo = ctx.echo
    target = ctx.target  # starts the embedded server, or checks the URL below
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


def _run_arguments(p) -> None:
    p.add_argument("notebooks", nargs="*", metavar="NOTEBOOK", help="notebooks to run in order (default: all)")
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="set a notebook parameter (a Python literal, else text); repeatable")


def run(args, ctx) -> int:
    from ..notebooks.runs import default_notebooks, parse_parameters, run_notebooks

    echo = ctx.echo
    params = parse_parameters(args.parameter)
    notebooks = args.notebooks or default_notebooks()
    if not notebooks:
        raise PgvkitError("no notebooks given and none under ./notebooks; name one, e.g. notebooks/02_verify.ipynb")
    url = getattr(args, "database_url", None)
    result = run_notebooks(notebooks, params, database_url=resolve(url).url if url else None, echo=echo)
    if ctx.as_json:
        print_json(result.to_dict())
    else:
        echo(str(result))
        echo(f"report: {result.report}")
    if not result.ok:
        bad = next(r for r in result.results if r.status == "failed")
        print(f"pgvkit: error: {bad.notebook} failed at cell {bad.cell}: {bad.error} (see {result.report})",
              file=sys.stderr)
        return 2
    return 0


COMMANDS = [
    Command("lab", "start JupyterLab on notebooks/ against the kit's database (extra flags go to jupyter lab)",
            "pgvkit lab --no-browser --port 8899", lab, needs_target=False, passes_extra=True),
    Command("run", "execute notebooks headless (papermill); executed copies and an HTML report in .pgvkit/runs/",
            "pgvkit run notebooks/02_verify.ipynb   or   pgvkit run notebooks/04_index_tuning.ipynb -p rows 100000",
            run, _run_arguments, needs_target=False),
]
