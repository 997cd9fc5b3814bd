"""Headless notebook runs: papermill executes each notebook with its parameters injected, the
executed copies and one HTML report (nbconvert) go to .pgvkit/runs/<timestamp>/, and a failing
cell is named. This is how a team runs the verify or tuning notebook on a schedule.

The database URL reaches the kernels through DATABASE_URL, never as a parameter: parameters are
written into the executed notebooks, and a password must not be.
"""

from __future__ import annotations

import ast
import contextlib
import os
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..display import Echo, Table, echo_to
from ..display.extras import need
from ..errors import ConfigError
from ..server.db import has_password
from ..server.embedded import default_home

__all__ = ["Run", "NotebookResult", "run_notebooks", "parse_parameters", "default_notebooks"]


@dataclass
class NotebookResult:
    notebook: str
    status: str  # passed / failed / not run
    seconds: float = 0.0
    cell: int | None = None  # execution count of the failing cell
    error: str = ""
    output: str = ""


@dataclass(repr=False)
class Run(Table):
    directory: Path
    results: list[NotebookResult] = field(default_factory=list)
    report: Path | None = None
    columns = ("notebook", "status", "seconds", "cell", "error")
    colour_by = "status"

    @property
    def title(self) -> str:
        return f"Run in {self.directory}" + (f", report {self.report.name}" if self.report else "")

    @property
    def ok(self) -> bool:
        return all(r.status == "passed" for r in self.results)

    def rows(self) -> list[dict]:
        return [{"notebook": r.notebook, "status": r.status, "seconds": round(r.seconds, 1), "cell": r.cell,
                 "error": r.error} for r in self.results]

    def to_dict(self) -> dict:
        return {"directory": str(self.directory), "report": str(self.report) if self.report else None,
                "ok": self.ok, "notebooks": self.rows()}


def default_notebooks() -> list[Path]:
    return sorted(Path("notebooks").glob("[0-9][0-9]_*.ipynb"))


def parse_parameters(pairs: list[tuple[str, str]]) -> dict:
    """-p name value pairs; values read as Python literals (numbers, True, None, lists), else text."""
    params = {}
    for name, raw in pairs:
        if not name.isidentifier():
            raise ConfigError(f"parameter name {name!r} is not a Python identifier; use e.g. -p rows 100000")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        if isinstance(value, str) and has_password(value):
            raise ConfigError(f"parameter {name} holds a password, and parameters are stored in the executed "
                              "notebook; pass the URL with --database-url or DATABASE_URL instead")
        params[name] = value
    return params


def run_notebooks(notebooks: list[str | Path], parameters: dict | None = None, *, database_url: str | None = None,
                  home: Path | None = None, echo: Echo | None = None, progress: bool = False) -> Run:
    """Execute the notebooks in order (stopping at the first failure), then write the HTML report."""
    papermill = need("papermill", "pgvkit run")
    need("nbconvert", "pgvkit run's report")

    echo = echo or echo_to()
    paths = [Path(n) for n in notebooks]
    for p in paths:
        if not p.is_file():
            raise ConfigError(f"notebook {p} does not exist; name one under notebooks/, e.g. notebooks/02_verify.ipynb")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    directory = (home or default_home()) / "runs" / stamp
    directory.mkdir(parents=True, exist_ok=True)
    run = Run(directory)
    env_before = {name: os.environ.get(name) for name in ("DATABASE_URL", "TQDM_DISABLE", "PGVKIT_HOME")}
    if database_url:
        os.environ["DATABASE_URL"] = database_url  # the kernels inherit it; no notebook stores it
    # the shell's embedded server, wherever it runs from: a kernel's working directory is the
    # notebook's, whose own project would otherwise give it another server
    os.environ["PGVKIT_HOME"] = str(home or default_home())
    os.environ["TQDM_DISABLE"] = "1"  # a saved bar shows the state it was saved in, not the end
    try:
        for i, path in enumerate(paths):
            out = directory / path.name
            echo(f"running {path} ...")
            start = datetime.now(timezone.utc)
            try:
                with _stderr_to(directory / "kernels.log"):  # kernel start-up chatter is not the user's output
                    papermill.execute_notebook(str(path), str(out), parameters=parameters or {},
                                               cwd=str(path.resolve().parent), kernel_name="python3",
                                               progress_bar=progress, log_output=False)
                result = NotebookResult(path.name, "passed")
            except papermill.PapermillExecutionError as exc:
                result = NotebookResult(path.name, "failed", cell=exc.exec_count,
                                        error=f"{exc.ename}: {' '.join(str(exc.evalue).split())}")
            result.seconds = (datetime.now(timezone.utc) - start).total_seconds()
            result.output = str(out)
            run.results.append(result)
            echo(f"running {path} ... {result.status} ({result.seconds:.1f} s)")
            if result.status == "failed":
                run.results += [NotebookResult(p.name, "not run") for p in paths[i + 1:]]
                break
    finally:
        for name, value in env_before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    run.report = write_report(run)
    return run


@contextlib.contextmanager
def _stderr_to(path: Path):
    """Point file descriptor 2 at a log file (kernels are child processes and inherit it)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def write_report(run: Run) -> Path:
    """One HTML page: a summary, then every executed notebook with its outputs."""
    nbformat = need("nbformat", "pgvkit run's report")
    HTMLExporter = need("nbconvert", "pgvkit run's report").HTMLExporter

    combined = nbformat.v4.new_notebook()
    lines = ["# pgvkit run report", "", "| notebook | status | seconds | failing cell | error |", "|---|---|---|---|---|"]
    lines += [f"| {r.notebook} | **{r.status}** | {r.seconds:.1f} | {r.cell or ''} | {r.error.replace('|', '/')} |"
              for r in run.results]
    combined.cells.append(nbformat.v4.new_markdown_cell("\n".join(lines)))
    for r in run.results:
        if not r.output or not Path(r.output).is_file():
            continue
        nb = nbformat.read(r.output, as_version=4)
        combined.cells.append(nbformat.v4.new_markdown_cell(f"---\n# {r.notebook}: {r.status}"))
        combined.cells += nb.cells
        combined.metadata.setdefault("kernelspec", nb.metadata.get("kernelspec", {}))
        combined.metadata.setdefault("language_info", nb.metadata.get("language_info", {}))
    body, _ = HTMLExporter().from_notebook_node(combined)
    path = run.directory / "report.html"
    path.write_text(body, encoding="utf-8")
    return path
