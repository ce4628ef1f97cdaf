"""Packaging metadata that setuptools accepts without deprecation warnings."""

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from tests.unit.factories import ROOT


def test_license_is_an_spdx_expression_with_its_file() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"  # a table is deprecated (PEP 639)
    for name in project["project"]["license-files"]:
        assert "Apache License" in (ROOT / name).read_text()
    assert "setuptools>=77" in project["build-system"]["requires"][0]


def test_the_wheel_carries_the_marketers_page_and_its_charting_library(tmp_path: Path) -> None:
    """The worker serves them from the installed package: no CDN, no checkout needed."""
    root = ROOT
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp_path),
            str(root),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("segstream-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in ("marketing.html", "marketing.js", "chart.umd.min.js", "chart.js-LICENSE.md"):
        assert f"segstream/runtime/static/{name}" in names
