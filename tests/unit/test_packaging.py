"""Packaging metadata that setuptools accepts without deprecation warnings."""

import tomllib

from tests.unit.factories import ROOT


def test_license_is_an_spdx_expression_with_its_file() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["license"] == "Apache-2.0"  # a table is deprecated (PEP 639)
    for name in project["project"]["license-files"]:
        assert "Apache License" in (ROOT / name).read_text()
    assert "setuptools>=77" in project["build-system"]["requires"][0]
