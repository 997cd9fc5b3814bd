"""MkDocs hooks: the command-line reference written from pgvkit's own argparse parser (so it cannot
drift from `pgvkit --help`), and the notebooks' links to each other pointed at their pages."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

CLI_MARK = "<!-- pgvkit-cli -->"
BENCH_MARK = "<!-- bench-results -->"
RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results"


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """pgvkit's commands (one level: an action such as db start is a positional's choice)."""
    [sub] = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


def _help(action: argparse.Action) -> str:
    text = (action.help or "").replace("%(default)s", str(action.default)).replace("%%", "%")
    return text.replace("|", "\\|").replace("\n", " ")


def _options(parser: argparse.ArgumentParser, common: frozenset[str] = frozenset()) -> list[str]:
    """A table row per argument, leaving out those every command takes (`common`)."""
    rows = []
    for action in parser._actions:
        if (isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)) or action.help == argparse.SUPPRESS
                or action.dest in common):
            continue
        if action.option_strings:
            metavar = "" if action.nargs == 0 else f" {action.metavar or action.dest.upper()}"
            names = ", ".join(f"`{o}{metavar}`" for o in action.option_strings)
        else:
            names = f"`{action.metavar or action.dest}`"
        rows.append(f"| {names} | {_help(action)} |")
    return rows


def cli_reference() -> str:
    """Every pgvkit command with its description, usage, options and example, as markdown."""
    from pgvkit.cli import build_parser

    parser = build_parser()
    common = frozenset(a.dest for a in parser._actions if a.option_strings)
    out = [f"```text\n{parser.format_usage().strip()}\n```", "", "Options every command takes:", "",
           "| option | what it does |", "| --- | --- |", *_options(parser), ""]

    for name, sub in _commands(parser).items():
        out.extend([f"## pgvkit {name}", "", sub.description or "", "", f"```text\n{sub.format_usage().strip()}\n```", ""])
        rows = _options(sub, common)
        if rows:
            out.extend(["| argument | what it does |", "| --- | --- |", *rows, ""])
        if sub.epilog:
            out.extend([f"```text\n{sub.epilog.strip()}\n```", ""])
    return "\n".join(out)


def _flat(value, key: str = "") -> list[tuple[str, str]]:
    """A JSON value as (dotted key, text) rows."""
    if isinstance(value, dict):
        return [row for k, v in value.items() for row in _flat(v, f"{key}.{k}" if key else str(k))]
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        return [row for i, v in enumerate(value) for row in _flat(v, f"{key}[{i}]")]
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return [(key, text.replace("|", "\\|").replace("\n", " "))]


def bench_results() -> str:
    """Each bench/results/*.json (every script's latest run, as _common.report keeps it) as a table."""
    out = []
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        m = data.pop("machine", {})
        out += [f"### {path.stem}", "",
                f"`bench/results/{path.name}`: {m.get('date', '?')}, {m.get('cores', '?')} cores, "
                f"{m.get('memory_gb', '?')} GB, commit {m.get('commit') or '?'}", "",
                "| figure | value |", "| --- | --- |", *(f"| `{k}` | {v} |" for k, v in _flat(data)), ""]
    return "\n".join(out) or "No results kept yet: each script writes bench/results/NAME.json when it ends."


def on_page_markdown(markdown: str, page, config, files) -> str:
    if CLI_MARK in markdown:
        markdown = markdown.replace(CLI_MARK, cli_reference())
    if BENCH_MARK in markdown:
        markdown = markdown.replace(BENCH_MARK, bench_results())
    return markdown


def on_page_content(html: str, page, config, files) -> str:
    # a notebook's page is tutorials/NAME/: its links to NAME.ipynb go to the sibling's page
    if page.file.src_uri.startswith("tutorials/") and page.file.src_uri.endswith(".ipynb"):
        return re.sub(r'href="(\d\d_\w+)\.ipynb"', r'href="../\1/"', html)
    return html
