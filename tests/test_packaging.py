"""The installed package: the prebuilt lab extension and the server extension are enabled."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

BIN = pathlib.Path(sys.executable).parent


def _jupyter(*args: str) -> str:
    exe = BIN / "jupyter"
    if not exe.exists():
        pytest.skip("jupyter is not installed in this environment")
    out = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120)
    return out.stdout + out.stderr


def test_lab_extension_is_installed_and_enabled():
    listing = _jupyter("labextension", "list")
    line = next((ln for ln in listing.splitlines() if "torchmagic-lab" in ln), "")
    assert "enabled" in line and "OK" in line, listing


def test_server_extension_is_enabled():
    listing = _jupyter("server", "extension", "list")
    assert any("torchmagic" in ln and "enabled" in ln for ln in listing.splitlines()), listing


def test_versions_of_python_and_lab_extension_match():
    import json

    import torchmagic

    package = json.loads((pathlib.Path(__file__).resolve().parents[1] / "labextension" / "package.json").read_text())
    assert package["version"] == torchmagic.__version__
