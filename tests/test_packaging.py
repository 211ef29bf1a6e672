"""Packaging facts that once drifted from the code, each checked against what it must match."""

from __future__ import annotations

import json
import re
from pathlib import Path


from sgp_infra.plan.api import CATALOG_KEY, CATALOG_MOUNT

ROOT = Path(__file__).resolve().parent.parent


def test_dockerfile_default_command_reads_the_published_catalogue() -> None:
    [cmd] = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")]
    args = json.loads(cmd.removeprefix("CMD "))
    assert args[args.index("--config-file") + 1] == f"{CATALOG_MOUNT}/{CATALOG_KEY}"


def test_docs_and_bench_scripts_name_the_virtualenv_the_makefile_makes() -> None:
    assert re.search(r"^VENV \?= venv$", (ROOT / "Makefile").read_text(), re.M)
    for path in [ROOT / "README.md", *ROOT.glob("docs/*.md"), *ROOT.glob("bench/*.py")]:
        assert ".venv/bin" not in path.read_text(), path


def test_make_bench_runs_every_benchmark_script() -> None:
    """Every ``bench/bench_*.py``; other modules there are servers a benchmark starts (``bare_proxy.py``)."""
    rule = (ROOT / "Makefile").read_text().split("\nbench:", 1)[1].split("\n\n", 1)[0]
    scripts = sorted(p.name for p in ROOT.glob("bench/bench_*.py"))
    assert scripts and all(f"bench/{name}" in rule for name in scripts), rule


def test_license_is_an_spdx_expression() -> None:
    """A license table makes setuptools (>= 77) print a deprecation banner on every install."""
    try:
        import tomllib
    except ImportError:  # Python 3.10: tomli, which pytest itself depends on there, is the same parser
        import tomli as tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"
    assert project["build-system"]["requires"] == ["setuptools>=77"]
