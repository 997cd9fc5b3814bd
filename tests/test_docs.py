"""The documentation site (mkdocs.yml, docs/): it builds with warnings as errors, its command-line
reference holds every command and option `pgvkit --help` shows, every notebook is a tutorial page
(the notebook itself, not a copy), and a real browser renders the home page, a notebook with its
figure and the CLI reference. The README stays a front door."""

from __future__ import annotations

import functools
import html
import os
import re
import shutil
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from .conftest import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
README_LINES = 150


def build(config_dir: Path, site: Path) -> subprocess.CompletedProcess:
    """`mkdocs build --strict` of the project at `config_dir` into `site`."""
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config_dir / "mkdocs.yml"),
                           "-d", str(site)], capture_output=True, text=True, cwd=config_dir,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = build(ROOT, out)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def copy_of_the_project(tmp_path: Path) -> Path:
    """What the build reads: mkdocs.yml, README.md (the home page's snippet), docs/ (its links to the
    notebooks kept), notebooks/, src/ and bench/results/."""
    for name in ("docs", "notebooks", "src", "bench/results"):
        shutil.copytree(ROOT / name, tmp_path / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("mkdocs.yml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    return tmp_path


def test_the_site_builds_with_warnings_as_errors(site):
    assert (site / "index.html").exists()
    assert (site / "tutorials" / "04_index_tuning" / "index.html").exists()


def test_a_copy_of_the_project_builds_as_it_is(tmp_path):  # what the faults below are planted in
    done = build(copy_of_the_project(tmp_path), tmp_path / "site")
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.parametrize("fault, said", [("a broken link", "gone.md"), ("a page left out of the navigation", "orphan.md"),
                                         ("an API name that does not exist", "no_such_function")])
def test_the_build_fails_on(fault, said, tmp_path):
    project = copy_of_the_project(tmp_path)
    if fault == "a broken link":
        page = project / "docs" / "how-to" / "tune.md"
        page.write_text(page.read_text() + "\nSee [the gone page](gone.md).\n")
    elif fault == "a page left out of the navigation":
        (project / "docs" / "how-to" / "orphan.md").write_text("# Orphan\n\nNobody links here.\n")
    else:
        page = project / "docs" / "reference" / "api.md"
        page.write_text(page.read_text() + "\n::: pgvkit.server.db.no_such_function\n")
    done = build(project, tmp_path / "site")
    assert done.returncode != 0, f"{fault} built without complaint"
    assert said in done.stderr, done.stderr[-3000:]


def test_every_notebook_is_a_tutorial_page_read_from_notebooks_itself():
    tutorials = ROOT / "docs" / "tutorials"
    notebooks = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks, "no notebooks found"
    for name in notebooks:
        page = tutorials / name
        assert page.is_symlink(), f"docs/tutorials/{name} should be a link to notebooks/{name}, not a copy"
        assert page.resolve() == (ROOT / "notebooks" / name).resolve()
    nav = (ROOT / "mkdocs.yml").read_text()
    assert [n for n in notebooks if f"tutorials/{n}" not in nav] == []


def _help_options(args: list[str]) -> tuple[set[str], set[str]]:
    """The options `pgvkit ARGS --help` prints, and the choices in its usage line (commands, actions)."""
    text = subprocess.run([sys.executable, "-m", "pgvkit", *args, "--help"], capture_output=True, text=True,
                          check=True).stdout
    options = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", text)) - {"--help"}
    usage = text.split("\n\n")[0]
    choices = re.search(r"\{([a-z,-]+)\}", usage)
    return options, set(choices.group(1).split(",")) if choices else set()


def test_the_cli_reference_lists_every_command_and_option_of_pgvkit_help(site):
    page = html.unescape(re.sub(r"<[^>]+>", " ", (site / "reference" / "cli" / "index.html").read_text()))
    top, _ = _help_options([])
    help_text = subprocess.run([sys.executable, "-m", "pgvkit", "--help"], capture_output=True, text=True).stdout
    commands = set(re.findall(r"^    ([a-z]+)\s", help_text, re.M))  # the COMMAND list of pgvkit --help
    assert len(commands) > 20, help_text
    missing = [o for o in top if o not in page]
    for command in sorted(commands):
        if f"pgvkit {command}" not in page:
            missing.append(f"pgvkit {command}")
            continue
        options, subcommands = _help_options([command])
        missing += [f"pgvkit {command} {o}" for o in sorted(options) if o not in page]
        # a command's actions (db start|stop|..., model add|backfill|...) are choices of a positional
        missing += [f"pgvkit {command} {choice}" for choice in sorted(subcommands) if choice not in page]
    assert missing == []


def test_the_readme_is_a_front_door():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= README_LINES
    for command in ('.venv/bin/pip install -q -e ".[lab,test]" && .venv/bin/pytest --nbval',
                    ".venv/bin/pgvkit migrate"):
        assert command in readme
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert links, "the README's map points into docs/"
    assert [link for link in links if not (ROOT / link).exists()] == []


@pytest.fixture
def served(site):
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)")
def test_a_browser_renders_the_home_page_a_notebook_with_its_figure_and_the_cli_reference(served, tmp_path):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True,
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                                          "--disable-component-update", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            page.goto(f"{served}/")
            assert page.locator("h1").first.inner_text().rstrip("¶") == "pgvkit"  # and its permalink
            page.get_by_role("link", name="Tune the index").first.click()  # the navigation works
            page.wait_for_url(re.compile(r"/tutorials/04_index_tuning/"))
            figures = page.locator(".jp-OutputArea-output img")
            figures.first.wait_for(timeout=30_000)
            assert figures.count() >= 1
            assert page.evaluate("() => [...document.querySelectorAll('.jp-OutputArea-output img')]"
                                 ".every(img => img.complete && img.naturalWidth > 300)")
            page.screenshot(path=str(ARTIFACTS / "docs-04_index_tuning.png"), full_page=False)
            page.goto(f"{served}/reference/cli/")
            assert page.locator("h2", has_text="pgvkit migrate").count() == 1
            assert page.locator("h2", has_text="pgvkit confirm").count() == 1
            assert page.locator("td code", has_text="--write-migration").count() >= 2
        finally:
            page.screenshot(path=str(ARTIFACTS / "docs-last-page.png"), full_page=False)
            browser.close()


def layout_paths(text: str) -> set[str]:
    """The paths the layout page's trees list, relative to src/pgvkit (a package as `name/`)."""
    found = set()
    for block in re.findall(r"```\n(src/pgvkit/\n.*?)```", text, re.S):
        stack = []  # (indent, directory)
        for line in block.splitlines()[1:]:
            indent, name = len(line) - len(line.lstrip()), line.split()[0]
            stack = [(i, d) for i, d in stack if i < indent]
            path = "".join(d for _, d in stack) + name
            found.add(path)
            if name.endswith("/"):
                stack.append((indent, name))
    return found


def test_the_layout_page_names_every_module_in_its_package():
    package = ROOT / "src" / "pgvkit"
    modules = {str(p.relative_to(package)).replace("__init__.py", "") if p.parent != package else p.name
               for p in package.rglob("*.py")}
    listed = layout_paths((ROOT / "docs" / "reference" / "layout.md").read_text())
    assert "server/db.py" in listed and "tuning/" in listed  # the page is read as trees
    assert sorted(modules - listed - {p + "__init__.py" for p in listed}) == []
    assert sorted(p for p in listed if not (package / p).exists()) == []