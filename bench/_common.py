"""What every benchmark shares: a throwaway embedded server with the seed schema, timing, JSON."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg

from pgvkit import Migrator
from pgvkit.embedded import EmbeddedServer

ROOT = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def seed_database() -> Iterator[str]:
    """A fresh embedded server (or $DATABASE_URL) with migrations/ applied; the URL."""
    if os.environ.get("DATABASE_URL"):
        url = os.environ["DATABASE_URL"]
        Migrator(url, ROOT / "migrations", echo=lambda _: None).migrate()
        yield url
        return
    home = Path(tempfile.mkdtemp(prefix="pgvkit-bench-"))
    os.chmod(home, 0o755)  # the server user reads COPY files from here
    server = EmbeddedServer(home / "server").start()
    try:
        url = server.url()
        Migrator(url, ROOT / "migrations", echo=lambda _: None).migrate()
        yield url
    finally:
        server.destroy()
        shutil.rmtree(home, ignore_errors=True)


def timed(fn: Callable[[], object], repeat: int = 1, before: Callable[[], object] | None = None) -> float:
    """Median wall time of fn over `repeat` runs (`before` runs untimed ahead of each)."""
    times = []
    for _ in range(repeat):
        if before:
            before()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def execute(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for s in statements:
            conn.execute(s)


def report(data: dict) -> None:
    print(json.dumps(data, indent=2))
