"""How results show: one text table and one HTML table renderer, and progress lines for long
steps ("... done" / "FAILED"), so notebooks, terminals and tests see the same thing."""

from __future__ import annotations

import contextlib
import html
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

__all__ = ["Echo", "echo_to", "text_table", "html_table", "step", "progress_bar", "Table", "Checklist"]

Echo = Callable[[str], None]


def echo_to(stream=None) -> Echo:
    """An echo function writing lines to a stream (stdout by default), flushed at once."""

    def echo(line: str) -> None:
        out = stream or sys.stdout
        out.write(line + "\n")
        out.flush()

    return echo


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):  # for people: 1,190 qps, not 1.19e+03; recall 0.988
        return "" if value != value else f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"  # NaN: nothing
    if isinstance(value, datetime):  # to the second: 2026-12-07 03:58:48+00:00
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, (list, tuple)):
        return ", ".join(map(_cell, value))
    return str(value)


def progress_bar(*, total: int, desc: str, unit: str, enabled: bool = True, leave: bool = True):
    """A tqdm bar (a widget in a notebook), off when `enabled` is False or TQDM_DISABLE=1 is set:
    pgvkit run, notebooks/regenerate.py and pytest set it for kernels, so no saved notebook holds
    a bar frozen at the state it was saved in."""
    from tqdm.auto import tqdm

    off = not enabled or os.environ.get("TQDM_DISABLE", "").lower() in ("1", "true", "yes")
    return tqdm(total=total, desc=desc, unit=unit, disable=off, leave=leave)


def text_table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """A plain aligned table."""
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


_COLOURS = {"pass": "#d4edda", "applied": "#d4edda", "baselined": "#d4edda", "warn": "#fff3cd",
            "pending": "#fff3cd", "fail": "#f8d7da", "drifted": "#f8d7da", "missing": "#f8d7da",
            "failed": "#f8d7da", "running": "#f8d7da",
            "rolling back": "#f8d7da", "rollback failed": "#f8d7da"}


def html_table(rows: Sequence[dict], columns: Sequence[str], *, colour_by: str | None = None) -> str:
    """An HTML table; rows coloured by the value of one column (pass/warn/fail and the like)."""
    head = "".join(f"<th style='text-align:left'>{html.escape(c)}</th>" for c in columns)
    body = []
    for r in rows:
        colour = _COLOURS.get(str(r.get(colour_by))) if colour_by else None
        style = f" style='background:{colour}'" if colour else ""
        tds = "".join(f"<td style='text-align:left'>{html.escape(_cell(r.get(c)))}</td>" for c in columns)
        body.append(f"<tr{style}>{tds}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class Table:
    """Rows that render themselves as text (repr/str) and HTML (notebooks)."""

    columns: Sequence[str] = ()
    colour_by: str | None = None
    title: str = ""
    notes: Sequence[str] = ()  # warnings shown under the table

    def rows(self) -> list[dict]:  # pragma: no cover - overridden
        return []

    def __str__(self) -> str:
        table = text_table(self.rows(), self.columns)
        notes = "".join(f"\nwarning: {n}" for n in self.notes)
        return (f"{self.title}\n{table}" if self.title else table) + notes

    def _repr_html_(self) -> str:
        title = f"<p><b>{html.escape(self.title)}</b></p>" if self.title else ""
        notes = "".join(f"<p style='background:{_COLOURS['warn']}'>warning: {html.escape(n)}</p>" for n in self.notes)
        return title + html_table(self.rows(), self.columns, colour_by=self.colour_by) + notes

    def __repr__(self) -> str:
        return str(self)

    def to_frame(self):
        """The rows as a pandas DataFrame (for filtering, sorting, plotting, exporting)."""
        import pandas as pd

        return pd.DataFrame(self.rows(), columns=list(self.columns))

    def styled(self):
        """The DataFrame with rows coloured by status (pass / warn / fail and the like)."""
        frame = self.to_frame()
        key = self.colour_by

        def colour(row):
            c = _COLOURS.get(str(row.get(key))) if key else None
            return [f"background-color: {c}" if c else ""] * len(row)

        return frame.style.apply(colour, axis=1).set_caption(self.title).hide(axis="index")


class Checklist(Table):
    """A Table of items that each have a status: any "fail" makes it not ok (exit code 2)."""

    def items(self) -> list:  # pragma: no cover - overridden
        return []

    @property
    def ok(self) -> bool:
        return not any(i.status == "fail" for i in self.items())

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 2


@contextlib.contextmanager
def step(message: str, echo: Echo | None = None) -> Iterator[None]:
    """Say what a long step does, then "done (N ms)" or "FAILED"."""
    echo = echo or echo_to()
    start = time.perf_counter()
    echo(f"{message} ...")
    try:
        yield
    except BaseException:
        echo(f"{message} ... FAILED")
        raise
    echo(f"{message} ... done ({(time.perf_counter() - start) * 1000:.0f} ms)")
