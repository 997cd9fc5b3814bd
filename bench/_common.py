"""What every benchmark shares: a throwaway embedded server with the seed schema, timing, JSON."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg

from pgvkit import Migrator
from pgvkit.server.embedded import EmbeddedServer

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


RESULTS = ROOT / "bench" / "results"  # each script's latest JSON: the site's Benchmarks page renders them


def machine() -> dict:
    """Where and when a figure was measured: the date, the cores and memory, the commit."""
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    return {"date": time.strftime("%Y-%m-%d"), "cores": os.cpu_count(), "memory_gb": round(memory / 2**30),
            "commit": commit or None}


def report(data: dict, name: str | None = None) -> None:
    """Print the JSON, and keep it (with the machine) as bench/results/NAME.json (default: the script's name)."""
    print(json.dumps(data, indent=2))
    RESULTS.mkdir(exist_ok=True)
    stem = name or Path(sys.argv[0]).stem
    (RESULTS / f"{stem}.json").write_text(json.dumps({"machine": machine(), **data}, indent=2) + "\n")
