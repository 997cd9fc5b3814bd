"""An index build's progress, read from pg_stat_progress_create_index by a second session while
the build runs: a progress bar (phase, share done, ETA) and, for logs, a line at each phase."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg

from ..display import Echo, progress_bar
from .db import connect

__all__ = ["watch"]

POLL_S = 1.0


def _eta(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def watch(url: str, pid: int, label: str, *, progress: bool = True, echo: Echo | None = None) -> Callable[[], None]:
    """Follow the build running in backend `pid` until the returned stop() is called: a bar when
    `progress`, and through `echo` one line per phase with its share done and an ETA from the
    rate so far. stop() joins the watcher."""
    done = threading.Event()

    def follow():
        bar = None  # made at the first poll that finds the build still running: a build done within
        phase_seen, phase_start = None, time.monotonic()  # a second leaves no bar behind
        try:
            with connect(url, autocommit=True, application_name="pgvkit progress") as conn:
                while not done.wait(POLL_S):
                    row = conn.execute(
                        "SELECT phase, blocks_done, blocks_total, tuples_done, tuples_total"
                        " FROM pg_stat_progress_create_index WHERE pid = %s", [pid]).fetchone()
                    if not row:
                        continue
                    phase, bd, bt, td, tt = row
                    if bar is None:
                        bar = progress_bar(total=100, desc=f"build {label}", unit="%", enabled=progress, leave=False)
                    share = td / tt if tt else (bd / bt if bt else 0.0)
                    if phase != phase_seen:
                        phase_seen, phase_start = phase, time.monotonic()
                        if echo:
                            echo(f"  building {label}: {phase}" + (f" ({tt:,} tuples)" if tt else ""))
                    elapsed = time.monotonic() - phase_start
                    eta = elapsed * (1 - share) / share if share > 0.01 else None
                    bar.n = int(100 * share)
                    bar.set_postfix_str(phase + (f", {_eta(eta)} left in this phase" if eta else ""), refresh=True)
        except psycopg.Error:
            pass
        finally:
            if bar is not None:
                bar.close()

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()

    def stop():
        done.set()
        thread.join()

    return stop
