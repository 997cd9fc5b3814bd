"""pgvkit lab: JupyterLab against the kit's database, stopped cleanly by Ctrl-C; and a real
browser (Debian's headless Chromium driven by Playwright) running 00_start_here in it."""

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import ROOT, free_port, sigint_as_in_a_terminal

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"


def get(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())
    except OSError:
        return None


@pytest.fixture
def lab(migrated, pgvkit_home, tmp_path):
    """A running `pgvkit lab` on a free loopback port, serving a copy of the notebooks (so the
    lab's autosave can never touch the committed ones); yields (base URL, token, process)."""
    port, token = free_port(), secrets.token_hex(16)
    copy = tmp_path / "checkout"
    shutil.copytree(ROOT / "notebooks", copy / "notebooks", ignore=shutil.ignore_patterns(".*"))
    shutil.copytree(ROOT / "migrations", copy / "migrations")
    env = {**os.environ, "DATABASE_URL": migrated, "PGVKIT_HOME": str(pgvkit_home)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pgvkit", "lab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.token={token}", f"--ServerApp.root_dir={copy / 'notebooks'}"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        preexec_fn=sigint_as_in_a_terminal)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while get(f"{base}/api/status?token={token}") is None:  # poll until it answers (or gave up)
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, "JupyterLab did not answer within 90 s"
        time.sleep(0.2)
    yield base, token, proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def test_lab_serves_the_notebooks_and_ctrl_c_stops_it_cleanly(lab, tmp_path):
    base, token, proc = lab
    listing = get(f"{base}/api/contents?token={token}")
    names = {item["name"] for item in listing["content"]}
    assert {"00_start_here.ipynb", "02_verify.ipynb", "06_rollback.ipynb"} <= names
    assert get(f"{base}/api/contents/00_start_here.ipynb?token={token}&content=0")["path"] == "00_start_here.ipynb"
    proc.send_signal(signal.SIGINT)  # what Ctrl-C in the terminal sends
    assert proc.wait(timeout=60) == 0
    assert "JupyterLab stopped" in proc.stdout.read()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium (.ci/run installs it)")
def test_a_browser_runs_the_start_notebook_with_outputs_and_no_errors(lab, tmp_path):
    from playwright.sync_api import sync_playwright

    base, token, _ = lab
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(  # a fresh user data dir
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, viewport={"width": 1400, "height": 1000},
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run"])
        page = browser.new_page()
        shot = str(ARTIFACTS / "lab-00_start_here.png")
        try:
            page.goto(f"{base}/lab/tree/00_start_here.ipynb?token={token}")
            page.wait_for_selector(".jp-NotebookPanel .jp-Cell", timeout=90_000)
            page.locator("#jp-main-statusbar", has_text="Idle").wait_for(timeout=90_000)  # the kernel is up
            page.click("text=Run", timeout=30_000)
            page.click("text=Run All Cells", timeout=30_000)
            page.locator(".jp-OutputArea-output", has_text="pgvector:").first.wait_for(timeout=90_000)
            page.locator(".jp-OutputArea-output", has_text="init_vector_store").first.wait_for(timeout=90_000)
        finally:
            page.screenshot(path=shot, full_page=True)  # the test artifact, also when it failed
        errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count()
        text = page.locator(".jp-NotebookPanel").inner_text()
        browser.close()
    assert "init_vector_store" in text and "applied" in text  # status() output of the migrated database
    assert errors == 0 and "Traceback" not in text
