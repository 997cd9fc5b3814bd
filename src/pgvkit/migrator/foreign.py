"""What a migration file may hold that the server would run wrongly or not at all, found before
anything runs: another tool's up/down markers (pgvkit would run the whole file, the down section
right after the up one), psql's meta-commands and psql's `COPY ... FROM stdin` data blocks.

Read with PostgreSQL's own scanner (pglast), so a marker-like line inside a dollar-quoted
function body or a string is not mistaken for one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pglast import parser

__all__ = ["Marker", "MARKERS", "find_markers", "comment_text", "marker_refusal", "foreign_syntax"]


@dataclass(frozen=True)
class Marker:
    tool: str  # whose marker: goose, dbmate, sql-migrate, tern, Liquibase, shmig
    pattern: re.Pattern  # matched against a comment's text, its leading dashes and spaces removed
    importable: bool = False  # pgvkit import --from <tool> translates it


MARKERS = [
    Marker("goose", re.compile(r"^\+goose\s+(up|down|statementbegin|statementend|no\s+transaction|envsub)\b", re.I),
           True),
    Marker("sql-migrate", re.compile(r"^\+migrate\s+(up|down|statementbegin|statementend)\b", re.I)),
    Marker("dbmate", re.compile(r"^migrate:(up|down)\b", re.I), True),
    Marker("tern", re.compile(r"^create above\s*/\s*drop below\b", re.I)),
    Marker("Liquibase", re.compile(r"^(liquibase formatted sql\b|changeset\s+[^\s:]+:\S+)", re.I)),
    Marker("shmig", re.compile(r"^=+\s*(up|down)\s*=+$", re.I)),
]


def comment_text(token_text: str) -> str:
    """`-- +goose Up` -> `+goose Up`; `---- create above / drop below ----` -> `create above / drop below`."""
    return re.sub(r"^-+\s*", "", token_text.strip()).rstrip("- ").strip() or ""


@dataclass(frozen=True)
class _Token:
    start: int
    end: int
    name: str


def _tokens(text: str) -> list:
    """PostgreSQL's tokens. Text the scanner rejects (psql's `\\i 002_more.sql` is one: a number
    run into a name) is not SQL anyway; it is read a line at a time instead, each line's comment
    and leading backslash as tokens, so the refusal can still say what the line is."""
    try:
        return list(parser.scan(text))
    except Exception:
        found, offset = [], 0
        for line in text.split("\n"):
            stripped = line.lstrip()
            start = offset + len(line) - len(stripped)
            if stripped.startswith("--"):
                found.append(_Token(start, offset + len(line) - 1, "SQL_COMMENT"))
            elif stripped.startswith("\\"):
                found.append(_Token(start, start, "ASCII_92"))
            offset += len(line) + 1
        return found


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def find_markers(text: str) -> list[tuple[int, Marker, str]]:
    """Every other tool's marker in the file's comments: (line, marker, the comment as written)."""
    found = []
    for tok in _tokens(text):
        if tok.name != "SQL_COMMENT":
            continue
        raw = text[tok.start:tok.end + 1]
        body = comment_text(raw)
        for marker in MARKERS:
            if marker.pattern.match(body):
                found.append((_line(text, tok.start), marker, raw.strip()))
                break
    return found


def marker_refusal(text: str) -> tuple[int, str] | None:
    """The first other tool's marker, as (line, whose it is and the fix); None when there is none."""
    markers = find_markers(text)
    if not markers:
        return None
    line, marker, raw = markers[0]
    how = (f"bring {marker.tool} files in with: pgvkit import --from {marker.tool} DIR" if marker.importable else
           "split it: the up section into NNN_name.sql, the down section into NNN_name.down.sql")
    return line, (f"holds {marker.tool}'s marker `{raw}`: pgvkit runs a whole file, so its down section would run "
                  f"right after its up section; {how}")


def foreign_syntax(text: str) -> tuple[int, str] | None:
    """The first thing in the file that is not SQL the server runs as pgvkit runs it, as (line,
    what it is and the fix); None when there is none."""
    marker = marker_refusal(text)
    if marker:
        return marker
    tokens = _tokens(text)
    for i, tok in enumerate(tokens):
        if tok.name == "ASCII_92" and text[text.rfind("\n", 0, tok.start) + 1:tok.start].strip() == "":
            command = re.match(r"\\[A-Za-z!?]*", text[tok.start:tok.start + 20]).group(0)
            return _line(text, tok.start), (f"holds the psql meta-command {command}, which only psql understands (the "
                                            "server runs SQL); write its effect as SQL: inline an included file, "
                                            "drop \\set / \\connect (pgvkit runs each file on the database it is "
                                            "pointed at)")
        if tok.name == "COPY":
            end = next((j for j in range(i + 1, len(tokens)) if tokens[j].name == "ASCII_59"), len(tokens))
            names = [t.name for t in tokens[i + 1:end]]
            if "FROM" in names and "STDIN" in names[names.index("FROM"):]:
                return _line(text, tok.start), ("holds COPY ... FROM stdin, whose data block only psql can send; load "
                                                "data with pgvkit load --from FILE, or write the rows as INSERT "
                                                "statements")
    return None
