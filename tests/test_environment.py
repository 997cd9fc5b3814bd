"""environment.yml stays a thin shell around pyproject.toml: one source of truth."""

import tomllib

import yaml

from .conftest import ROOT


def test_environment_yml_installs_this_package_with_extras_that_exist():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    conda = [d for d in env["dependencies"] if isinstance(d, str)]
    [pip] = [d["pip"] for d in env["dependencies"] if isinstance(d, dict)]
    assert [c.split(">")[0].split("=")[0] for c in conda] == ["python", "pip"]  # nothing pinned twice
    assert project["requires-python"].lstrip(">=") in conda[0]
    [line] = pip
    assert line.startswith("-e .[") and line.endswith("]")
    extras = set(line[len("-e .["):-1].split(","))
    assert extras == set(project["optional-dependencies"])  # every extra, and only real ones
