"""Shared fixtures: the `whetstone` binary and an isolated data directory per test."""
import json
import os
import subprocess
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def whetstone_bin() -> str:
    path = os.environ.get("WHETSTONE_BIN")
    if not path or not Path(path).exists():
        pytest.fail("WHETSTONE_BIN must point at the built `whetstone` binary (./dev test sets it)")
    return path


@pytest.fixture(scope="session")
def demo_model() -> Path:
    path = os.environ.get("WHETSTONE_DEMO_MODEL")
    if not path or not Path(path).exists():
        pytest.fail("WHETSTONE_DEMO_MODEL must point at the demo GGUF (./dev setup places it)")
    return Path(path)


@pytest.fixture
def home(tmp_path) -> Path:
    return tmp_path / "whetstone-home"


@pytest.fixture
def run(whetstone_bin, home):
    """Run the CLI with WHETSTONE_HOME set to the test's own data directory."""

    def _run(*args, check=True, timeout=300):
        env = dict(os.environ, WHETSTONE_HOME=str(home))
        p = subprocess.run([whetstone_bin, *args], env=env, capture_output=True, text=True, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError(f"whetstone {' '.join(args)} exited {p.returncode}\nstderr: {p.stderr}")
        return p

    return _run


@pytest.fixture
def run_json(run):
    def _run_json(*args):
        return json.loads(run(*args, "--json").stdout)

    return _run_json
